"""SavedModel export: the signatures as saved_model_cli and the session loader see them, a fresh
process's results against `predict`, refused requests, half-precision weights, TFLite and the CLI."""

import base64
import io
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from deeplab_tf import export, workdir
from deeplab_tf.evaluation.inference import predict
from deeplab_tf.export import decoding
from deeplab_tf.modeling import DeepLabV3
from deeplab_tf.modeling.folding import fold_batch_norm

NUM_CLASSES = 4
EXPORT_OPTIONS = dict(scales=(0.75, 1.0), flip=True, include_probabilities=True, max_image_pixels=80 * 80)
SUBPROCESS_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _pattern_image(height, width, seed):
    """A smooth RGB pattern with a disc: random-weight models give it several labels."""
    rows, columns = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    disc = (rows - rng.uniform(0, height)) ** 2 + (columns - rng.uniform(0, width)) ** 2 < height * width / 8
    return np.stack([columns * 255 // width, rows * 255 // height, 255 * disc], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """[(path, encoded bytes, decoded uint8 image)]: a 45x61 PNG and a 33x29 JPEG."""
    directory = tmp_path_factory.mktemp("images")
    files = []
    for name, image, encode in (("a.png", _pattern_image(45, 61, 0), tf.io.encode_png),
                                ("b.jpg", _pattern_image(33, 29, 1), tf.io.encode_jpeg)):
        data = encode(image).numpy()
        (directory / name).write_bytes(data)
        files.append((str(directory / name), data, tf.io.decode_image(data, channels=3).numpy()))
    return files


@pytest.fixture(scope="module")
def checkpoint_workdir(tmp_path_factory, image_files):
    """A workdir with an OS-16 checkpoint whose logits are standardised over the test images, so that
    the labels vary and the probabilities are neither uniform nor saturated (no exact ties)."""
    keras.utils.set_random_seed(0)
    model = DeepLabV3(num_classes=NUM_CLASSES, backbone="resnet_v1_50", output_stride=16)
    logits = np.concatenate([model(image[np.newaxis].astype(np.float32)).numpy().reshape(-1, NUM_CLASSES)
                             for _, _, image in image_files])
    logits_layer = model.get_layer("logits")
    kernel, bias = logits_layer.get_weights()
    scale = 5 / logits.std()
    logits_layer.set_weights([kernel * scale, (bias - logits.mean(axis=0)) * scale])
    path = str(tmp_path_factory.mktemp("workdir"))
    workdir.save_model_config(path, model)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), workdir.checkpoint_dir(path),
                               max_to_keep=3).save(checkpoint_number=5)
    return path


@pytest.fixture(scope="module")
def model(checkpoint_workdir):
    """The checkpoint rebuilt at output stride 8, as the paper evaluates."""
    return workdir.load_model(checkpoint_workdir, output_stride=8)[0]


@pytest.fixture(scope="module")
def exported(model, checkpoint_workdir, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("exports"))
    version_dir, _ = export.export_version(model, base, checkpoint=checkpoint_workdir, **EXPORT_OPTIONS)
    return version_dir


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported)


def _reference(model, image, **options):
    """In-process probabilities of `predict` on one decoded image."""
    options = {"scales": EXPORT_OPTIONS["scales"], "flip": EXPORT_OPTIONS["flip"], **options}
    return predict(model, image[np.newaxis], output="probabilities", **options).numpy()[0]


def _assert_labels_match(labels, probabilities, tie=1e-3, varied=True):
    """Labels equal the argmax of the reference probabilities wherever the top two are not tied (and, if
    `varied`, hold more than one class)."""
    assert labels.shape == probabilities.shape[:-1]
    top_two = np.sort(probabilities, axis=-1)[..., -2:]
    decided = top_two[..., 1] - top_two[..., 0] > tie
    assert decided.mean() > 0.95
    np.testing.assert_array_equal(labels[decided], probabilities.argmax(-1)[decided])
    assert not varied or len(np.unique(labels)) > 1, "a constant label map would not test anything"


def _run_saved_model_cli(*args):
    script = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=300)


def _saved_model_cli(*args):
    result = _run_saved_model_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _signature_tensors(show_output):
    """{signature: {(inputs|outputs, name): (dtype, shape)}} parsed from `saved_model_cli show --all`."""
    signatures = {}
    for block in re.split(r"\nsignature_def\['", show_output)[1:]:
        name = block.split("'", 1)[0]
        signatures[name] = {
            (kind, key): (dtype, shape) for kind, key, dtype, shape in re.findall(
                r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", block)}
    return signatures


def test_saved_model_cli_show_lists_both_signatures(exported):
    signatures = _signature_tensors(_saved_model_cli("show", "--all", "--dir", exported))
    batch, maps = "(-1)", "(-1, -1, -1)"
    probabilities = f"(-1, -1, -1, {NUM_CLASSES})"
    assert signatures[export.SERVING_SIGNATURE] == {
        ("inputs", "image_bytes"): ("DT_STRING", batch),
        ("outputs", "labels"): ("DT_INT32", maps),
        ("outputs", "probabilities"): ("DT_FLOAT", probabilities),
        ("outputs", "heights"): ("DT_INT32", batch),
        ("outputs", "widths"): ("DT_INT32", batch),
    }
    assert signatures[export.FLOAT_SIGNATURE] == {
        ("inputs", "images"): ("DT_FLOAT", "(-1, -1, -1, 3)"),
        ("outputs", "labels"): ("DT_INT32", maps),
        ("outputs", "probabilities"): ("DT_FLOAT", probabilities),
    }


def test_saved_model_cli_run_decodes_an_image_file_at_its_own_size(exported, image_files, model, tmp_path):
    path, data, image = image_files[0]
    # String inputs go through --inputs as an object array; --input_exprs only takes Python literals.
    np.save(tmp_path / "request.npy", np.array([data], dtype=object))
    _saved_model_cli("run", "--dir", exported, "--tag_set", "serve", "--signature_def", export.SERVING_SIGNATURE,
                     "--inputs", f"image_bytes={tmp_path / 'request.npy'}", "--outdir", str(tmp_path / "out"))
    labels = np.load(tmp_path / "out" / "labels.npy")
    height, width = image.shape[:2]
    assert labels.shape == (1, height, width)
    assert np.load(tmp_path / "out" / "heights.npy").tolist() == [height]
    assert np.load(tmp_path / "out" / "widths.npy").tolist() == [width]
    _assert_labels_match(labels[0], _reference(model, image))


def _exif(orientation, byte_order):
    """An EXIF block with a first directory of two entries, the orientation second, in either byte order
    (PIL writes "II", little-endian; iPhones "MM")."""
    if byte_order == "II":
        exif = Image.Exif()
        exif[0x010F] = "Phone"  # Make
        exif[0x0112] = orientation
        return exif.tobytes()
    entries = (struct.pack(">HHI4s", 0x0100, 4, 1, struct.pack(">I", 45))  # ImageWidth, LONG
               + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0))  # Orientation, SHORT
    return b"Exif\0\0MM\0\x2a" + struct.pack(">I", 8) + struct.pack(">H", 2) + entries + struct.pack(">I", 0)


def _phone_jpeg(stored, orientation, byte_order):
    """(JPEG bytes of the `stored` pixels tagged with an EXIF orientation, the upright picture a viewer shows:
    Pillow's decoding turned by its `ImageOps.exif_transpose`)."""
    return _tagged(stored, orientation, byte_order, "JPEG")


def _tagged(stored, orientation, byte_order, image_format, *, exif_after_pixels=False):
    """(bytes of the `stored` pixels in `image_format` tagged with an EXIF orientation, the upright picture a
    viewer shows). Pillow writes a PNG's eXIf chunk before the pixels and a WebP's EXIF chunk after them;
    `exif_after_pixels` moves a PNG's after its image data (Pillow reads it there too)."""
    buffer = io.BytesIO()
    options = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}, "PNG": {}}[image_format]
    Image.fromarray(stored).save(buffer, image_format, exif=_exif(orientation, byte_order), **options)
    data = buffer.getvalue()
    if exif_after_pixels:
        start = data.index(b"eXIf") - 4
        chunk = data[start:start + 12 + struct.unpack(">I", data[start:start + 4])[0]]
        data = data.replace(chunk, b"")
        end = data.index(b"IEND") - 4
        data = data[:end] + chunk + data[end:]
    return data, np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


@pytest.mark.parametrize("byte_order", ["II", "MM"])
def test_exif_orientation_is_read_in_the_graph_as_pil_reads_it(byte_order):
    stored = _pattern_image(21, 34, 2)
    kinds = [("JPEG", False), ("PNG", False), ("PNG", True), ("WEBP", False)]
    for (image_format, after_pixels), orientation in itertools.product(kinds, range(1, 9)):
        data, upright = _tagged(stored, orientation, byte_order, image_format, exif_after_pixels=after_pixels)
        kind = f"{image_format}{' (eXIf after the pixels)' if after_pixels else ''}, orientation {orientation}"
        assert Image.open(io.BytesIO(data)).getexif()[0x0112] == orientation, kind  # PIL reads the tag written
        read = decoding._exif_orientation(tf.constant(data))
        assert int(read) == orientation, kind
        decoded = (tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")  # Pillow's IDCT
                   if image_format == "JPEG" else tf.io.decode_image(data, channels=3, expand_animations=False))
        np.testing.assert_array_equal(decoding._upright(decoded, read), upright, err_msg=kind)
    # A PNG eXIf chunk that keeps JPEG's "Exif\0\0" before the TIFF header (some writers do; Pillow reads it).
    png = _tagged(stored, 6, byte_order, "PNG")[0]
    start = png.index(b"eXIf") - 4
    length = struct.unpack(">I", png[start:start + 4])[0]
    prefixed = (png[:start] + struct.pack(">I", length + 6) + b"eXIfExif\0\0" + png[start + 8:start + 8 + length]
                + struct.pack(">I", zlib.crc32(b"eXIfExif\0\0" + png[start + 8:start + 8 + length]))
                + png[start + 12 + length:])
    assert Image.open(io.BytesIO(prefixed)).getexif()[0x0112] == 6
    assert int(decoding._exif_orientation(tf.constant(prefixed))) == 6
    webp = _tagged(stored, 1, byte_order, "WEBP")[0]
    for untagged in (tf.io.encode_jpeg(stored).numpy(), tf.io.encode_png(stored).numpy(), webp[:len(webp) // 2],
                     b"", b"\xff\xd8\xff\xe1\0\x08Exif\0\0MM", b"\xff\xd8\xff\xe1\0\x08Exif", png[:start + 12]):
        assert int(decoding._exif_orientation(tf.constant(untagged))) == 1


def _user_files(directory):
    """{name: path} of files as users have them: phone JPEGs in every orientation and both byte orders
    (and two bogus ones), plain, greyscale and CMYK JPEGs; RGB, RGBA, palette, 16-bit (greyscale, RGB, RGBA) and EXIF-tagged PNGs;
    lossy, transparent and EXIF-tagged WebP; a GIF."""
    stored = _pattern_image(21, 34, 5)
    files = {f"phone_{order}_{orientation}.jpg": _phone_jpeg(stored, orientation, order)[0]
             for order in ("II", "MM") for orientation in range(1, 9)}
    files["tagged_8.png"] = _tagged(stored, 8, "MM", "PNG")[0]
    # Orientation values outside 1..8 (written by buggy software) leave the picture as stored, as in Pillow.
    files.update({f"bogus_{value}.jpg": _phone_jpeg(stored, value, "II")[0] for value in (0, 9)})
    files["tagged_6.webp"] = _tagged(stored, 6, "II", "WEBP")[0]
    sixteen_bits = stored.astype(np.uint16) * 257 + 100
    files["rgb48.png"] = tf.io.encode_png(sixteen_bits).numpy()
    files["rgba64.png"] = tf.io.encode_png(np.dstack([sixteen_bits, sixteen_bits[..., :1]])).numpy()
    rgba = Image.fromarray(np.dstack([stored, stored[..., :1]]))
    images = {"plain.jpg": Image.fromarray(stored), "grey.jpg": Image.fromarray(stored[..., 0]),
              "cmyk.jpg": Image.fromarray(stored).convert("CMYK"), "rgb.png": Image.fromarray(stored),
              "rgba.png": rgba, "lossy.webp": Image.fromarray(stored), "rgba.webp": rgba,
              "palette.png": Image.fromarray(stored).convert("P", palette=Image.Palette.ADAPTIVE, colors=7),
              "grey16.png": Image.fromarray(sixteen_bits[..., 0]),
              "palette.gif": Image.fromarray(stored).convert("P", palette=Image.Palette.ADAPTIVE, colors=5)}
    for name, image in images.items():
        buffer = io.BytesIO()
        image.save(buffer, name.rsplit(".", 1)[1].replace("jpg", "jpeg").upper(), quality=95)
        files[name] = buffer.getvalue()
    paths = {}
    for name, data in files.items():
        paths[name] = directory / name
        paths[name].write_bytes(data)
    return paths


def test_served_pixels_are_those_deeplab_vis_and_the_records_hold(tmp_path):
    """serving_default decodes each file to exactly the pixels deeplab-vis, `segment` and a converted record
    give it (`read_rgb_image`): tagged files upright, JPEGs decoded as the converters decode them, 16-bit
    greyscale scaled as they scale it, other files as the records decode them."""
    from deeplab_tf.evaluation.segment import read_rgb_image

    decode = tf.function(lambda data: decoding.decode_image_bytes(data, 10 ** 6, tf.constant(0)))
    for name, path in _user_files(tmp_path).items():
        served, read = decode(tf.constant(path.read_bytes())).numpy(), read_rgb_image(str(path)).astype(np.float32)
        assert served.shape == read.shape, name
        np.testing.assert_array_equal(served, read, err_msg=name)


def test_saved_model_cli_run_segments_phone_photos_upright(exported, loaded, tmp_path):
    """Pictures stored sideways with an EXIF orientation (as phones save JPEGs; PNG and WebP can carry one too)
    come back at the size and in the orientation a viewer shows, with the labels of the upright pixels,
    through the C++ loader TF Serving uses; a transparent WebP is served too, and no JPEG decoder error
    reaches the server's log for the images that are not JPEGs."""
    requests = [_phone_jpeg(_pattern_image(33, 45, 3), 6, "MM"), _phone_jpeg(_pattern_image(33, 45, 4), 3, "II"),
                _tagged(_pattern_image(33, 45, 5), 8, "MM", "PNG"),
                _tagged(np.dstack([_pattern_image(33, 45, 6), _pattern_image(33, 45, 7)[..., :1]]), 1, "II", "WEBP")]
    np.save(tmp_path / "request.npy", np.array([data for data, _ in requests], dtype=object))
    result = _run_saved_model_cli("run", "--dir", exported, "--tag_set", "serve", "--signature_def",
                                  export.SERVING_SIGNATURE, "--inputs", f"image_bytes={tmp_path / 'request.npy'}",
                                  "--outdir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Not a JPEG file" not in result.stderr
    labels = np.load(tmp_path / "out" / "labels.npy")
    heights, widths = (np.load(tmp_path / "out" / f"{name}.npy").tolist() for name in ("heights", "widths"))
    assert (heights, widths) == ([45, 33, 45, 33], [33, 45, 33, 45])  # the first turned upright: 45 high, 33 wide
    for index, (_, upright) in enumerate(requests):
        expected = loaded.signatures[export.FLOAT_SIGNATURE](images=tf.cast(upright, tf.float32)[tf.newaxis])
        np.testing.assert_array_equal(labels[index, :heights[index], :widths[index]], expected["labels"][0])
    assert len(np.unique(labels[0][labels[0] >= 0])) > 1, "a constant label map would not test anything"


_FRESH_PROCESS = """
import json, sys
import numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
encoded = [open(path, "rb").read() for path in sys.argv[3:]]
outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
first = tf.io.decode_image(encoded[0], channels=3)
floats = loaded.signatures["predict_images"](images=tf.cast(first, tf.float32)[tf.newaxis])
np.savez(sys.argv[2], settings=json.loads(loaded.settings_json.numpy()),
         **{k: v.numpy() for k, v in outputs.items()}, **{"float_" + k: v.numpy() for k, v in floats.items()})
"""


def test_a_fresh_process_gives_the_labels_of_predict(exported, image_files, model, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, exported, str(tmp_path / "out.npz"),
         *(path for path, _, _ in image_files)],
        capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "out.npz", allow_pickle=True)
    settings = out["settings"].item()
    assert (settings["output_stride"], settings["scales"], settings["flip"]) == (8, [0.75, 1.0], True)
    assert settings["model_config"]["output_stride"] == 8 and settings["num_classes"] == NUM_CLASSES

    sizes = [image.shape[:2] for _, _, image in image_files]
    assert out["labels"].shape == (2, max(h for h, _ in sizes), max(w for _, w in sizes))
    assert out["heights"].tolist() == [h for h, _ in sizes] and out["widths"].tolist() == [w for _, w in sizes]
    for index, ((height, width), (_, _, image)) in enumerate(zip(sizes, image_files)):
        reference = _reference(model, image)
        # The probabilities below are compared everywhere; the labels of the small image may be one class.
        _assert_labels_match(out["labels"][index, :height, :width], reference, varied=index == 0)
        np.testing.assert_allclose(out["probabilities"][index, :height, :width], reference, atol=1e-4)
        # Padding right of and below the smaller image.
        padding = np.ones(out["labels"].shape[1:], bool)
        padding[:height, :width] = False
        assert (out["labels"][index][padding] == export.LABEL_PADDING).all()
        assert (out["probabilities"][index][padding] == 0).all()
    first = _reference(model, image_files[0][2])
    _assert_labels_match(out["float_labels"][0], first)
    np.testing.assert_allclose(out["float_probabilities"][0], first, atol=1e-4)


def _png_claiming_size(height, width):
    """A 1x1 PNG whose header claims height x width (the decoder would reject its checksum)."""
    data = bytearray(tf.io.encode_png(tf.zeros([1, 1, 3], tf.uint8)).numpy())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


def _bmp(height, width):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="BMP")
    return buffer.getvalue()


@pytest.mark.parametrize("signature, request_value, message", [
    ("serving_default", [], "Empty batch"),
    ("predict_images", np.zeros([0, 9, 9, 3], np.float32), "Empty batch"),
    ("predict_images", np.zeros([1, 81, 81, 3], np.float32), "Image too large"),
], ids=["empty_batch", "empty_float_batch", "large_float_image"])
def test_bad_requests_are_invalid_argument_and_the_model_keeps_serving(
        loaded, image_files, signature, request_value, message):
    function = loaded.signatures[signature]
    argument = "image_bytes" if signature == export.SERVING_SIGNATURE else "images"
    request = tf.constant(request_value, tf.string) if argument == "image_bytes" else tf.constant(request_value)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        function(**{argument: request})
    _assert_serves(loaded, image_files)


def _assert_serves(loaded, image_files):
    _, data, image = image_files[1]
    assert loaded.signatures[export.SERVING_SIGNATURE](image_bytes=tf.constant([data]))["labels"].shape == (
        1, *image.shape[:2])


_JPEG = tf.io.encode_jpeg(_pattern_image(33, 29, 1)).numpy()


@pytest.mark.parametrize("bad_image, message", [
    (b"", "empty"),
    (b"not an image", "not a JPEG, PNG, GIF, BMP or WebP file"),
    (b"GIF", "not a JPEG"),  # shorter than any signature
    (_JPEG[:200], "corrupt or truncated"),
    (_JPEG[:8], "corrupt or truncated"),  # not even a readable header
    (tf.io.encode_png(_pattern_image(20, 20, 2)).numpy()[:-30], "corrupt or truncated"),
    (_png_claiming_size(50_000, 50_000), "too large: more than max_image_pixels"),
    (_bmp(81, 81), "too large: more than max_image_pixels"),  # no header check: refused after decoding
], ids=["empty", "not_an_image", "short_bytes", "truncated_jpeg", "truncated_jpeg_header", "truncated_png",
        "huge_png_header", "large_bmp"])
def test_a_bad_image_in_a_batch_is_named_by_its_index(loaded, image_files, bad_image, message):
    """The batch fails as a whole (InvalidArgument), and the error says which element and what is wrong."""
    good = [data for _, data, _ in image_files]
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"image 2 of the batch: {message}"):
        loaded.signatures[export.SERVING_SIGNATURE](image_bytes=tf.constant([*good, bad_image, good[0]]))
    _assert_serves(loaded, image_files)


def test_a_jpeg_cut_short_logs_at_most_one_line(loaded, capfd):
    """libjpeg wrote "Improper call to JPEG library" to the server's stderr twice per JPEG cut short before its
    first scan (reading the header, then decoding it); such a file now never reaches it, and one cut later gets
    TensorFlow's one line ("Premature end of JPEG data")."""
    scan = _JPEG.index(b"\xff\xda")
    for cut, lines in [(8, 0), (scan, 0), (scan + 40, 1)]:
        capfd.readouterr()
        with pytest.raises(tf.errors.InvalidArgumentError, match="image 0 of the batch: corrupt or truncated"):
            loaded.signatures[export.SERVING_SIGNATURE](image_bytes=tf.constant([_JPEG[:cut]]))
        logged = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
        assert not any("Improper call" in line for line in logged) and len(logged) <= lines, (cut, logged)


def test_saved_model_cli_run_names_the_bad_image_of_a_batch(exported, image_files, tmp_path):
    """The session loader (as TF Serving's) runs the per-image checks too."""
    np.save(tmp_path / "request.npy", np.array([image_files[0][1], b""], dtype=object))
    result = _run_saved_model_cli(
        "run", "--dir", exported, "--tag_set", "serve", "--signature_def", export.SERVING_SIGNATURE,
        "--inputs", f"image_bytes={tmp_path / 'request.npy'}", "--outdir", str(tmp_path / "out"))
    assert result.returncode != 0 and "image 1 of the batch: empty (0 bytes)" in result.stderr, result.stderr[-3000:]


def test_bfloat16_weights_with_sliding_windows_nearly_keep_the_labels(model, exported, image_files, tmp_path):
    """Half the size; the labels of `predict` with the same windows, up to bfloat16 rounding."""
    window = (33, 33)
    half_dir, settings = export.export_version(model, str(tmp_path), weights_dtype="bfloat16", window_size=window,
                                               **EXPORT_OPTIONS)
    assert (settings["weights_dtype"], settings["window_size"]) == ("bfloat16", [33, 33])
    assert export.disk_size(half_dir) < 0.55 * export.disk_size(exported)
    half = tf.saved_model.load(half_dir)
    assert {weight.dtype for weight in half.weights if weight.dtype.is_floating} == {tf.bfloat16}
    _, data, image = image_files[0]
    labels = half.signatures[export.SERVING_SIGNATURE](image_bytes=tf.constant([data]))["labels"].numpy()[0]
    windowed = _reference(model, image, window_size=window).argmax(-1)
    assert (labels == windowed).mean() > 0.9
    assert (windowed != _reference(model, image).argmax(-1)).mean() > 0.01, "the windows change the labels"


def test_mixed_bfloat16_export_computes_in_bfloat16_and_nearly_keeps_the_labels(
        checkpoint_workdir, image_files, model, tmp_path):
    fast = workdir.load_model(checkpoint_workdir, output_stride=8, precision="mixed_bfloat16")[0]
    export_dir, settings = export.export_version(fast, str(tmp_path), **EXPORT_OPTIONS)
    assert settings["compute_dtype"] == "bfloat16"
    loaded = tf.saved_model.load(export_dir)
    function_defs = loaded.signatures[export.FLOAT_SIGNATURE].graph.as_graph_def().library.function
    bfloat16_products = [node.name for function in function_defs for node in function.node_def
                         if node.op in ("Conv2D", "Einsum", "MatMul") and node.attr["T"].type == tf.bfloat16]
    assert len(bfloat16_products) > 50, "the convolutions and tap products run in bfloat16"
    _, data, image = image_files[0]
    outputs = loaded.signatures[export.SERVING_SIGNATURE](image_bytes=tf.constant([data]))
    assert outputs["probabilities"].dtype == tf.float32
    assert (outputs["labels"].numpy()[0] == _reference(model, image).argmax(-1)).mean() > 0.9

    folded_dir, _ = export.export_version(fold_batch_norm(fast), str(tmp_path), **EXPORT_OPTIONS)
    stored = {weight.dtype for weight in tf.saved_model.load(folded_dir).weights if weight.dtype.is_floating}
    assert stored == {tf.bfloat16, tf.float32}, "bfloat16 weights stay bfloat16, the logits' float32"
    assert export.disk_size(folded_dir) < 0.6 * export.disk_size(export_dir)


def test_versions_are_numbered_and_not_overwritten(model, exported):
    base = os.path.dirname(exported)
    assert export.next_version(base) == int(os.path.basename(exported)) + 1
    with pytest.raises(FileExistsError, match="exists"):
        export.export_version(model, base, version=int(os.path.basename(exported)))
    with pytest.raises(ValueError, match="class names"):
        export.export_version(model, base, class_names=["one"])
    assert sorted(os.listdir(base)) == [os.path.basename(exported)], "no temporary directory is left"


def test_a_killed_exports_temporary_folder_is_removed_by_the_next(model, tmp_path):
    """A SavedModel half-written by an export that was killed stayed in the base folder forever; the next export
    removes it, and leaves alone the folder of an export still running (its PID alive)."""
    base = tmp_path / "models"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = base / f".tmp-1-{dead.pid}-123"
    (killed / "variables").mkdir(parents=True)
    running = base / f".tmp-2-{os.getpid()}-456"
    running.mkdir()
    with pytest.raises(ValueError, match="class names"):  # Fails fast, after the clean-up.
        export.export_version(model, str(base), class_names=["one"])
    assert sorted(os.listdir(base)) == [running.name]


def _run_cli(*flags):
    return subprocess.run([sys.executable, "-m", "deeplab_tf.cli.export", *flags],
                          capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=600)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_cli_exports_float16_weights_and_tflite(checkpoint_workdir, image_files, tmp_path):
    base, tflite_path = tmp_path / "models", tmp_path / "deeplab.tflite"
    result = _run_cli(f"--checkpoint={checkpoint_workdir}", f"--export_dir={base}", "--version=7",
                      "--weights_dtype=float16", f"--tflite_path={tflite_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    reports = re.findall(r"deeplab-export: wrote (\S+) in [\d.]+ s \(([\d.]+) MB\)", result.stdout)
    assert [path for path, _ in reports] == [str(base / "7"), str(tflite_path)], result.stdout
    assert all(float(megabytes) > 40 for _, megabytes in reports)  # R50's float16 weights: ~80 MB
    with open(base / "7" / export.SETTINGS_FILE) as f:
        settings = json.load(f)
    assert (settings["weights_dtype"], settings["output_stride"], settings["scales"]) == ("float16", 16, [1.0])

    reference_model = workdir.load_model(checkpoint_workdir)[0]
    _, _, image = image_files[0]
    reference = _reference(reference_model, image.astype(np.float32), scales=(1.0,), flip=False)
    interpreter = tf.lite.Interpreter(model_path=str(tflite_path))
    labels = interpreter.get_signature_runner(export.FLOAT_SIGNATURE)(
        images=image[np.newaxis].astype(np.float32))["labels"][0]
    assert (labels == reference.argmax(-1)).mean() > 0.9


def test_tflite_refuses_bfloat16_compute_and_reports_converter_errors(checkpoint_workdir, tmp_path):
    result = _run_cli(f"--checkpoint={checkpoint_workdir}", f"--export_dir={tmp_path / 'models'}",
                      "--precision=mixed_bfloat16", f"--tflite_path={tmp_path / 'deeplab.tflite'}")
    assert result.returncode == 1 and "--tflite_path needs --precision=float32" in result.stderr
    assert not (tmp_path / "models").exists()

    class StringOps(tf.Module):  # TFLite's builtin operations have no string formatting
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def predict_images(self, images):
            return {"labels": tf.strings.length(tf.strings.as_string(images))}

    module = StringOps()
    tf.saved_model.save(module, str(tmp_path / "strings"), signatures={export.FLOAT_SIGNATURE: module.predict_images})
    with pytest.raises(RuntimeError, match="TFLite cannot convert .*strings"):
        export.export_tflite(str(tmp_path / "strings"), str(tmp_path / "strings.tflite"))
    os.makedirs(tmp_path / "strings" / "assets.extra")
    (tmp_path / "strings" / export.SETTINGS_FILE).write_text(json.dumps({"compute_dtype": "bfloat16"}))
    with pytest.raises(ValueError, match="computes in bfloat16"):
        export.export_tflite(str(tmp_path / "strings"), str(tmp_path / "strings.tflite"))
    assert not (tmp_path / "strings.tflite").exists()


def test_cli_refuses_a_tflite_path_it_cannot_write_before_exporting(checkpoint_workdir, tmp_path):
    """A --tflite_path that is a folder, or under a file, is refused before a SavedModel version is written
    (it used to be found after the export and the conversion, leaving a new version at each try)."""
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder").mkdir()
    for path, message in ((tmp_path / "a_folder", f"--tflite_path={tmp_path / 'a_folder'} is a folder"),
                          (tmp_path / "a_file" / "x.tflite", f"--tflite_path={tmp_path / 'a_file' / 'x.tflite'}: its "
                                                             f"folder {tmp_path / 'a_file'}: cannot create it")):
        result = _run_cli(f"--checkpoint={checkpoint_workdir}", f"--export_dir={tmp_path / 'models'}",
                          f"--tflite_path={path}")
        assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "models").exists()


def test_cli_names_a_missing_checkpoint(tmp_path):
    result = _run_cli(f"--checkpoint={tmp_path / 'no_such_run'}", f"--export_dir={tmp_path / 'models'}")
    assert result.returncode == 1
    assert "deeplab-export: No checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists()


def test_documented_rest_and_grpc_requests_fit_the_signature(loaded, image_files):
    """The request bodies of docs/export.md, decoded as TF Serving does, run the serving signature."""
    from tensorflow_serving.apis import predict_pb2
    path, data, image = image_files[0]
    body = json.loads(json.dumps({"instances": [{"b64": base64.b64encode(data).decode("ascii")}]}))
    rest_input = [base64.b64decode(instance["b64"]) for instance in body["instances"]]

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "deeplab"
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([open(path, "rb").read()]))
    grpc_input = tf.make_ndarray(request.inputs["image_bytes"]).tolist()

    assert rest_input == grpc_input == [data]
    outputs = loaded.signatures[request.model_spec.signature_name](image_bytes=tf.constant(grpc_input))
    assert outputs["labels"].shape == (1, *image.shape[:2])
