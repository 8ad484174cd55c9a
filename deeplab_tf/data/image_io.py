"""Reading a user's image files the way image viewers show them.

Every place the package reads a user's image or mask file goes through `load_image`: it decodes the
whole file (so corrupt files fail here, naming the path), and turns the image upright by its EXIF
orientation (phone photos store pixels sideways plus a tag; TensorFlow's decoders ignore the tag,
so the converters store such images re-encoded upright). `to_rgb` reduces any pixel mode to 8-bit
RGB, scaling 16-bit values rather than clipping them.
"""

import dataclasses
import io
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deeplab_tf.data.errors import DataError

_EXIF_ORIENTATION = 0x0112
_UPRIGHT = 1
_TURNED = range(2, 9)  # the orientations that mirror or turn the stored pixels
_UINT16_MAX = 65535


@dataclasses.dataclass(frozen=True)
class LoadedImage:
    """A decoded image file: `image` upright, `encoded` the file's bytes as stored."""

    encoded: bytes
    image: Image.Image
    format: str  # Pillow's format name, e.g. "JPEG", "PNG", "TIFF"
    transposed: bool  # the EXIF orientation was not upright: `encoded` differs from `image`


def load_image(path):
    """Reads and fully decodes the image file `path`, upright per its EXIF orientation.

    Raises:
        DataError: the file cannot be read, is empty, is not an image, or is corrupt (the message
            names `path`).
    """
    try:
        with open(path, "rb") as f:
            encoded = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the image ({e.strerror}); check the path.") from None
    if not encoded:
        raise DataError(f"{path}: the file is empty (0 bytes): re-export or re-copy it, or "
                        "remove it.")
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.load()
            # Values other than 2..8 (0, 9, ... from buggy writers) leave the picture as stored, as in Pillow.
            transposed = image.getexif().get(_EXIF_ORIENTATION, _UPRIGHT) in _TURNED
            upright = ImageOps.exif_transpose(image) if transposed else image.copy()
            image_format = image.format
    except UnidentifiedImageError:
        # Pillow's own message names the in-memory buffer, not the file.
        raise DataError(f"{path}: not an image file Pillow can read (JPEG, PNG, BMP, TIFF, WebP, "
                        "...): re-export it in one of those formats, or remove it.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode the image ({e}); the file is corrupt or "
                        "truncated: re-export it, or remove it.") from None
    return LoadedImage(encoded=encoded, image=upright, format=image_format, transposed=transposed)


def scale_16_to_8_bits(values):
    """round(value * 255 / 65535) in integers, for numpy arrays and TensorFlow tensors (int32 or wider) alike:
    the converters and the serving signature scale 16-bit greyscale with this one formula."""
    return (values * 255 + _UINT16_MAX // 2) // _UINT16_MAX


def to_rgb(image, *, path):
    """`image` as an 8-bit RGB PIL image: greyscale replicated, alpha dropped, palettes looked up.

    16-bit greyscale (modes I;16*, and I holding values in [0, 65535]) is scaled to 8 bits as
    round(value * 255 / 65535), never clipped. (Pillow reads 16-bit RGB PNGs as 8-bit RGB already,
    keeping each value's high byte, as TensorFlow's PNG decoder does.)

    Raises:
        DataError: a 32-bit integer image with values outside [0, 65535] (names `path`).
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > _UINT16_MAX):
            raise DataError(f"{path}: 32-bit integer pixels in [{values.min()}, {values.max()}] "
                            "have no 8-bit meaning: save the image as 8- or 16-bit.")
        image = Image.fromarray(scale_16_to_8_bits(values).astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


def encode_png(image):
    """PNG bytes of a PIL image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def same_stem_message(paths):
    """The error for image files that differ only by extension (`paths`, two or more)."""
    stem = os.path.splitext(os.path.basename(paths[0]))[0]
    return (f"{' and '.join(paths)} share the name {stem!r} (only the extension differs): rename "
            "or remove all but one of them.")


def group_by_stem(paths):
    """{path without extension: [paths with that stem, sorted]} in sorted stem order."""
    groups = {}
    for path in sorted(paths):
        groups.setdefault(os.path.splitext(path)[0], []).append(path)
    return groups
