"""SavedModel export for TensorFlow Serving, and TFLite conversion.

The exported `tf.Module` owns copies of the model's weights (optionally stored in bfloat16/float16)
as plain `tf.Variable`s and runs the Keras model on them through `keras.StatelessScope`: a SavedModel
that tracks the Keras model itself loads in Python but not in the C++ loader (TF Serving,
`saved_model_cli run`). Both signatures run `deeplab_tf.evaluation.inference.predict`, the code
evaluation and visualisation use, with the model's output stride and the scales, flip and window
size fixed at export time.

Signatures:
    serving_default: image_bytes string [B] (JPEG, PNG, GIF, BMP or WebP, each of any size; upright by an
        EXIF orientation) ->
        labels int32 [B, max H, max W] (padded with -1 right and below smaller images),
        heights, widths int32 [B] (each image's size),
        optionally probabilities float32 [B, max H, max W, C] (padded with 0).
    predict_images: images float32 [B, H, W, 3] RGB in 0..255 ->
        labels int32 [B, H, W], optionally probabilities float32 [B, H, W, C].

The settings (output stride, scales, flip, class names, ...) are recorded in the SavedModel as the
JSON string variable `settings_json` and in `assets.extra/deeplab_export.json`.
"""

import contextlib
import json
import os
import time

import keras
import tensorflow as tf
from tensorflow.lite.python.convert_phase import ConverterError  # not exported as tf.lite.ConverterError

from deeplab_tf.data import image_io
from deeplab_tf.data.tfrecord import decode_image
from deeplab_tf.evaluation.inference import predict

SERVING_SIGNATURE = "serving_default"
FLOAT_SIGNATURE = "predict_images"
SETTINGS_FILE = os.path.join("assets.extra", "deeplab_export.json")
WEIGHTS_DTYPES = ("float32", "bfloat16", "float16")
# Cityscapes' full 2048x1024 frames fit twice; larger requests are refused before decoding.
DEFAULT_MAX_IMAGE_PIXELS = 2048 * 2048
# Label value of the padding around images smaller than the batch's largest one.
LABEL_PADDING = -1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FORMATS = "JPEG, PNG, GIF, BMP or WebP"  # What tf.io.decode_image reads.


def _stored_weights(model, dtype):
    """Copies of the model's variables, the float32 ones in `dtype` (a folded bfloat16 model's
    bfloat16 weights stay bfloat16: widening them would store nothing more)."""
    def stored(variable):
        value = variable.value
        if value.dtype == tf.float32:
            value = tf.cast(value, dtype)
        return tf.Variable(value, trainable=False, name=variable.path.replace("/", "_"))

    return [stored(variable) for variable in model.variables]


@contextlib.contextmanager
def _running_on(model, weights):
    """Within the block, `model` computes with `weights` (cast back to its variables' dtypes)."""
    mapping = [(variable, tf.cast(weight, variable.dtype)) for variable, weight in zip(model.variables, weights)]
    with keras.StatelessScope(state_mapping=mapping):
        yield


def _check_batch_size(batch_size):
    return tf.debugging.assert_greater(batch_size, 0, message="Empty batch: send at least one image.")


def _refuse_unless(condition, message, index=None):
    """InvalidArgument with `message` unless `condition`; with an `index`, the message names that
    element of the batch ("image <index> of the batch: ..."), built in the graph."""
    if index is None:
        return tf.debugging.Assert(condition, [message])
    return tf.debugging.Assert(condition, [tf.strings.join([tf.strings.format("image {} of the batch: ", index),
                                                            message])])


def _check_pixels(height, width, max_pixels, index=None):
    """InvalidArgument unless height * width <= max_pixels (int64: PNG headers allow 2^31 per side)."""
    pixels = tf.cast(height, tf.int64) * tf.cast(width, tf.int64)
    too_large = (f"too large: more than max_image_pixels={max_pixels} pixels (set at export); downscale it "
                 f"before sending.")
    return _refuse_unless(pixels <= max_pixels, too_large if index is not None else "Image " + too_large, index)


def _or_fallback(fn, value, fallback):
    """fn(value), or `fallback` when fn raises: a one-element tf.data pipeline drops the failed element,
    so a corrupt image can be reported with its batch index instead of the decoder's bare error."""
    return (tf.data.Dataset.from_tensors(value).map(fn).ignore_errors()
            .concatenate(tf.data.Dataset.from_tensors(fallback)).take(1).get_single_element())


def _starts_with(image_bytes, prefix, position=0):
    """Whether `prefix` is at byte `position` (a shorter string is padded with zero bytes, after cutting)."""
    end = position + len(prefix)
    head = tf.strings.join([tf.strings.substr(image_bytes, 0, end), b"\0" * end])
    return tf.equal(tf.strings.substr(head, position, len(prefix)), prefix)


def _is_png(image_bytes):
    return _starts_with(image_bytes, _PNG_SIGNATURE)


def _is_webp(image_bytes):
    return tf.logical_and(_starts_with(image_bytes, b"RIFF"), _starts_with(image_bytes, b"WEBP", 8))


def _is_image_format(image_bytes):
    """Whether the bytes start with the signature of a format `tf.io.decode_image` reads."""
    return tf.reduce_any(tf.stack([tf.io.is_jpeg(image_bytes), _is_png(image_bytes),
                                   _starts_with(image_bytes, b"GIF8"), _starts_with(image_bytes, b"BM"),
                                   _is_webp(image_bytes)]))


def _jpeg_shape(image_bytes):
    """[height, width, components] from a JPEG's header; zeros for other formats and unreadable headers.
    (Only JPEGs reach libjpeg, which would log "Not a JPEG file" for every other image served.)"""
    return tf.cond(tf.io.is_jpeg(image_bytes),
                   lambda: _or_fallback(tf.image.extract_jpeg_shape, image_bytes, tf.zeros([3], tf.int32)),
                   lambda: tf.zeros([3], tf.int32))


def _header_size(image_bytes, jpeg_shape):
    """(height, width) from a PNG header or a JPEG's `_jpeg_shape`, without decoding; (0, 0) for other
    formats and for headers that cannot be read (decoding then fails and says so)."""
    def png_size():
        # IHDR: big-endian width and height at bytes 16..23.
        return _unsigned(image_bytes, 20, 4), _unsigned(image_bytes, 16, 4)

    return tf.case([(_is_png(image_bytes), png_size),
                    (tf.io.is_jpeg(image_bytes), lambda: (tf.cast(jpeg_shape[0], tf.int64),
                                                          tf.cast(jpeg_shape[1], tf.int64)))],
                   default=lambda: (tf.constant(0, tf.int64), tf.constant(0, tf.int64)))


def _unsigned(image_bytes, offsets, length, little_endian=False):
    """The `length`-byte unsigned integers (int64) at byte `offsets` (a scalar or a vector) of a string; bytes
    past its end count as 0."""
    offsets = tf.clip_by_value(tf.cast(offsets, tf.int64), 0, tf.cast(tf.strings.length(image_bytes), tf.int64))
    pieces = tf.strings.substr(image_bytes, offsets, tf.fill(tf.shape(offsets), tf.cast(length, tf.int64)))
    # Padded after cutting: an image's bytes are not copied whole.
    raw = tf.io.decode_raw(tf.strings.substr(tf.strings.join([pieces, b"\0" * length]), 0, length), tf.uint8)
    shifts = 8 * tf.range(length, dtype=tf.int64)
    shifts = tf.where(little_endian, shifts, shifts[::-1])  # `little_endian` may be a tensor (an EXIF block's order)
    return tf.reduce_sum(tf.bitwise.left_shift(tf.cast(raw, tf.int64), shifts), axis=-1)


# Where a JPEG's EXIF block is looked for: it follows the start marker (and a JFIF header, if any), and an
# APP1 segment holds at most 64 KiB. Up to this many entries of its first directory are read.
_EXIF_SEARCH_BYTES = 65536
_EXIF_MAX_ENTRIES = 64
_EXIF_ORIENTATION = 0x0112


def _jpeg_exif_offset(image_bytes):
    """Where the TIFF header of a JPEG's EXIF block (APP1, "Exif" and two zero bytes) starts; -1 if none."""
    size = _EXIF_SEARCH_BYTES
    data = tf.io.decode_raw(tf.strings.join([tf.strings.substr(image_bytes, 0, size), b"\0" * size]), tf.uint8)
    data = data[:size]
    # The APP1 marker, 2 bytes of length, then "Exif\0\0" and the TIFF header.
    pattern = {0: 0xFF, 1: 0xE1, **{4 + i: byte for i, byte in enumerate(b"Exif\0\0")}}
    last = size - 10
    found = tf.reduce_all(tf.stack([tf.equal(data[k:last + k], byte) for k, byte in pattern.items()]), axis=0)
    return tf.where(tf.reduce_any(found), tf.argmax(tf.cast(found, tf.int32), output_type=tf.int64) + 10,
                    tf.constant(-1, tf.int64))


def _chunk_data_offset(image_bytes, chunk_type, *, png):
    """Where the data of the first `chunk_type` chunk of a PNG (`png`) or WebP (RIFF) file starts; -1 if none.

    PNG chunks are [length, big-endian][type][data][CRC]; RIFF chunks [type][length, little-endian][data],
    padded to an even length. Every chunk is walked (Pillow also reads an eXIf chunk after the pixels).
    """
    size = tf.cast(tf.strings.length(image_bytes), tf.int64)

    def next_chunk(offset, found):
        type_at, length_at = (offset + 4, offset) if png else (offset, offset + 4)
        length = _unsigned(image_bytes, length_at, 4, little_endian=not png)
        is_type = tf.equal(tf.strings.substr(image_bytes, tf.minimum(type_at, size), 4), chunk_type)
        following = offset + 8 + length + (4 if png else length % 2)
        return following, tf.where(is_type, offset + 8, found)

    start = tf.constant(len(_PNG_SIGNATURE) if png else 12, tf.int64)  # RIFF: "RIFF", length, "WEBP"
    _, found = tf.while_loop(lambda offset, found: tf.logical_and(found < 0, offset + 8 <= size), next_chunk,
                             (start, tf.constant(-1, tf.int64)))
    return found


def _exif_orientation(image_bytes):
    """The EXIF orientation tag (1-8) of a JPEG, PNG or WebP: 1 (upright) when it is absent or unreadable.

    Phones store the sensor's pixels and this tag; viewers, PIL's `ImageOps.exif_transpose` (the converters,
    deeplab-vis, `segment`) and OpenCV's decoder turn the picture upright, TensorFlow's decoders do not.
    """
    tiff = tf.case([(tf.io.is_jpeg(image_bytes), lambda: _jpeg_exif_offset(image_bytes)),
                    (_is_png(image_bytes), lambda: _chunk_data_offset(image_bytes, b"eXIf", png=True)),
                    (_is_webp(image_bytes), lambda: _chunk_data_offset(image_bytes, b"EXIF", png=False))],
                   default=lambda: tf.constant(-1, tf.int64))
    cut_short = tiff > tf.cast(tf.strings.length(image_bytes), tf.int64)  # the block's name at the file's very end
    tiff = tf.where(cut_short, tf.constant(-1, tf.int64), tiff)
    # Some PNG and WebP writers keep JPEG's "Exif\0\0" before the TIFF header; Pillow reads either.
    prefixed = tf.equal(tf.strings.substr(image_bytes, tf.maximum(tiff, 0), 6), b"Exif\0\0")
    tiff = tf.where(tf.logical_and(tiff >= 0, prefixed), tiff + 6, tiff)
    block = tf.strings.substr(image_bytes, tf.maximum(tiff, 0), _EXIF_SEARCH_BYTES)
    big_endian, little_endian = (_starts_with(block, order) for order in (b"MM", b"II"))

    def unsigned(offset, length):
        return _unsigned(block, offset, length, little_endian=little_endian)

    directory = unsigned(4, 4)
    # Each 12-byte entry: tag, type, count, value; a SHORT value fills the value field's first two bytes.
    entries = directory + 2 + 12 * tf.range(_EXIF_MAX_ENTRIES, dtype=tf.int64)
    is_orientation = tf.logical_and(tf.range(_EXIF_MAX_ENTRIES, dtype=tf.int64) < unsigned(directory, 2),
                                    tf.equal(unsigned(entries, 2), _EXIF_ORIENTATION))
    orientation = unsigned(entries[tf.argmax(tf.cast(is_orientation, tf.int32))] + 8, 2)
    readable = tf.reduce_all(tf.stack([tiff >= 0, tf.logical_or(big_endian, little_endian),
                                       tf.reduce_any(is_orientation), orientation >= 1, orientation <= 8]))
    return tf.where(readable, tf.cast(orientation, tf.int32), 1)


def _upright(image, orientation):
    """`image` turned as its EXIF `orientation` says a viewer shows it (as `ImageOps.exif_transpose`)."""
    def transpose():
        return tf.transpose(image, [1, 0, 2])

    return tf.switch_case(orientation - 1, [
        lambda: image,
        lambda: tf.reverse(image, [1]),                      # 2: mirrored left-right
        lambda: tf.reverse(image, [0, 1]),                   # 3: turned 180 degrees
        lambda: tf.reverse(image, [0]),                      # 4: mirrored top-bottom
        transpose,                                           # 5: mirrored along the main diagonal
        lambda: tf.reverse(transpose(), [1]),                # 6: stored turned 90 degrees left
        lambda: tf.reverse(transpose(), [0, 1]),             # 7: mirrored along the other diagonal
        lambda: tf.reverse(transpose(), [0]),                # 8: stored turned 90 degrees right
    ])


def _grey16_png(data):
    """A 16-bit greyscale PNG scaled to 8 bits as the converters scale it (TensorFlow's 8-bit decode keeps
    the high byte, one grey level off for some values)."""
    grey = image_io.scale_16_to_8_bits(tf.cast(tf.io.decode_png(data, channels=1, dtype=tf.uint16), tf.int32))
    return tf.tile(tf.cast(grey, tf.uint8), [1, 1, 3])


def _decode_image(image_bytes, max_image_pixels, index):
    """Encoded image -> float32 [H, W, 3] RGB in 0..255, upright by its EXIF orientation.

    Raises InvalidArgument naming element `index` of the batch when the bytes are empty, not an image,
    corrupt or too large. JPEG and PNG sizes are checked from their headers, so a small file that would
    decode to gigabytes is refused without allocating them; other formats are checked after decoding.
    """
    # Each check runs after the one before, so that the message says the first thing wrong.
    with tf.control_dependencies([_refuse_unless(tf.strings.length(image_bytes) > 0, "empty (0 bytes).", index)]):
        check = _refuse_unless(_is_image_format(image_bytes), f"not a {_FORMATS} file.", index)
    with tf.control_dependencies([check]):
        jpeg_shape = _jpeg_shape(image_bytes)
        check = _check_pixels(*_header_size(image_bytes, jpeg_shape), max_image_pixels, index)
    orientation = _exif_orientation(image_bytes)
    # The pixels deeplab-vis and the records hold. The converters decode with Pillow and store re-encoded as
    # PNG: JPEGs to be turned upright and CMYK JPEGs (Pillow decodes JPEGs with libjpeg's accurate IDCT),
    # 16-bit greyscale PNGs (scaled, not cut to their high byte) and WebP. Other files keep their bytes,
    # which the records decode with TensorFlow's default (faster) IDCT.
    jpeg_as_pillow = tf.logical_and(tf.io.is_jpeg(image_bytes), tf.logical_or(orientation > 1, jpeg_shape[2] == 4))
    # IHDR's bit depth and colour type (0: greyscale).
    grey16 = tf.logical_and(_is_png(image_bytes), _starts_with(image_bytes, b"\x10\x00", 24))

    def decode(data):
        return tf.case([(jpeg_as_pillow, lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")),
                        (grey16, lambda: _grey16_png(data)),
                        # WebP decodes only to its own channels (RGB or RGBA).
                        (_is_webp(data), lambda: tf.ensure_shape(
                            tf.io.decode_image(data, expand_animations=False)[..., :3], [None, None, 3]))],
                       default=lambda: decode_image(data))

    with tf.control_dependencies([check]):
        image = _or_fallback(decode, image_bytes, tf.zeros([0, 0, 3], tf.uint8))
    image = _upright(image, orientation)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    checks = [_refuse_unless(height * width > 0, "corrupt or truncated: it cannot be decoded.", index),
              _check_pixels(height, width, max_image_pixels, index)]
    with tf.control_dependencies(checks):
        return tf.cast(image, tf.float32)


def _serving_module(model, settings):
    """A `tf.Module` with the two signature functions, owning the weights in the settings' dtype."""
    module = tf.Module(name="deeplab_export")
    module.weights = _stored_weights(model, settings["weights_dtype"])
    module.settings_json = tf.Variable(json.dumps(settings), trainable=False, name="settings_json")
    max_pixels = settings["max_image_pixels"]
    with_probabilities = settings["include_probabilities"]
    options = dict(scales=tuple(settings["scales"]), flip=settings["flip"], window_size=settings["window_size"])

    # One function that every scale, flip and signature calls: the SavedModel then holds one copy of
    # the network's graph instead of one per pass, which makes saving several times faster.
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], autograph=False)
    def logits(images):
        with _running_on(model, module.weights):
            return model(images, training=False)

    def network(images, training):
        """`logits` with the call signature `predict` expects of a model (always inference)."""
        del training
        return logits(images)

    def outputs(images):
        """{"labels"[, "probabilities"]} of `predict`; labels are then the argmax of the probabilities."""
        if not with_probabilities:
            return {"labels": predict(network, images, **options)}
        probabilities = predict(network, images, output="probabilities", **options)
        return {"labels": tf.argmax(probabilities, axis=-1, output_type=tf.int32), "probabilities": probabilities}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")], autograph=False)
    def predict_images(images):
        shape = tf.shape(images)
        with tf.control_dependencies([_check_batch_size(shape[0]), _check_pixels(shape[1], shape[2], max_pixels)]):
            return outputs(images)

    def predict_one(index_and_bytes):
        image = _decode_image(index_and_bytes[1], max_pixels, index_and_bytes[0])
        ragged = {key: tf.RaggedTensor.from_tensor(value[0], ragged_rank=1)
                  for key, value in outputs(image[tf.newaxis]).items()}
        return {**ragged, "heights": tf.shape(image)[0], "widths": tf.shape(image)[1]}

    output_signature = {"labels": tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1),
                        "heights": tf.int32, "widths": tf.int32}
    if with_probabilities:
        output_signature["probabilities"] = tf.RaggedTensorSpec(
            [None, None, model.num_classes], tf.float32, ragged_rank=1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False)
    def serving_default(image_bytes):
        with tf.control_dependencies([_check_batch_size(tf.size(image_bytes))]):
            image_bytes = tf.identity(image_bytes)
        # One image at a time: sizes differ, and it bounds the memory to one image's activations.
        # The index goes along so that a bad image's error names its place in the batch.
        results = tf.map_fn(predict_one, (tf.range(tf.size(image_bytes)), image_bytes), parallel_iterations=1,
                            fn_output_signature=output_signature)
        results["labels"] = results["labels"].to_tensor(default_value=LABEL_PADDING)
        if with_probabilities:
            results["probabilities"] = results["probabilities"].to_tensor(default_value=0.0)
        return results

    module.predict_images = predict_images
    module.serving_default = serving_default
    return module


def export_saved_model(model, export_dir, *, scales=(1.0,), flip=False, window_size=None,
                       include_probabilities=False, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                       weights_dtype="float32", class_names=None, checkpoint=None):
    """Writes `model` as a SavedModel with the `serving_default` and `predict_images` signatures.

    Args:
        model: a DeepLabV3, built at the output stride to serve at (`deeplab_tf.workdir.load_model(
            path, output_stride=8)` rebuilds a model trained at 16) and in the precision to compute in
            (`precision="mixed_bfloat16"` there: bfloat16 convolutions, about 2x faster on CPUs with AMX).
        export_dir: the SavedModel directory (for TF Serving `<base>/<version>`: see `export_version`).
        scales, flip, window_size: multi-scale, left-right flip and sliding-window inference, as in
            `deeplab_tf.evaluation.inference.predict`.
        include_probabilities: also output the per-class probabilities.
        max_image_pixels: larger images are refused with InvalidArgument (the server's memory bound).
        weights_dtype: "float32", or "bfloat16"/"float16" to store the float32 weights at half the
            size (they are cast back to float32 when the graph runs).
        class_names: names of the classes, recorded with the settings (default class_<i>).
        checkpoint: the checkpoint the weights came from, recorded with the settings.

    Returns:
        The recorded settings (a dict).
    """
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {weights_dtype!r}.")
    class_names = list(class_names or (f"class_{i}" for i in range(model.num_classes)))
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names given for a model with {model.num_classes} classes.")
    settings = {
        "output_stride": model.output_stride,
        "scales": [float(scale) for scale in scales],
        "flip": bool(flip),
        "window_size": list(window_size) if window_size else None,
        "include_probabilities": bool(include_probabilities),
        "max_image_pixels": int(max_image_pixels),
        "label_padding": LABEL_PADDING,
        "weights_dtype": weights_dtype,
        "compute_dtype": model.compute_dtype,
        "num_classes": model.num_classes,
        "class_names": class_names,
        "checkpoint": checkpoint,
        "model_config": model.get_config(),
    }
    module = _serving_module(model, settings)
    # Inference only: skip tracing the atrous convolution's custom gradient (seconds per export).
    signatures = {SERVING_SIGNATURE: module.serving_default, FLOAT_SIGNATURE: module.predict_images}
    tf.saved_model.save(module, export_dir, signatures=signatures,
                        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
    settings_path = os.path.join(export_dir, SETTINGS_FILE)
    tf.io.gfile.makedirs(os.path.dirname(settings_path))
    with tf.io.gfile.GFile(settings_path, "w") as f:
        json.dump(settings, f, indent=2)
    return settings


def next_version(base_dir):
    """1 + the largest integer version directory under `base_dir` (1 if none)."""
    if not tf.io.gfile.isdir(base_dir):
        return 1
    versions = [int(name.rstrip("/")) for name in tf.io.gfile.listdir(base_dir) if name.rstrip("/").isdigit()]
    return max(versions, default=0) + 1


def export_version(model, base_dir, *, version=None, overwrite=False, **export_kwargs):
    """Exports to `<base_dir>/<version>/` (default: the next version), the layout TF Serving polls.

    The SavedModel is written under a temporary name that TF Serving ignores, then renamed, so a
    server polling `base_dir` never loads a half-written version.

    Args:
        model, export_kwargs: as for `export_saved_model`.
        base_dir: the model's base path (TF Serving's --model_base_path).
        version: a positive integer; default one more than the largest existing version.
        overwrite: replace an existing version instead of refusing to.

    Returns:
        (version directory, settings dict).
    """
    version = next_version(base_dir) if version is None else int(version)
    if version <= 0:
        raise ValueError(f"The version must be a positive integer (TF Serving's numbering), got {version}.")
    final_dir = os.path.join(base_dir, str(version))
    if tf.io.gfile.exists(final_dir) and not overwrite:
        raise FileExistsError(f"{final_dir} exists: choose another version (deeplab-export --version) or replace "
                              "it (--overwrite).")
    temp_dir = os.path.join(base_dir, f".tmp-{version}-{os.getpid()}-{time.time_ns()}")
    try:
        settings = export_saved_model(model, temp_dir, **export_kwargs)
        if tf.io.gfile.exists(final_dir):
            tf.io.gfile.rmtree(final_dir)
        tf.io.gfile.rename(temp_dir, final_dir)
    finally:
        if tf.io.gfile.exists(temp_dir):
            tf.io.gfile.rmtree(temp_dir)
    return final_dir, settings


def export_tflite(saved_model_dir, path, *, float16_weights=False):
    """Converts the `predict_images` signature of an exported SavedModel to a TFLite file.

    `serving_default` cannot be converted: TFLite has no image decoding or ragged-tensor ops. Image
    sizes stay dynamic (resize the interpreter's input to each image). The converter folds the casts
    of half-precision SavedModel weights, so the TFLite weights are float32 unless `float16_weights`
    (TFLite has no bfloat16 weights).

    Raises:
        ValueError: the SavedModel computes in bfloat16, which TFLite has no kernels for.
        RuntimeError: with the converter's message, when TFLite cannot convert the model.
    """
    settings_path = os.path.join(saved_model_dir, SETTINGS_FILE)
    if tf.io.gfile.exists(settings_path):
        with tf.io.gfile.GFile(settings_path) as f:
            compute_dtype = json.load(f).get("compute_dtype", "float32")
        if compute_dtype != "float32":
            raise ValueError(f"{saved_model_dir} computes in {compute_dtype}, which TFLite has no kernels for: "
                             f"convert an export made with the default precision (float32).")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[FLOAT_SIGNATURE])
    if float16_weights:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    try:
        flatbuffer = converter.convert()
    except ConverterError as error:
        raise RuntimeError(f"TFLite cannot convert {saved_model_dir} ({FLOAT_SIGNATURE}): {error}") from error
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(flatbuffer)
    return path


def disk_size(path):
    """Bytes of the file `path`, or of all files under the directory `path`."""
    if not tf.io.gfile.isdir(path):
        return tf.io.gfile.stat(path).length
    return sum(tf.io.gfile.stat(os.path.join(root, name)).length
               for root, _, names in tf.io.gfile.walk(path) for name in names)
