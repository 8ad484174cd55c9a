"""ADE20K SceneParsing (ADEChallengeData2016): 150 classes, "other" ignored.

Layout: `<root>/images/{training,validation}/<name>.jpg` and `<root>/annotations/{training,validation}/
<name>.png`, masks holding the benchmark's ids: 0 "other" (not scored) and 1..150 its classes.

The original release trains on these masks as they are, with 151 classes of which label 0 is ignored
(its data_generator: num_classes=151, ignore_label=0). Here the 150 scored classes keep their order and
move down by one, and "other" becomes the ignore label: stored = benchmark id - 1, 0 -> 255. The loss
and the mIOU over the 150 classes are the same; the network has no output for "other" (the release's
151st logit is never a target).
"""

import functools
import glob
import os

import numpy as np

from deeplab_tf.data import convert, registry
from deeplab_tf.data.validation import DataError, read_index_mask

# split -> the folder name under images/ and annotations/ (the release's split names).
FOLDERS = {"train": "training", "val": "validation"}
NUM_CLASSES = 150  # benchmark ids 1..150


def to_train_ids(benchmark_ids, *, path):
    """Benchmark ids (0 "other", 1..150) -> stored labels: id - 1, and 0 -> 255 (the ignore label).

    Raises:
        DataError: a value above 150, which no ADE20K SceneParsing annotation holds.
    """
    bad = np.unique(benchmark_ids[benchmark_ids > NUM_CLASSES])
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise DataError(f"{path}: mask values {{{shown}}} are not ADE20K SceneParsing ids (0 \"other\", "
                        f"1..{NUM_CLASSES}); use the annotations/ PNGs of ADEChallengeData2016.")
    return benchmark_ids.astype(np.uint8) - np.uint8(1)  # uint8 arithmetic: 0 wraps to 255


def read_ade20k_mask(path):
    """An `annotations/<split>/*.png` -> uint8 stored labels [H, W] (0..149, 255 for "other")."""
    return to_train_ids(read_index_mask(path), path=path)


def find_root(root):
    """`root`, or `root/ADEChallengeData2016` when the user pointed at the folder the zip unpacked in."""
    for candidate in (root, os.path.join(root, "ADEChallengeData2016")):
        if os.path.isdir(os.path.join(candidate, "images")):
            return candidate
    raise DataError(f"{root}: no images/ folder here nor in ADEChallengeData2016/; --ade20k_root must "
                    "be the folder holding images/ and annotations/ (unzipped ADEChallengeData2016.zip).")


def ade20k_samples(root, split):
    """The Samples of one split, sorted by file name."""
    root = find_root(root)
    folder = FOLDERS[split]
    image_dir = os.path.join(root, "images", folder)
    if not os.path.isdir(image_dir):
        raise DataError(f"{image_dir}: not found; --ade20k_root must contain images/{folder} and "
                        f"annotations/{folder}.")
    samples = []
    for image_path in sorted(glob.glob(os.path.join(image_dir, "*.jpg"))):
        name = os.path.splitext(os.path.basename(image_path))[0]
        mask_path = os.path.join(root, "annotations", folder, name + ".png")
        samples.append(convert.Sample(name=name, image_path=image_path, mask_path=mask_path,
                                      read_mask=functools.partial(read_ade20k_mask, mask_path)))
    return samples


def convert_ade20k(ade20k_root, output_dir, *, splits=("train", "val"), num_shards=4, skip_bad=False):
    """Converts ADE20K splits to `<output_dir>/<split>-*.tfrecord` with 150 classes, "other" = 255.

    Splits: train (images/training, 20,210 images) and val (images/validation, 2,000). Returns a
    ConversionSummary.
    """
    unknown = set(splits) - set(FOLDERS)
    if unknown:
        raise DataError(f"unknown ADE20K split(s) {sorted(unknown)}; choose from {sorted(FOLDERS)} "
                        "(the test images have no annotations).")
    info = registry.get_dataset_info("ade20k")
    # Class 0 (wall) next to "other" (255) is an ordinary mask, not a binary one saved as 0/255.
    return convert.convert_splits(
        {split: ade20k_samples(ade20k_root, split) for split in splits},
        output_dir=output_dir, num_classes=info.num_classes, ignore_label=info.ignore_label,
        num_shards=num_shards, skip_bad=skip_bad, binary_check=False)
