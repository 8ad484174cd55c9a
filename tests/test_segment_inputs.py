"""deeplab_tf.segment on the numpy arrays and options users get wrong: one clear line before anything is
traced (0..1 floats, boolean masks, NaN, out-of-range values, bad scales and sizes), and the right labels
for 16-bit arrays and int sizes."""

import importlib

import numpy as np
import pytest
from PIL import Image

import deeplab_tf
from deeplab_tf.data import fake
from deeplab_tf.data.image_io import scale_16_to_8_bits
from eval_utils import make_workdir

segment_lib = importlib.import_module("deeplab_tf.evaluation.segment")  # the module, not the function

RNG = np.random.default_rng(7)
RGB = fake.random_image(RNG, 33, 41)
# 16-bit greyscale whose low bits matter: the 8 high bits alone would not round the same way.
GREY16 = (RGB[..., 1].astype(np.uint16) * 257 + RNG.integers(0, 257, RGB.shape[:2])).astype(np.uint16)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_workdir(str(tmp_path_factory.mktemp("segment_inputs") / "run"))


@pytest.fixture
def untraced(monkeypatch):
    """Fails a test whose call gets as far as building the TensorFlow prediction function."""
    def traced(*args, **kwargs):
        raise AssertionError("segment built its prediction function: the mistake was not caught up front")

    monkeypatch.setattr(segment_lib, "_predict_fn", traced)


def _labels(model, image, **options):
    labels = deeplab_tf.segment(model, image, **options)
    assert len(np.unique(labels)) > 1, "a constant label map compares equal too easily"
    return labels


def _with(value):
    """RGB as floats with one pixel value `value`."""
    image = RGB.astype(np.float32)
    image[3, 5, 1] = value
    return image


IMAGE_MISTAKES = {
    "float32 in 0..1": (RGB / np.float32(255), ValueError, r"scaled to 0\.\.1.*multiply .*by 255"),
    "float64 in 0..1": (RGB / 255.0, ValueError, r"scaled to 0\.\.1.*multiply .*by 255"),
    "float16 in 0..1": ((RGB / 255.0).astype(np.float16), ValueError, r"scaled to 0\.\.1.*multiply .*by 255"),
    "bool 2-D mask": (RGB[..., 0] > 127, TypeError, r"boolean mask is not an image.*uint8\) \* 255"),
    "bool 3-D mask": (RGB > 127, TypeError, r"boolean mask is not an image.*uint8\) \* 255"),
    "NaN": (_with(np.nan), ValueError, r"NaN or infinite"),
    "infinity": (_with(np.inf), ValueError, r"NaN or infinite"),
    "complex": (RGB.astype(np.complex64), TypeError, r"integers or real numbers, got dtype complex64"),
    "float above 255": (RGB * np.float32(4), ValueError, r"above 255 are not an 8-bit image"),
    "float below 0": (RGB - np.float32(128), ValueError,
                      r"below 0 look normalised.*pass the raw pixels, the model normalises them itself"),
    "int32 above 255": (RGB.astype(np.int32) * 4, ValueError,
                        r"0\.\.255, got \d+\.\.\d+ \(int32\): not an 8-bit image; convert it to 8 bits"
                        r".*16-bit values: pass image\.astype\(np\.uint16\)"),
    "int16 below 0": (RGB.astype(np.int16) - 128, ValueError,
                      r"\(int16\): not an 8-bit image; convert it to 8 bits \(0\.\.255\) first\.$"),
    "int64 above 65535": (RGB.astype(np.int64) * 1000, ValueError,
                          r"\(int64\): not an 8-bit image; convert it to 8 bits \(0\.\.255\) first\.$"),
}


@pytest.mark.parametrize("name", IMAGE_MISTAKES)
def test_image_array_mistakes_get_one_line(model, untraced, name):
    image, error, message = IMAGE_MISTAKES[name]
    with pytest.raises(error, match=message) as raised:
        deeplab_tf.segment(model, image)
    text = str(raised.value)
    assert "\n" not in text
    if image.dtype.kind in "iu":  # the 0..1 hint is wrong for integer images
        assert "0..1" not in text


OPTION_MISTAKES = {
    "scales a string": (dict(scales="1.0"), r"scales must be a non-empty sequence of positive numbers.*'1\.0'"),
    "scales a number": (dict(scales=1.0), r"scales must be a non-empty sequence"),
    "scales empty": (dict(scales=()), r"scales must be a non-empty sequence"),
    "scales zero": (dict(scales=(0.0, 1.0)), r"scales must be a non-empty sequence of positive numbers"),
    "scales NaN": (dict(scales=(float("nan"),)), r"scales must be a non-empty sequence of positive numbers"),
    "eval_crop_size zero": (dict(eval_crop_size=0), r"eval_crop_size must be an int N .*or \(height, width\)"),
    "eval_crop_size one value": (dict(eval_crop_size=(49,)), r"eval_crop_size must be an int N"),
    "eval_crop_size floats": (dict(eval_crop_size=(49.0, 49.0)), r"eval_crop_size must be an int N"),
    "eval_crop_size a string": (dict(eval_crop_size="49,49"), r"eval_crop_size must be an int N"),
    "window_size negative": (dict(window_size=-17), r"window_size must be an int N .*or \(height, width\)"),
    "window_size three values": (dict(window_size=(17, 17, 3)), r"window_size must be an int N"),
    "window_size a bool": (dict(window_size=True), r"window_size must be an int N"),
}


@pytest.mark.parametrize("name", OPTION_MISTAKES)
def test_option_mistakes_get_one_line(model, untraced, name):
    options, message = OPTION_MISTAKES[name]
    with pytest.raises(ValueError, match=message) as raised:
        deeplab_tf.segment(model, RGB, **options)
    assert "\n" not in str(raised.value) and "--" not in str(raised.value)  # no CLI flag in a Python call


def test_uint16_arrays_are_scaled_as_16_bit_files(model, tmp_path):
    """A uint16 array (cv2.imread(..., IMREAD_UNCHANGED) of a 16-bit file) gives the labels of the file
    itself and of its values scaled to 8 bits by the converters' formula."""
    path = tmp_path / "grey16.png"
    Image.fromarray(GREY16).save(path)
    with Image.open(path) as written:
        assert written.mode.startswith("I;16") or written.mode == "I"  # a real 16-bit file
    eight_bits = scale_16_to_8_bits(GREY16.astype(np.int64)).astype(np.uint8)
    expected = _labels(model, str(path))
    np.testing.assert_array_equal(_labels(model, GREY16), expected)
    np.testing.assert_array_equal(_labels(model, GREY16[..., np.newaxis]), expected)
    np.testing.assert_array_equal(_labels(model, eight_bits), expected)
    rgb16 = np.dstack([GREY16, GREY16[::-1], GREY16[:, ::-1]])
    np.testing.assert_array_equal(_labels(model, rgb16),
                                  _labels(model, scale_16_to_8_bits(rgb16.astype(np.int64)).astype(np.uint8)))


@pytest.mark.parametrize("option, size", [("eval_crop_size", 49), ("window_size", 33)])
def test_an_int_size_means_n_by_n(model, option, size):
    expected = _labels(model, RGB, **{option: (size, size)})
    np.testing.assert_array_equal(_labels(model, RGB, **{option: size}), expected)
    np.testing.assert_array_equal(_labels(model, RGB, **{option: np.int64(size)}), expected)


def test_valid_arrays_keep_their_labels(model):
    """Integer arrays in 0..255 of any dtype and an all-zero float image (black either way) are images."""
    expected = _labels(model, RGB)
    for dtype in (np.int16, np.int32, np.int64, np.uint32, np.float64):
        np.testing.assert_array_equal(deeplab_tf.segment(model, RGB.astype(dtype)), expected, err_msg=str(dtype))
    np.testing.assert_array_equal(deeplab_tf.segment(model, np.zeros((9, 11, 3), np.float32)),
                                  deeplab_tf.segment(model, np.zeros((9, 11, 3), np.uint8)))


@pytest.mark.parametrize("not_a_model,message", [
    (None, r"segment's first argument is the model .* got NoneType"),
    ("runs/voc_os16", r"got the path 'runs/voc_os16': load it first, model = deeplab_tf.load_model\('runs/voc_os16'\)"),
])
def test_a_model_mistake_gets_one_line_before_tracing(untraced, not_a_model, message):
    """segment(None, image) and a path in place of the model ended in a traceback from inside a tf.function."""
    with pytest.raises(TypeError, match=message) as raised:
        deeplab_tf.segment(not_a_model, RGB)
    assert "\n" not in str(raised.value)


def test_a_models_prediction_function_is_built_once_per_options(model):
    """deeplab-vis calls segment per image: its prediction function is built once per model and options and
    then reused (a misplaced cache once rebuilt and retraced it for every image)."""
    segment_lib._predict_fn.cache_clear()
    for image in (RGB, RGB[:30, :37], RGB[::-1]):
        deeplab_tf.segment(model, image)
    info = segment_lib._predict_fn.cache_info()
    assert (info.misses, info.hits) == (1, 2), info
