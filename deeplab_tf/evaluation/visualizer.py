"""Segmenting a folder of images or a TFRecord split and writing the predictions as PNGs (deeplab-vis).

Each prediction is written by `visualization.save_prediction`: the raw class indices (what an
official evaluation server wants), the colourised label map and an overlay on the image.
"""

import os

import numpy as np

from deeplab_tf import visualization
from deeplab_tf.data import eval_dataset, image_io
from deeplab_tf.data.errors import DataError
from deeplab_tf.evaluation.evaluator import count_examples
from deeplab_tf.evaluation.segment import read_rgb_image, segment

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_files(image_dir):
    """Paths of the images under `image_dir` (sub-folders too), sorted, relative to it.

    Raises:
        FileNotFoundError: `image_dir` is not a folder.
        ValueError: it holds no image.
        DataError: two images would write the same PNG (same name, other extension).
    """
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"{image_dir} is not a folder; give a folder of images.")
    paths = sorted(
        os.path.relpath(os.path.join(root, name), image_dir)
        for root, _, names in os.walk(image_dir) for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise ValueError(f"{image_dir} holds no image ({', '.join(IMAGE_EXTENSIONS)}).")
    for stem, group in image_io.group_by_stem(paths).items():
        if len(group) > 1:  # both would be written as <stem>.png
            raise DataError(image_io.same_stem_message([os.path.join(image_dir, p) for p in group]))
    return paths


def folder_examples(image_dir):
    """(number of images, iterator of (name without extension, uint8 RGB image)) of a folder."""
    paths = image_files(image_dir)
    examples = ((os.path.splitext(path)[0], read_rgb_image(os.path.join(image_dir, path)))
                for path in paths)
    return len(paths), examples


def split_examples(file_pattern):
    """(number of images, iterator of (image/filename, uint8 RGB image)) of a TFRecord split."""
    examples = ((example["filename"][0].numpy().decode("utf-8"),
                 example["image"][0].numpy().astype(np.uint8))
                for example in eval_dataset(file_pattern))
    return count_examples(file_pattern), examples


def visualize(model, examples, output_dir, *, colormap, scales=(1.0,), flip=False,
              window_size=None, eval_crop_size=None, train_id_to_label_id=False, total=None, progress=None):
    """Segments each image and writes its index, colour and overlay PNGs under `output_dir`.

    Args:
        model: the segmentation model (see `inference.predict`).
        examples: iterable of (name, uint8 RGB image [H, W, 3]); files are written as
            ``<output_dir>/{index,color,overlay}/<name>.png``, at the image's size.
        output_dir: root folder of the PNGs.
        colormap: anything `visualization.get_colormap` accepts.
        scales, flip, window_size, eval_crop_size: inference options, see `inference.predict`.
        train_id_to_label_id: write the index PNGs as Cityscapes label ids.
        total: number of examples, for `progress`.
        progress: optional callable ``progress(images_done, total)`` after each image.

    Returns:
        The number of images written.
    """
    done = 0
    for name, image in examples:
        label = segment(model, image, scales=scales, flip=flip, window_size=window_size,
                        eval_crop_size=eval_crop_size)
        visualization.save_prediction(output_dir, name, image, label, colormap=colormap,
                                      train_id_to_label_id=train_id_to_label_id)
        done += 1
        if progress:
            progress(done, total)
    return done
