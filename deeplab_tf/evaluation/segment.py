"""Segmenting one image for people rather than pipelines: a file path, a PIL image or a numpy array
in, a label map at the image's own size out.

`segment` is what deeplab-vis runs on every image, through the same traced `inference.predict` that
deeplab-eval scores and the SavedModel serves, so a label map from Python equals deeplab-vis's index PNG.
"""

import functools
import math
import numbers
import os

import numpy as np
from PIL import Image, ImageOps

from deeplab_tf.data import image_io
from deeplab_tf.data.tfrecord import decode_image
from deeplab_tf.data.validation import read_image
from deeplab_tf.evaluation.evaluator import make_predict_fn

OUTPUTS = ("labels", "probabilities")


def read_rgb_image(path):
    """An image file as uint8 RGB [H, W, 3], as training reads images: upright by its EXIF
    orientation, greyscale replicated, alpha dropped, palettes looked up, 16-bit scaled to 8 bits
    (through the converter's `read_image`, so exactly what a converted record holds).

    Raises:
        data.DataError: the file cannot be read or decoded (the message names it).
    """
    encoded, _, _ = read_image(path)
    return decode_image(encoded).numpy()


def to_rgb_array(image):
    """`image` (a path, a PIL image or a numpy array) as uint8 or float32 RGB [H, W, 3] in 0..255.

    Paths go through `read_rgb_image`; PIL images are turned upright by their EXIF orientation and
    converted as the converters convert files (a JPEG opened with Pillow is Pillow's decode, which can
    differ from TensorFlow's by a grey level here and there: pass the path to get exactly the pixels
    deeplab-vis and the records use); arrays may be [H, W] or [H, W, 1] greyscale, [H, W, 3] RGB or
    [H, W, 4] RGBA, of dtype uint8, uint16 (scaled to 8 bits as 16-bit files are), another integer
    type in 0..255, or float in 0..255 (see `_pixel_values`).

    Raises:
        ValueError: an array of another shape, or values that are not 8-bit pixels.
        TypeError: a boolean or complex array, or anything else.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_rgb_image(os.fspath(image))
    if isinstance(image, Image.Image):
        return np.asarray(image_io.to_rgb(ImageOps.exif_transpose(image), path="the PIL image"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"segment takes a file path, a PIL image or a numpy array [H, W, 3], got "
                        f"{type(image).__name__}.")
    if image.ndim == 2:
        image = image[..., np.newaxis]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or 0 in image.shape:
        raise ValueError(f"expected an image array [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape "
                         f"{image.shape}; for a batch, call deeplab_tf.predict.")
    image = _pixel_values(image)[..., :3]  # drops alpha
    return np.broadcast_to(image, image.shape[:2] + (3,))


def _pixel_values(image):
    """The values of a non-empty image array [H, W, C] as uint8, or float32 in 0..255.

    Raises:
        TypeError: a boolean mask, or values that are neither integers nor real numbers.
        ValueError: values that are not 8-bit pixels (`_integer_pixels`, `_float_pixels`).
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        # What cv2.imread(..., IMREAD_UNCHANGED) gives for 16-bit files: scaled as those files are read.
        return image_io.scale_16_to_8_bits(image.astype(np.int64)).astype(np.uint8)
    if image.dtype == np.bool_:
        raise TypeError("got a boolean array: a boolean mask is not an image; pass the image itself "
                        "(or mask.astype(np.uint8) * 255 if the mask really is the picture).")
    if np.issubdtype(image.dtype, np.integer):
        return _integer_pixels(image)
    if np.issubdtype(image.dtype, np.floating):
        return _float_pixels(image)
    raise TypeError(f"expected an image array of integers or real numbers, got dtype {image.dtype}; "
                    "pass the pixels as uint8 RGB.")


def _integer_pixels(image):
    """An integer image array other than uint8/uint16 as float32; its values must be 8-bit already."""
    low, high = image.min(), image.max()
    if low < 0 or high > 255:
        sixteen_bits = low >= 0 and high <= np.iinfo(np.uint16).max
        also = (" (16-bit values: pass image.astype(np.uint16), scaled as 16-bit files are)"
                if sixteen_bits else "")
        raise ValueError(f"expected pixel values in 0..255, got {low}..{high} ({image.dtype}): not an "
                         f"8-bit image; convert it to 8 bits (0..255) first{also}.")
    return image.astype(np.float32)


def _float_pixels(image):
    """A float image array as float32; its values must be finite 8-bit values (0..255), not 0..1."""
    if not np.isfinite(image).all():
        raise ValueError(f"the image holds NaN or infinite values ({image.dtype}); pass finite pixel "
                         "values in 0..255.")
    low, high = image.min(), image.max()
    if low < 0:
        # Negative values are what normalising pipelines give (x - mean, or -1..1).
        raise ValueError(f"expected pixel values in 0..255, got {low}..{high} ({image.dtype}): values "
                         "below 0 look normalised (mean-subtracted, or in -1..1); pass the raw pixels, "
                         "the model normalises them itself (undo the normalisation, and scale images in "
                         "0..1 by 255).")
    if high > 255:
        raise ValueError(f"expected pixel values in 0..255, got {low}..{high} ({image.dtype}): values "
                         "above 255 are not an 8-bit image; convert it to 8 bits (0..255) first.")
    if 0 < high <= 1:
        # Read as 0..255 such an image would be all but black; an all-zero one is black either way.
        raise ValueError(f"the pixel values look scaled to 0..1 (got {low}..{high}, {image.dtype}); "
                         "multiply the image by 255 first: segment takes pixel values in 0..255.")
    return image.astype(np.float32)


def _scales(scales):
    """`scales` as a tuple of floats: a non-empty sequence of positive finite numbers."""
    message = f"scales must be a non-empty sequence of positive numbers such as (0.75, 1.0), got {scales!r}"
    if isinstance(scales, (str, bytes)):  # '1.0' would be iterated character by character
        raise ValueError(message)
    try:
        values = tuple(float(scale) for scale in scales)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not values or not all(math.isfinite(scale) and scale > 0 for scale in values):
        raise ValueError(message)
    return values


def _size(name, size):
    """`size` (None, an int N meaning N x N, or a pair) as (height, width), or None."""
    if size is None:
        return None
    message = f"{name} must be an int N (N x N pixels) or (height, width) in pixels, got {size!r}"
    if _is_int(size):
        size = (size, size)
    if isinstance(size, (str, bytes)):
        raise ValueError(message)
    try:
        pair = tuple(size)
    except TypeError:
        raise ValueError(message) from None
    if len(pair) != 2 or not all(_is_int(value) and value > 0 for value in pair):
        raise ValueError(message)
    return tuple(int(value) for value in pair)


def _is_int(value):
    """Python and numpy integers, not bools (True is no size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def fits_crop(image, eval_crop_size):
    """Whether an image [H, W, ...] can be padded to the canvas `eval_crop_size` (height, width); None: no canvas."""
    return not eval_crop_size or (image.shape[0] <= eval_crop_size[0] and image.shape[1] <= eval_crop_size[1])


def _check_model(model):
    """A TypeError naming what was passed unless `model` can segment (it failed inside a tf.function)."""
    if isinstance(model, (str, os.PathLike)):
        raise TypeError(f"segment's first argument is the model, got the path {str(model)!r}: load it first, "
                        f"model = deeplab_tf.load_model({str(model)!r}), then segment(model, image).")
    if not callable(model):
        raise TypeError(f"segment's first argument is the model (a DeepLabV3 from deeplab_tf.load_model, or a "
                        f"callable from images to logits), got {type(model).__name__}.")


@functools.lru_cache(maxsize=4)
def _predict_fn(model, scales, flip, window_size, eval_crop_size, output):
    """One traced prediction function per model and options (a few kept, each holding its model); an image
    larger than the eval crop gets `inference.canvas_for`'s canvas, as in deeplab-vis and the served model."""
    return make_predict_fn(model, scales=scales, flip=flip, window_size=window_size,
                           eval_crop_size=eval_crop_size, output=output, grow_canvas=True)


def segment(model, image, *, scales=(1.0,), flip=False, eval_crop_size=None, window_size=None,
            output="labels"):
    """The label map (or class probabilities) of one image, at the image's own size.

    Args:
        model: a DeepLabV3 (e.g. from `deeplab_tf.load_model`), or any callable of `inference.predict`.
        image: a file path (read upright, as the converters read it), a PIL image, or a numpy array
            [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] of 8-bit pixel values: uint8, another integer
            type or float in 0..255 (not 0..1), or uint16 (scaled to 8 bits as 16-bit files are);
            any size.
        scales, flip: average the probabilities over these input scales (a non-empty sequence of
            positive numbers) and left-right flips (the paper's evaluation: scales
            (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip True).
        eval_crop_size: (height, width), or N for N x N, of the canvas the image is padded to first,
            as the original release evaluates (513, 513 on PASCAL VOC). A side the image is longer than
            grows to the smallest output_stride * k + 1 holding it (`inference.canvas_for`, as deeplab-vis
            and the served model do; deeplab-eval refuses such images). None runs it at its own size.
        window_size: run the model on overlapping tiles of this size, (height, width) or N for N x N
            (bounded memory).
        output: "labels" or "probabilities".

    Returns:
        numpy int32 [H, W] class ids, or float32 [H, W, num_classes] probabilities.

    Raises:
        ValueError, TypeError: an image `to_rgb_array` refuses or an option out of its range (before
            anything runs).

    Example:
        >>> model = deeplab_tf.load_model("runs/voc_os16", output_stride=8)
        >>> labels = deeplab_tf.segment(model, "photo.jpg", eval_crop_size=(513, 513))
        >>> labels.shape  # the photo's (height, width), upright as viewers show it
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    _check_model(model)
    scales = _scales(scales)
    eval_crop_size = _size("eval_crop_size", eval_crop_size)
    window_size = _size("window_size", window_size)
    pixels = to_rgb_array(image)
    predict = _predict_fn(model, scales, bool(flip), window_size, eval_crop_size, output)
    return predict(pixels[np.newaxis].astype(np.float32))[0].numpy()
