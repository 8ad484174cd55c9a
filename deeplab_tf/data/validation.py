"""Reading and checking raw images and masks before they become records.

Every problem is a `DataError` whose message names the file, what is wrong and how to fix it, so a
converter can stop with one clear line (or, with skip_bad, list the file and go on).
"""

import os

import numpy as np

from deeplab_tf.data import image_io
from deeplab_tf.data.errors import DataError

# Formats TensorFlow decodes itself; anything else is re-encoded as PNG when converting.
_TF_FORMATS = {"JPEG": "jpeg", "PNG": "png"}
# Pixel modes tf.io.decode_image(channels=3) turns into the right RGB image.
_TF_MODES = {"RGB", "L", "RGBA", "LA", "P"}
_SHOWN_VALUES = 10


def _values(values):
    values = sorted(int(v) for v in values)
    shown = ", ".join(str(v) for v in values[:_SHOWN_VALUES])
    return "{" + shown + (", ..." if len(values) > _SHOWN_VALUES else "") + "}"


def read_image(path):
    """Returns (encoded bytes, format "jpeg"|"png", (height, width)) after a full decode.

    The full decode catches truncated or corrupt files here rather than in the middle of training.
    The original bytes are kept when TensorFlow decodes them to what a viewer shows; otherwise
    (BMP, TIFF, CMYK, 16-bit greyscale, or an EXIF orientation other than upright, which
    TensorFlow ignores) the upright image is re-encoded as 8-bit RGB PNG (see `image_io.to_rgb`).
    The size is the upright one.
    """
    loaded = image_io.load_image(path)
    image = loaded.image
    image_format = _TF_FORMATS.get(loaded.format)
    if image_format is None or image.mode not in _TF_MODES or loaded.transposed:
        return image_io.encode_png(image_io.to_rgb(image, path=path)), "png", (image.height,
                                                                                image.width)
    return loaded.encoded, image_format, (image.height, image.width)


def read_mask_image(path):
    """The upright PIL image of mask file `path` (see `image_io.load_image`).

    Raises:
        DataError: the mask is missing or cannot be decoded.
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: mask file not found; every image in a split needs a mask "
                        "with the same name.")
    return image_io.load_image(path).image


def read_index_mask(path):
    """A mask PNG -> uint8 class indices [H, W].

    Palette ('P') PNGs such as VOC's SegmentationClass are read as their indices, never their
    colours; greyscale and 1-bit PNGs as their values; RGB masks only if grey (R == G == B).
    """
    if path.lower().endswith((".jpg", ".jpeg")):
        raise DataError(f"{path}: masks must be lossless: JPEG compression changes class ids at "
                        "object borders; save the mask as PNG.")
    mask = read_mask_image(path)
    mode = mask.mode
    array = np.asarray(mask)
    if mode in ("RGB", "RGBA"):
        rgb = array[..., :3]
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            raise DataError(
                f"{path}: is an RGB colour mask, but class indices are needed: save it as a "
                "palette or greyscale PNG of class ids, or convert it with build_folder_data "
                "--mask_format=rgb, which maps colours to ids through a palette (VOC's by "
                "default, or the colormap of a --dataset_spec).")
        array = rgb[..., 0]
    elif mode == "1":
        array = array.astype(np.uint8)
    elif mode not in ("P", "L", "I", "I;16"):
        raise DataError(f"{path}: unsupported mask mode {mode!r}; save it as a palette or "
                        "8-bit greyscale PNG of class ids.")
    out_of_range = (array > 255) | (array < 0)
    if out_of_range.any():
        raise DataError(f"{path}: mask values {_values(np.unique(array[out_of_range]))} do not "
                        "fit in 8 bits; class ids must be in [0, 255].")
    return array.astype(np.uint8)


def check_mask(mask, *, path, image_size, num_classes, ignore_label=255, binary_check=True):
    """Raises DataError unless `mask` is [H, W] matching `image_size` with values in
    [0, num_classes) or `ignore_label`.

    With `binary_check`, a mask holding only {0, 255} is refused too: with 255 as the ignore label
    such a mask has no foreground class at all, and it is almost always a binary mask whose
    foreground was saved as 255.
    """
    if mask.shape != tuple(image_size):
        raise DataError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
            f"{image_size[1]}x{image_size[0]}; masks must have the image's size (re-export the "
            "mask, or check the image/mask pairing).")
    values = np.unique(mask)
    bad = [v for v in values if v >= num_classes and v != ignore_label]
    if binary_check and ignore_label == 255 and set(values.tolist()) == {0, 255}:
        raise DataError(
            f"{path}: mask values {{0, 255}} look binary: map foreground to 1 (e.g. "
            "build_folder_data --value_map=255:1); 255 is the ignore label. If 255 really "
            "marks pixels to ignore here, pass build_folder_data --nobinary_check.")
    if bad:
        raise DataError(
            f"{path}: mask values {_values(bad)} are not class ids in [0, {num_classes}) nor the "
            f"ignore label {ignore_label}: check --num_classes (or the dataset spec), or remap "
            "these values (build_folder_data --value_map), or set them to the ignore label.")
