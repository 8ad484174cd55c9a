"""Tiny datasets in the real on-disk layouts (VOC, SBD, Cityscapes, COCO, a plain folder).

Tests, the input benchmark and the demo build them on the fly, since nothing is downloaded.
Images are real JPEG/PNG files, VOC masks palette PNGs, SBD masks MATLAB .mat files.
"""

import json
import os
import zipfile

import numpy as np
import scipy.io
from PIL import Image

from deeplab_tf import visualization


def random_image(rng, height, width):
    """A smooth uint8 RGB image with some noise (compresses like a photo, not like noise)."""
    y, x = np.mgrid[0:height, 0:width]
    phase = rng.uniform(0, 2 * np.pi, size=3)
    base = [127 + 100 * np.sin(x / (7 + 5 * c) + y / (11 + 3 * c) + phase[c]) for c in range(3)]
    image = np.stack(base, axis=-1) + rng.normal(0, 8, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def random_mask(rng, height, width, *, class_ids, num_objects=3, ignore_border=True):
    """Background (0) with `num_objects` rectangles of classes drawn from `class_ids`, outlined by
    the ignore label 255 like VOC's object borders."""
    mask = np.zeros((height, width), np.uint8)
    for _ in range(num_objects):
        top, bottom = sorted(rng.integers(0, height, size=2))
        left, right = sorted(rng.integers(0, width, size=2))
        if ignore_border:
            mask[max(top - 1, 0):bottom + 2, max(left - 1, 0):right + 2] = 255
        mask[top:bottom + 1, left:right + 1] = rng.choice(class_ids)
    return mask


def _makedirs_for(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def save_image(path, image, **kwargs):
    """Saves an array (format from the extension: JPEG, PNG, ...)."""
    Image.fromarray(image).save(_makedirs_for(path), **kwargs)


def save_palette_mask(path, mask):
    """A 'P'-mode PNG with VOC's palette: index i is shown in colour i, as SegmentationClass."""
    image = Image.fromarray(mask).convert("P")
    image.putpalette(visualization.get_colormap("pascal").ravel().tolist())
    image.save(_makedirs_for(path))


def make_voc(root, *, masks, splits, seed=0):
    """`root/VOC2012` with JPEGImages, palette SegmentationClass PNGs and ImageSets lists.

    masks: {image id: uint8 mask}; splits: {"train": [ids], "val": [ids], ...}.
    Returns {image id: image array}.
    """
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, "VOC2012")
    images = {}
    for image_id, mask in masks.items():
        images[image_id] = random_image(rng, *mask.shape)
        save_image(os.path.join(voc, "JPEGImages", image_id + ".jpg"), images[image_id],
                   quality=95)
        save_palette_mask(os.path.join(voc, "SegmentationClass", image_id + ".png"), mask)
    for split, ids in splits.items():
        path = _makedirs_for(os.path.join(voc, "ImageSets", "Segmentation", split + ".txt"))
        with open(path, "w") as f:
            f.writelines(i + "\n" for i in ids)
    return images


def make_sbd(root, *, masks, splits, images=None, seed=1):
    """`root/benchmark_RELEASE/dataset` with cls/*.mat (GTcls.Segmentation), img/*.jpg and
    train.txt / val.txt. Images missing from `images` are generated."""
    rng = np.random.default_rng(seed)
    dataset = os.path.join(root, "benchmark_RELEASE", "dataset")
    images = dict(images or {})
    for image_id, mask in masks.items():
        if image_id not in images:
            images[image_id] = random_image(rng, *mask.shape)
        save_image(os.path.join(dataset, "img", image_id + ".jpg"), images[image_id], quality=95)
        classes = np.setdiff1d(np.unique(mask), [0, 255]).astype(np.uint8)
        scipy.io.savemat(_makedirs_for(os.path.join(dataset, "cls", image_id + ".mat")), {
            "GTcls": {"Segmentation": mask, "CategoriesPresent": classes,
                      "Boundaries": np.zeros((20, 1), dtype=object)}})
    for split, ids in splits.items():
        with open(os.path.join(dataset, split + ".txt"), "w") as f:
            f.writelines(i + "\n" for i in ids)
    return images


def make_cityscapes(root, *, label_ids, seed=2):
    """`root/{leftImg8bit, gtFine|gtCoarse}/<split>/<city>/...` PNGs.

    label_ids: {(split, image id, "gtFine"|"gtCoarse"): uint8 labelIds mask}, image ids like
    "aachen_000000_000019". Returns {image id: image array}.
    """
    rng = np.random.default_rng(seed)
    images = {}
    for (split, image_id, annotations), mask in label_ids.items():
        city = image_id.split("_")[0]
        images[image_id] = random_image(rng, *mask.shape)
        save_image(os.path.join(root, "leftImg8bit", split, city, image_id + "_leftImg8bit.png"),
                   images[image_id])
        save_image(os.path.join(root, annotations, split, city,
                                f"{image_id}_{annotations}_labelIds.png"), mask)
    return images


def zip_cityscapes(root, manual_dir):
    """Zips a `make_cityscapes` tree as the official downloads tfds' builder reads from its
    manual_dir: leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip."""
    os.makedirs(manual_dir, exist_ok=True)
    for archive, folder in (("leftImg8bit_trainvaltest.zip", "leftImg8bit"),
                            ("gtFine_trainvaltest.zip", "gtFine")):
        with zipfile.ZipFile(os.path.join(manual_dir, archive), "w") as z:
            for directory, _, files in os.walk(os.path.join(root, folder)):
                for name in files:
                    path = os.path.join(directory, name)
                    z.write(path, os.path.relpath(path, root))


def make_coco(root, *, images, annotations, categories, seed=3):
    """`root/images/*.jpg` and `root/instances.json`.

    images: [{"id", "file_name", "height", "width"}]; annotations and categories in COCO's
    format. Returns (instances json path, image dir, {file name: image array}).
    """
    rng = np.random.default_rng(seed)
    image_dir = os.path.join(root, "images")
    arrays = {}
    for image in images:
        arrays[image["file_name"]] = random_image(rng, image["height"], image["width"])
        save_image(os.path.join(image_dir, image["file_name"]), arrays[image["file_name"]],
                   quality=95)
    instances = os.path.join(root, "instances.json")
    with open(instances, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return instances, image_dir, arrays


def make_folder(root, *, masks, image_ext=".jpg", seed=4, color_palette=None):
    """`root/images/<name><image_ext>` and `root/masks/<name>.png`.

    Masks are greyscale class ids, or RGB colours `color_palette[id]` when it is given.
    Returns (image dir, mask dir, {name: image array}).
    """
    rng = np.random.default_rng(seed)
    image_dir, mask_dir = os.path.join(root, "images"), os.path.join(root, "masks")
    images = {}
    for name, mask in masks.items():
        images[name] = random_image(rng, *mask.shape)
        save_image(os.path.join(image_dir, name + image_ext), images[name])
        if color_palette is not None:
            mask = np.asarray(color_palette, np.uint8)[mask]
        save_image(os.path.join(mask_dir, name + ".png"), mask)
    return image_dir, mask_dir, images
