"""SavedModel export for TensorFlow Serving: the serving module, its signatures and numbered versions.

The exported `tf.Module` owns copies of the model's weights (optionally stored in bfloat16/float16)
as plain `tf.Variable`s and runs the Keras model on them through `keras.StatelessScope`: a SavedModel
that tracks the Keras model itself loads in Python but not in the C++ loader (TF Serving,
`saved_model_cli run`). Both signatures run `deeplab_tf.evaluation.inference.predict`, the code
evaluation and visualisation use, with the model's output stride and the scales, flip, window size
and eval canvas fixed at export time. With an eval canvas (`eval_crop_size`, the release's protocol)
each image is padded to it as deeplab-eval and deeplab-vis pad it, an image larger than the canvas
to deeplab-vis's grown canvas (`inference.canvas_for`), and the outputs are cropped back to the image.

Signatures:
    serving_default: image_bytes string [B] (JPEG, PNG, GIF, BMP or WebP, each of any size; upright by an
        EXIF orientation) ->
        labels int32 [B, max H, max W] (padded with -1 right and below smaller images),
        heights, widths int32 [B] (each image's size),
        optionally probabilities float32 [B, max H, max W, C] (padded with 0).
    predict_images: images float32 [B, H, W, 3] RGB in 0..255 ->
        labels int32 [B, H, W], optionally probabilities float32 [B, H, W, C].

The settings (output stride, scales, flip, eval canvas, class names, ...) are recorded in the SavedModel
as the JSON string variable `settings_json` and in `assets.extra/deeplab_export.json`.
"""

import contextlib
import json
import os
import shutil
import time

import keras
import tensorflow as tf

from deeplab_tf.constants import DEFAULT_MAX_IMAGE_PIXELS, WEIGHTS_DTYPES
from deeplab_tf.evaluation.evaluator import canvas_options
from deeplab_tf.evaluation.inference import predict
from deeplab_tf.export.decoding import check_pixels, decode_image_bytes

SERVING_SIGNATURE = "serving_default"
FLOAT_SIGNATURE = "predict_images"
SETTINGS_FILE = os.path.join("assets.extra", "deeplab_export.json")
# Label value of the padding around images smaller than the batch's largest one.
LABEL_PADDING = -1


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


def _serving_module(model, settings):
    """A `tf.Module` with the two signature functions, owning the weights in the settings' dtype."""
    module = tf.Module(name="deeplab_export")
    module.weights = _stored_weights(model, settings["weights_dtype"])
    module.settings_json = tf.Variable(json.dumps(settings), trainable=False, name="settings_json")
    max_pixels = settings["max_image_pixels"]
    with_probabilities = settings["include_probabilities"]
    options = dict(scales=tuple(settings["scales"]), flip=settings["flip"], window_size=settings["window_size"])
    eval_crop_size = settings["eval_crop_size"]

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
        # deeplab-vis's canvas: the images are padded with the model's pad value, the outputs cropped back.
        canvas = canvas_options(model, images, eval_crop_size, grow_canvas=True)
        if not with_probabilities:
            return {"labels": predict(network, images, **options, **canvas)}
        probabilities = predict(network, images, output="probabilities", **options, **canvas)
        return {"labels": tf.argmax(probabilities, axis=-1, output_type=tf.int32), "probabilities": probabilities}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")], autograph=False)
    def predict_images(images):
        shape = tf.shape(images)
        with tf.control_dependencies([_check_batch_size(shape[0]), check_pixels(shape[1], shape[2], max_pixels)]):
            return outputs(images)

    def predict_one(index_and_bytes):
        image = decode_image_bytes(index_and_bytes[1], max_pixels, index_and_bytes[0])
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


def export_saved_model(model, export_dir, *, scales=(1.0,), flip=False, window_size=None, eval_crop_size=None,
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
        eval_crop_size: (height, width) of the canvas every image is padded to, the evaluation protocol
            of the original release (`predict`'s `eval_crop_size`); an image larger than it gets
            `inference.canvas_for`'s grown canvas, as in deeplab-vis. None: each image at its own size.
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
    if eval_crop_size is not None and (len(eval_crop_size) != 2 or min(eval_crop_size) <= 0):
        raise ValueError(f"eval_crop_size must be (height, width) in pixels or None, got {eval_crop_size!r}.")
    settings = {
        "output_stride": model.output_stride,
        "scales": [float(scale) for scale in scales],
        "flip": bool(flip),
        "window_size": list(window_size) if window_size else None,
        "eval_crop_size": [int(side) for side in eval_crop_size] if eval_crop_size else None,  # None: own size
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


# A version is written as <base_dir>/.tmp-<version>-<pid>-<ns> (TF Serving ignores hidden folders), then renamed.
_TEMP_PREFIX = ".tmp-"


def _remove_killed_exports(base_dir):
    """Removes the temporary folders of exports whose process has ended (killed before its rename): they would
    stay forever, each a whole SavedModel. Only local folders, whose PIDs this host can check; a live PID (the
    export running, or its number reused) keeps its folder."""
    if "://" in base_dir or not os.path.isdir(base_dir):
        return
    for name in os.listdir(base_dir):
        fields = name[len(_TEMP_PREFIX):].split("-") if name.startswith(_TEMP_PREFIX) else []
        if len(fields) != 3 or not fields[1].isdigit():
            continue
        try:
            os.kill(int(fields[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base_dir, name), ignore_errors=True)
        except PermissionError:  # Alive, another user's.
            pass


def export_version(model, base_dir, *, version=None, overwrite=False, **export_kwargs):
    """Exports to `<base_dir>/<version>/` (default: the next version), the layout TF Serving polls.

    The SavedModel is written under a temporary name that TF Serving ignores, then renamed, so a
    server polling `base_dir` never loads a half-written version; the temporary folders of killed exports
    are removed first.

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
    _remove_killed_exports(base_dir)
    temp_dir = os.path.join(base_dir, f"{_TEMP_PREFIX}{version}-{os.getpid()}-{time.time_ns()}")
    try:
        settings = export_saved_model(model, temp_dir, **export_kwargs)
        if tf.io.gfile.exists(final_dir):
            tf.io.gfile.rmtree(final_dir)
        tf.io.gfile.rename(temp_dir, final_dir)
    finally:
        if tf.io.gfile.exists(temp_dir):
            tf.io.gfile.rmtree(temp_dir)
    return final_dir, settings


def disk_size(path):
    """Bytes of the file `path`, or of all files under the directory `path`."""
    if not tf.io.gfile.isdir(path):
        return tf.io.gfile.stat(path).length
    return sum(tf.io.gfile.stat(os.path.join(root, name)).length
               for root, _, names in tf.io.gfile.walk(path) for name in names)
