"""Colormaps, colourised label maps, overlays and the PNG files the visualisation tool writes."""

import json
import os

import numpy as np
from PIL import Image

from deeplab_tf.data.cityscapes_labels import TRAIN_CLASS_NAMES, train_id_lookup_table

# Cityscapes' colour of each train id (cityscapesScripts' label table).
_CITYSCAPES_COLORS = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70),
    "wall": (102, 102, 156), "fence": (190, 153, 153), "pole": (153, 153, 153),
    "traffic light": (250, 170, 30), "traffic sign": (220, 220, 0), "vegetation": (107, 142, 35),
    "terrain": (152, 251, 152), "sky": (70, 130, 180), "person": (220, 20, 60), "rider": (255, 0, 0),
    "car": (0, 0, 142), "truck": (0, 0, 70), "bus": (0, 60, 100), "train": (0, 80, 100),
    "motorcycle": (0, 0, 230), "bicycle": (119, 11, 32),
}

# The ADE20K scene-parsing benchmark palette: index 0 ("other") then its 150 classes, as RRGGBB.
_ADE20K_HEX = (
    "000000 787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 "
    "04fa07 e005ff ebff07 96053d 787846 08ff33 ff0652 8fff8c ccff04 ff3307 "
    "cc4603 0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0 0907e6 dcdcdc ff095c "
    "7009ff 08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 "
    "ffc207 ff7a08 00ff14 ff0829 ff0599 0633ff eb0cff a09614 00a3ff 8c8c8c "
    "fa0a0f 14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff ff4700 00ebff 00adff "
    "1f00ff 0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85 ff0000 ffa300 ff6600 "
    "c2ff00 008fff 33ff00 0052ff 00ff29 00ffad 0a00ff adff00 00ff99 ff5c00 "
    "ff00ff ff00f5 ff0066 ffad00 ff0014 ffb8b8 001fff 00ff3d 0047ff ff00cc "
    "00ffc2 00ff52 000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900 00ff0a "
    "ff7000 8fff00 5200ff a3ff00 ffeb00 08b8aa 8500ff 00ff5c b800ff ff001f "
    "00b8ff 00d6ff ff0070 5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 "
    "ff00a3 ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff ff007a fff500 0abed4 "
    "d6ff00 00ccff 1400ff ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff "
    "00f5ff 4700ff 7a00ff 00ffb8 005cff b8ff00 0085ff ffd600 19c2c2 66ff00 "
    "5c00ff"
)


def _padded(colors):
    """A [256, 3] uint8 colormap: `colors` first, black after."""
    colormap = np.zeros((256, 3), np.uint8)
    colormap[:len(colors)] = colors
    return colormap


def pascal_colormap():
    """PASCAL VOC's colormap: bit b of R, G, B (from the top) = bits 3b, 3b+1, 3b+2 of the index.

    Class 1 (aeroplane) is (128, 0, 0) and the ignore label 255 the boundary colour (224, 224, 192).
    """
    index = np.arange(256)
    colormap = np.zeros((256, 3), np.uint8)
    for bit in range(8):
        for channel in range(3):
            colormap[:, channel] |= (((index >> (3 * bit + channel)) & 1) << (7 - bit)).astype(np.uint8)
    return colormap


def cityscapes_colormap():
    """Cityscapes' colours indexed by train id (0..18); every other value, the ignore label too, black."""
    return _padded([_CITYSCAPES_COLORS[name] for name in TRAIN_CLASS_NAMES])


def ade20k_colormap():
    """The ADE20K benchmark's colours: 0 is "other" (black), 1..150 its classes."""
    return _padded([list(bytes.fromhex(color)) for color in _ADE20K_HEX.split()])


COLORMAPS = {"pascal": pascal_colormap, "cityscapes": cityscapes_colormap, "ade20k": ade20k_colormap}


def get_colormap(name_or_palette, num_classes=None):
    """A [256, 3] uint8 colormap from a name, a JSON palette file, or an array of RGB triples.

    Args:
        name_or_palette: "pascal", "cityscapes", "ade20k"; the path of a JSON file holding a list of
            [r, g, b] triples; or an array-like [N, 3] of values in 0..255 with N <= 256. User
            palettes are padded with black to 256 entries.
        num_classes: if given, a user palette must have at least this many colours (one per class: the
            padding would paint the others black).
    """
    if isinstance(name_or_palette, str):
        if name_or_palette.lower() in COLORMAPS:
            return COLORMAPS[name_or_palette.lower()]()
        if not os.path.isfile(name_or_palette):
            raise ValueError(f"Unknown colormap {name_or_palette!r}: use one of {', '.join(COLORMAPS)} "
                             "or the path of a JSON file with a list of [r, g, b] triples.")
        with open(name_or_palette, encoding="utf-8") as f:
            try:
                name_or_palette = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"Palette file {f.name} is not valid JSON ({error}); "
                                 "it must hold a list of [r, g, b] triples.") from None
    palette = np.asarray(name_or_palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or not 0 < len(palette) <= 256:
        raise ValueError(f"A palette must be 1 to 256 [r, g, b] triples, got shape {palette.shape}.")
    if not np.issubdtype(palette.dtype, np.integer) or palette.min() < 0 or palette.max() > 255:
        raise ValueError("Palette colours must be integers in 0..255.")
    if num_classes is not None and len(palette) < num_classes:
        raise ValueError(f"the palette has {len(palette)} colours for {num_classes} classes: give one [r, g, b] "
                         "per class.")
    return _padded(palette)


def label_to_color_image(label, colormap):
    """An [H, W] map of class indices -> the [H, W, 3] uint8 image of their colours."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"Expected a 2-D label map, got shape {label.shape}.")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"Label values must be in 0..255, got {label.min()}..{label.max()}.")
    return get_colormap(colormap)[label]


def overlay(image, label, colormap, alpha=0.5):
    """The image with the label colours blended in: (1 - alpha) * image + alpha * colours, uint8."""
    image = np.asarray(image, np.float32)
    if image.shape != (*np.shape(label), 3):
        raise ValueError(f"Image shape {image.shape} does not match label shape {np.shape(label)}.")
    blended = (1.0 - alpha) * image + alpha * label_to_color_image(label, colormap)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def index_image(label, colormap, *, train_id_to_label_id=False):
    """The PIL image of an index PNG: a palette ('P') image whose pixel values are the class indices
    of `label` (uint8 [H, W]), or with `train_id_to_label_id` a greyscale ('L') image of Cityscapes
    label ids."""
    if train_id_to_label_id:
        return Image.fromarray(np.asarray(train_id_lookup_table(), np.uint8)[label])
    image = Image.fromarray(label)
    image.putpalette(get_colormap(colormap).tobytes())  # 'L' -> 'P': same values, coloured view
    return image


def save_prediction(output_dir, stem, image, label, *, colormap, write_index=True, write_color=True,
                    write_overlay=True, train_id_to_label_id=False):
    """Writes one prediction as PNGs under `output_dir`/{index,color,overlay}/`stem`.png.

    Each kind has its own folder so that a folder of index PNGs can go straight to an official
    evaluation script (the Cityscapes one matches one file per image id).

    Args:
        output_dir: root folder; created if missing.
        stem: file name without extension (may contain sub-folders).
        image: [H, W, 3] RGB image in 0..255 (used for the overlay).
        label: [H, W] predicted class indices.
        colormap: anything `get_colormap` accepts.
        write_index: raw prediction: a palette ('P' mode) PNG whose pixel values are the class
            indices, or with `train_id_to_label_id` a greyscale PNG of Cityscapes label ids.
        write_color: the colourised label map.
        write_overlay: the colours blended over the image.
        train_id_to_label_id: write the index PNG as Cityscapes label ids (for cityscapesScripts'
            evaluation) instead of the 19 train ids the model predicts.

    Returns:
        A dict from each written kind ("index", "color", "overlay") to its path.
    """
    colormap = get_colormap(colormap)
    label = np.asarray(label)
    color = label_to_color_image(label, colormap)  # also validates the label map
    label = label.astype(np.uint8)
    images = {}
    if write_index:
        images["index"] = index_image(label, colormap, train_id_to_label_id=train_id_to_label_id)
    if write_color:
        images["color"] = Image.fromarray(color)
    if write_overlay:
        images["overlay"] = Image.fromarray(overlay(image, label, colormap))
    paths = {}
    for kind, picture in images.items():
        paths[kind] = os.path.join(output_dir, kind, f"{stem}.png")
        os.makedirs(os.path.dirname(paths[kind]), exist_ok=True)
        picture.save(paths[kind])
    return paths
