"""The demo's embedded dataset: deterministic synthetic scenes in the PASCAL VOC folder layout.

Each image is a textured, low-saturation background with objects of five classes at scales from a
few pixels to half the image. A class is a shape drawn in its own hue family with per-object colour
jitter, lighting and noise, and objects occlude one another; a thin ignore band outlines each object
as in VOC's SegmentationClass masks. Small objects are hard at output stride 16 and large ones need
a wide field of view, so atrous rates, output stride and multi-scale inputs matter as in the paper.

Generated on first use (about 1 MB of JPEG and PNG files) rather than shipped, from a fixed seed.
"""

import os
import shutil

import numpy as np

from deeplab_tf.data import fake
from deeplab_tf.data.registry import get_dataset_info

NAME = "demo_shapes"
INFO = get_dataset_info(NAME)
CLASS_NAMES = INFO.class_names
SPLITS = INFO.splits
# Hue (degrees) of each object class; objects vary around it by +-15 degrees.
_HUES = {1: 0, 2: 120, 3: 220, 4: 45, 5: 290}
IMAGE_SIZE = (144, 192)  # height, width
# The canvas the demo evaluates on, as the original release pads PASCAL VOC images to 513 x 513: the
# smallest size of the form 16k + 1 (513 = 32 * 16 + 1) holding the images, where corner-aligned
# resizing keeps the output-stride-16 feature grid on pixel centres.
EVAL_CROP_SIZE = (145, 193)


def _hsv_to_rgb(hue, saturation, value):
    """Scalar HSV (hue in degrees, others in [0, 1]) -> RGB floats in [0, 255]."""
    sector = (hue / 60.0) % 6
    chroma = value * saturation
    x = chroma * (1 - abs(sector % 2 - 1))
    rgb = [(chroma, x, 0), (x, chroma, 0), (0, chroma, x), (0, x, chroma), (x, 0, chroma), (chroma, 0, x)][int(sector)]
    return 255.0 * (np.array(rgb) + value - chroma)


def _shape_mask(class_id, yy, xx, centre, radius, angle):
    """Boolean mask of one object on the grid (yy, xx)."""
    dy, dx = yy - centre[0], xx - centre[1]
    # Rotated coordinates, so squares, triangles and bars come in any orientation.
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if class_id == 1:  # disc
        return dy ** 2 + dx ** 2 <= radius ** 2
    if class_id == 2:  # square
        return (np.abs(u) <= 0.8 * radius) & (np.abs(v) <= 0.8 * radius)
    if class_id == 3:  # triangle (equilateral, pointing along v)
        return (v <= radius / 2) & (np.sqrt(3) * u - v <= radius) & (-np.sqrt(3) * u - v <= radius)
    if class_id == 4:  # ring
        distance = np.sqrt(dy ** 2 + dx ** 2)
        return (distance <= radius) & (distance >= 0.55 * radius)
    return (np.abs(u) <= radius) & (np.abs(v) <= 0.3 * radius)  # bar


def make_scene(rng, *, size=IMAGE_SIZE):
    """One (uint8 RGB image [H, W, 3], uint8 mask [H, W]) pair."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    grey = fake.random_image(rng, height, width).astype(np.float32).mean(axis=-1, keepdims=True)
    tint = rng.uniform(0.85, 1.15, size=3)
    image = np.clip(0.6 * grey * tint + 40, 0, 255)
    mask = np.zeros(size, np.uint8)
    num_objects = rng.integers(2, 6)
    for _ in range(num_objects):
        class_id = int(rng.integers(1, len(CLASS_NAMES)))
        # Log-uniform sizes: from a few pixels to half the image's height.
        radius = float(np.exp(rng.uniform(np.log(5), np.log(height / 2))))
        centre = rng.uniform([0, 0], [height, width])
        inside = _shape_mask(class_id, yy, xx, centre, radius, rng.uniform(0, 2 * np.pi))
        if not inside.any():
            continue
        colour = _hsv_to_rgb(_HUES[class_id] + rng.uniform(-15, 15), rng.uniform(0.55, 0.95),
                             rng.uniform(0.5, 0.95))
        # A linear light gradient across the object.
        light = 1 + 0.25 * ((yy - centre[0]) * rng.uniform(-1, 1) + (xx - centre[1]) * rng.uniform(-1, 1)) / radius
        image[inside] = np.clip(colour * light[inside, None], 0, 255)
        # VOC-style ignore band: the pixels just outside the object, unless another object covers them.
        band = _dilate(inside) & ~inside
        mask[band] = 255
        mask[inside] = class_id
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _dilate(mask):
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def _list_sizes(lists, splits):
    sizes = {}
    for split in splits:
        path = os.path.join(lists, f"{split}.txt")
        sizes[split] = sum(1 for line in open(path) if line.strip()) if os.path.exists(path) else None
    return sizes


def build(root, *, splits=None, seed=0):
    """Writes `<root>/VOCdevkit/VOC2012` (JPEGImages, SegmentationClass, ImageSets/Segmentation).

    Deterministic for a seed. Reuses a complete earlier build with the same split sizes.

    Returns:
        (the VOC2012 folder, whether it was generated now).
    """
    splits = splits or SPLITS
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    lists = os.path.join(voc, "ImageSets", "Segmentation")
    if _list_sizes(lists, splits) == splits:
        return voc, False
    shutil.rmtree(voc, ignore_errors=True)
    rng = np.random.default_rng(seed)
    ids = {}
    for split, count in splits.items():
        ids[split] = [f"{split}_{i:05d}" for i in range(count)]
        for image_id in ids[split]:
            image, mask = make_scene(rng)
            fake.save_image(os.path.join(voc, "JPEGImages", image_id + ".jpg"), image, quality=90)
            fake.save_palette_mask(os.path.join(voc, "SegmentationClass", image_id + ".png"), mask)
    os.makedirs(lists, exist_ok=True)
    # The lists last: their presence marks a complete dataset.
    for split, names in ids.items():
        with open(os.path.join(lists, f"{split}.txt"), "w") as f:
            f.writelines(name + "\n" for name in names)
    return voc, True
