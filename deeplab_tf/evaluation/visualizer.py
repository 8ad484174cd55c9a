"""Segmenting a folder of images or a TFRecord split and writing the predictions as PNGs (deeplab-vis).

Each prediction is written by `visualization.save_prediction`: the raw class indices (what an
official evaluation server wants), the colourised label map and an overlay on the image.
"""

import os

import numpy as np

from deeplab_tf import visualization
from deeplab_tf.data import eval_dataset, faults, image_io
from deeplab_tf.data.errors import DataError
from deeplab_tf.evaluation.evaluator import canvas_options, count_examples
from deeplab_tf.evaluation.segment import fits_crop, read_rgb_image, segment

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_files(image_dir, *, exclude=None):
    """Paths of the images under `image_dir` (sub-folders too, except the folder `exclude`), sorted,
    relative to it.

    Raises:
        FileNotFoundError: `image_dir` is not a folder.
        ValueError: it holds no image.
        DataError: two images would write the same PNG (same name, other extension).
    """
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"{image_dir} is not a folder; give a folder of images.")
    excluded = os.path.realpath(exclude) if exclude else None
    paths = []
    for root, folders, names in os.walk(image_dir):
        folders[:] = [f for f in folders if os.path.realpath(os.path.join(root, f)) != excluded]
        # "._photo.jpg": the metadata macOS writes beside each file on a non-Mac disk, not an image.
        paths += [os.path.relpath(os.path.join(root, name), image_dir) for name in names
                  if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("._")]
    paths.sort()
    if not paths:
        raise ValueError(f"{image_dir} holds no image ({', '.join(IMAGE_EXTENSIONS)}).")
    for stem, group in image_io.group_by_stem(paths).items():
        if len(group) > 1:  # both would be written as <stem>.png
            raise DataError(image_io.same_stem_message([os.path.join(image_dir, p) for p in group]))
    return paths


def read_image_ids(path):
    """The image ids listed in a text file, one a line (as VOC's ImageSets/Segmentation/test.txt).

    Raises:
        FileNotFoundError: no such file.
        ValueError: it lists no id.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--image_ids={path}: no such file; give a text file of image ids, one "
                                "a line, such as VOC2012/ImageSets/Segmentation/test.txt.")
    with open(path, encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f"--image_ids={path} lists no image id.")
    return ids


def select_ids(paths, image_ids, image_dir):
    """The paths of `paths` (relative, with extension) whose name without extension is in `image_ids`
    (ids with an image extension count without it), in the ids' order.

    Raises:
        DataError: an id has no image (the message names it and how many are missing).
    """
    by_stem = {os.path.splitext(path)[0]: path for path in paths}
    # "2008_000001.jpg" names the same image as VOC's "2008_000001".
    image_ids = [os.path.splitext(i)[0] if i.lower().endswith(IMAGE_EXTENSIONS) else i for i in image_ids]
    missing = [image_id for image_id in image_ids if image_id not in by_stem]
    if missing:
        raise DataError(f"{image_dir} holds no image for {len(missing)} of the {len(image_ids)} listed "
                        f"ids (e.g. {missing[0]}); give the folder the id list belongs to.")
    return [by_stem[image_id] for image_id in dict.fromkeys(image_ids)]


def folder_examples(image_dir, image_ids=None, *, exclude=None):
    """(number of images, iterator of (name without extension, uint8 RGB image)) of a folder, or of
    the images in it named by `image_ids` (a list of names without extension); the folder `exclude` (the
    output folder) is not read."""
    paths = image_files(image_dir, exclude=exclude)
    if image_ids is not None:
        paths = select_ids(paths, image_ids, image_dir)
    examples = ((os.path.splitext(path)[0], read_rgb_image(os.path.join(image_dir, path)))
                for path in paths)
    return len(paths), examples


def split_examples(file_pattern):
    """(number of images, iterator of (image/filename, uint8 RGB image)) of a TFRecord split; a truncated or
    undecodable shard is named with the fix (`faults.naming_faulty_records`; the labels are not used)."""
    def examples():
        with faults.naming_faulty_records(file_pattern):
            for example in eval_dataset(file_pattern):
                yield example["filename"][0].numpy().decode("utf-8"), example["image"][0].numpy().astype(np.uint8)

    return count_examples(file_pattern), examples()


def predictions(model, examples, *, scales=(1.0,), flip=False, window_size=None, eval_crop_size=None,
                total=None, progress=None, log=None):
    """Segments each image: yields (name, image, label map at the image's size) in order.

    Args:
        model: the segmentation model (see `inference.predict`).
        examples: iterable of (name, uint8 RGB image [H, W, 3]).
        scales, flip, window_size, eval_crop_size: inference options, see `inference.predict`; an image
            larger than `eval_crop_size` is segmented on `inference.canvas_for`'s grown canvas, as the
            served model does.
        total: number of examples, for `progress`.
        progress: optional callable ``progress(images_done, total)`` after each image.
        log: optional callable given a line naming each image larger than `eval_crop_size` and its canvas.
    """
    for done, (name, image) in enumerate(examples, start=1):
        if log and not fits_crop(image, eval_crop_size):  # segment grows the canvas the same way
            canvas = canvas_options(model, image[np.newaxis], eval_crop_size, grow_canvas=True)["eval_crop_size"]
            log(f"image {name!r} is {image.shape[0]}x{image.shape[1]}, larger than the eval crop "
                f"{eval_crop_size[0]}x{eval_crop_size[1]} (--eval_crop_size): segmented on a "
                f"{'x'.join(str(side) for side in canvas.numpy())} canvas (sides grown to output_stride * k + 1)")
        yield name, image, segment(model, image, scales=scales, flip=flip, window_size=window_size,
                                   eval_crop_size=eval_crop_size)
        if progress:
            progress(done, total)


def visualize(model, examples, output_dir, *, colormap, train_id_to_label_id=False, **options):
    """Segments each image and writes its index, colour and overlay PNGs under `output_dir`.

    Args:
        model: the segmentation model (see `inference.predict`).
        examples: iterable of (name, uint8 RGB image [H, W, 3]); files are written as
            ``<output_dir>/{index,color,overlay}/<name>.png``, at the image's size.
        output_dir: root folder of the PNGs.
        colormap: anything `visualization.get_colormap` accepts.
        train_id_to_label_id: write the index PNGs as Cityscapes label ids.
        **options: inference options, `total` and `progress`, see `predictions`.

    Returns:
        The number of images written.
    """
    done = 0
    for name, image, label in predictions(model, examples, **options):
        visualization.save_prediction(output_dir, name, image, label, colormap=colormap,
                                      train_id_to_label_id=train_id_to_label_id)
        done += 1
    return done
