"""Any folder of images + masks: the "train on my own data" path.

`<image_dir>/<name>.{jpg,png,...}` pairs with `<mask_dir>/<name><mask_suffix>.png`. Masks are
either index PNGs (palette or greyscale class ids) or RGB colour masks mapped to class ids through
the dataset's colormap (the default "pascal" one is VOC's).
"""

import functools
import os

import numpy as np

from deeplab_tf import visualization
from deeplab_tf.data import convert, image_io
from deeplab_tf.data.validation import DataError, read_index_mask, read_mask_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_FORMATS = ("index", "rgb")
_SHOWN_COLORS = 5


def class_colors(info):
    """(RGB colour of each class id, colour that means the ignore label or None) of `info`.

    For a named colormap the ignore label's own colour (VOC's (224, 224, 192) borders,
    Cityscapes' black void) is ignored unless it is a class colour; explicit palettes name their
    ignore colour with `ignore_color`.
    """
    colormap = [tuple(int(c) for c in rgb) for rgb in visualization.get_colormap(info.colormap)]
    colors = colormap[:info.num_classes]
    named_ignore = colormap[info.ignore_label]
    if isinstance(info.colormap, str) and named_ignore not in colors:
        return colors, named_ignore
    return colors, None


def _codes(rgb):
    rgb = np.asarray(rgb, np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def read_color_mask(path, *, palette, ignore_color=None, ignore_label=255):
    """An RGB colour mask -> uint8 class ids [H, W]: colour palette[i] becomes i.

    `ignore_color` becomes `ignore_label`; a colour outside the palette is a DataError.
    """
    rgb = np.asarray(read_mask_image(path).convert("RGB"))
    index_of = {}
    for i, color in enumerate(palette):
        index_of.setdefault(int(_codes(color)), i)
    if ignore_color is not None:
        index_of[int(_codes(ignore_color))] = ignore_label
    codes, inverse = np.unique(_codes(rgb), return_inverse=True)
    unknown = [int(c) for c in codes if int(c) not in index_of]
    if unknown:
        shown = ", ".join(str(((c >> 16) & 255, (c >> 8) & 255, c & 255))
                          for c in unknown[:_SHOWN_COLORS])
        raise DataError(
            f"{path}: colours {shown}{', ...' if len(unknown) > _SHOWN_COLORS else ''} are not in "
            "the palette: add them to the dataset spec's colormap (or --ignore_color), or check "
            "the mask was saved without anti-aliasing / JPEG compression.")
    lookup = np.asarray([index_of[int(c)] for c in codes], np.uint8)
    return lookup[inverse.reshape(rgb.shape[:2])]


def _remapped(read_mask, value_map):
    lookup = np.arange(256, dtype=np.uint8)
    for source, target in value_map.items():
        lookup[source] = target
    return lambda path: lookup[read_mask(path)]


def folder_samples(image_dir, mask_dir, *, read_mask=read_index_mask, mask_suffix="",
                   split_file=None):
    """Samples pairing every image in `image_dir` (or each name in `split_file`) with its mask.

    Images that differ only by extension (a.jpg, a.png) cannot be told apart by name: their sample
    is bad (conversion stops naming both files, or skips and lists them with skip_bad).
    """
    if not os.path.isdir(image_dir):
        raise DataError(f"{image_dir}: image folder not found; check --image_dir.")
    images = image_io.group_by_stem(
        os.path.join(image_dir, f) for f in os.listdir(image_dir)
        if f.lower().endswith(IMAGE_EXTENSIONS))
    images = {os.path.basename(stem): paths for stem, paths in images.items()}
    if split_file:
        try:
            with open(split_file, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        except FileNotFoundError:
            raise DataError(f"{split_file}: split list not found; check --split_file.") from None
        missing = [n for n in names if n not in images]
        if missing:
            raise DataError(f"{split_file}: {len(missing)} names have no image in {image_dir} "
                            f"(e.g. {missing[0]!r}); list names without extension.")
    else:
        names = sorted(images)
    samples = []
    for name in names:
        mask_path = os.path.join(mask_dir, name + mask_suffix + ".png")
        paths = images[name]
        samples.append(convert.Sample(
            name=name, image_path=paths[0], mask_path=mask_path,
            read_mask=functools.partial(read_mask, mask_path),
            problem=image_io.same_stem_message(paths) if len(paths) > 1 else None))
    return samples


def convert_folder(image_dir, mask_dir, output_dir, *, info, split="train", split_file=None,
                   mask_format="index", mask_suffix="", value_map=None, ignore_color=None,
                   num_shards=4, skip_bad=False, binary_check=True):
    """Converts a folder of images + masks for dataset `info` to `<output_dir>/<split>-*`.

    `mask_format` "index" reads class ids ("rgb": colours through `info`'s colormap);
    `value_map` ({mask value: class id}, e.g. {255: 1} for binary masks) is applied to index
    masks before validation. `binary_check` refuses masks holding only {0, 255} (a binary mask
    whose foreground is the ignore label); turn it off when such masks are genuine.
    Returns a ConversionSummary.
    """
    if mask_format == "index":
        read_mask = read_index_mask
        if value_map:
            read_mask = _remapped(read_mask, value_map)
    elif mask_format == "rgb":
        if value_map:
            raise DataError("--value_map applies to index masks; colour masks map through the "
                            "palette.")
        palette, default_ignore_color = class_colors(info)
        read_mask = functools.partial(read_color_mask, palette=palette,
                                      ignore_color=ignore_color or default_ignore_color,
                                      ignore_label=info.ignore_label)
    else:
        raise DataError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}.")
    samples = folder_samples(image_dir, mask_dir, read_mask=read_mask, mask_suffix=mask_suffix,
                             split_file=split_file)
    return convert.convert_splits({split: samples}, output_dir=output_dir,
                                  num_classes=info.num_classes, ignore_label=info.ignore_label,
                                  num_shards=num_shards, skip_bad=skip_bad,
                                  binary_check=binary_check)
