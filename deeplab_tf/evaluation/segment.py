"""Segmenting one image for people rather than pipelines: a file path, a PIL image or a numpy array
in, a label map at the image's own size out.

`segment` is what deeplab-vis runs on every image, through the same traced `inference.predict` that
deeplab-eval scores and the SavedModel serves, so a label map from Python equals deeplab-vis's index PNG.
"""

import functools
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
    """`image` (a path, a PIL image or a numpy array) as uint8 RGB [H, W, 3].

    Paths go through `read_rgb_image`; PIL images are turned upright by their EXIF orientation and
    converted as the converters convert files (a JPEG opened with Pillow is Pillow's decode, which can
    differ from TensorFlow's by a grey level here and there: pass the path to get exactly the pixels
    deeplab-vis and the records use); arrays may be [H, W] or [H, W, 1] greyscale, [H, W, 3]
    RGB or [H, W, 4] RGBA, uint8 or float in 0..255.

    Raises:
        ValueError: an array of another shape, or float values outside 0..255.
        TypeError: anything else.
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
    if image.dtype != np.uint8:
        if image.size and (np.nanmin(image) < 0 or np.nanmax(image) > 255):
            raise ValueError(f"expected pixel values in 0..255, got {np.nanmin(image)}..{np.nanmax(image)} "
                             f"({image.dtype}); scale images in 0..1 by 255 first.")
        image = image.astype(np.float32)
    image = image[..., :3]  # drops alpha
    return np.broadcast_to(image, image.shape[:2] + (3,))


@functools.lru_cache(maxsize=4)
def _predict_fn(model, scales, flip, window_size, eval_crop_size, output):
    """One traced prediction function per model and options (a few kept, each holding its model)."""
    return make_predict_fn(model, scales=scales, flip=flip, window_size=window_size,
                           eval_crop_size=eval_crop_size, output=output)


def segment(model, image, *, scales=(1.0,), flip=False, eval_crop_size=None, window_size=None,
            output="labels"):
    """The label map (or class probabilities) of one image, at the image's own size.

    Args:
        model: a DeepLabV3 (e.g. from `deeplab_tf.load_model`), or any callable of `inference.predict`.
        image: a file path (read upright, as the converters read it), a PIL image, or a numpy array
            [H, W], [H, W, 3] or [H, W, 4] in 0..255; any size.
        scales, flip: average the probabilities over these input scales and left-right flips (the
            paper's evaluation: scales (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip True).
        eval_crop_size: (height, width) canvas the image is padded to first, as the original release
            evaluates (513, 513 on PASCAL VOC); None runs it at its own size.
        window_size: run the model on overlapping tiles of this size (bounded memory).
        output: "labels" or "probabilities".

    Returns:
        numpy int32 [H, W] class ids, or float32 [H, W, num_classes] probabilities.

    Example:
        >>> model = deeplab_tf.load_model("runs/voc_os16", output_stride=8)
        >>> labels = deeplab_tf.segment(model, "photo.jpg", eval_crop_size=(513, 513))
        >>> labels.shape  # the photo's (height, width), upright as viewers show it
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    pixels = to_rgb_array(image)
    predict = _predict_fn(model, tuple(float(s) for s in scales), bool(flip),
                          tuple(window_size) if window_size else None,
                          tuple(eval_crop_size) if eval_crop_size else None, output)
    return predict(pixels[np.newaxis].astype(np.float32))[0].numpy()
