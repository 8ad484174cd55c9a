"""Cityscapes: leftImg8bit + gtFine (train, val) and gtCoarse (train_extra) -> 19 train ids.

Layout: `<root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png` and
`<root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png` (gtCoarse likewise).
Every labelId outside the 19 evaluated classes becomes the ignore label.
"""

import functools
import glob
import os

import numpy as np

from deeplab_tf.data import cityscapes_labels, convert, registry
from deeplab_tf.data.validation import DataError, read_index_mask

# split -> annotation folder: the paper's "train fine" set and the coarse "train_extra" set.
ANNOTATIONS = {"train": "gtFine", "val": "gtFine", "train_extra": "gtCoarse"}
_IMAGE_SUFFIX = "_leftImg8bit.png"
_LOOKUP = np.asarray(cityscapes_labels.label_id_lookup_table(), dtype=np.uint8)


def read_train_id_mask(path):
    """A `*_labelIds.png` -> uint8 train ids [H, W] (255 for everything not evaluated)."""
    return _LOOKUP[read_index_mask(path)]


def cityscapes_samples(root, split):
    """The Samples of one split, sorted by city and frame."""
    annotations = ANNOTATIONS[split]
    image_dir = os.path.join(root, "leftImg8bit", split)
    if not os.path.isdir(image_dir):
        raise DataError(f"{image_dir}: not found; --cityscapes_root must contain "
                        f"leftImg8bit/{split} (from leftImg8bit_trainvaltest.zip or "
                        "leftImg8bit_trainextra.zip).")
    samples = []
    for image_path in sorted(glob.glob(os.path.join(image_dir, "*", "*" + _IMAGE_SUFFIX))):
        city = os.path.basename(os.path.dirname(image_path))
        image_id = os.path.basename(image_path)[:-len(_IMAGE_SUFFIX)]
        mask_path = os.path.join(root, annotations, split, city,
                                 f"{image_id}_{annotations}_labelIds.png")
        samples.append(convert.Sample(name=image_id, image_path=image_path, mask_path=mask_path,
                                      read_mask=functools.partial(read_train_id_mask, mask_path)))
    return samples


def convert_cityscapes(cityscapes_root, output_dir, *, splits=("train", "val"), num_shards=10,
                       skip_bad=False):
    """Converts Cityscapes splits to `<output_dir>/<split>-*.tfrecord` with 19 train ids.

    Splits: train and val (fine annotations), train_extra (coarse). Returns a ConversionSummary.
    """
    unknown = set(splits) - set(ANNOTATIONS)
    if unknown:
        raise DataError(f"unknown Cityscapes split(s) {sorted(unknown)}; choose from "
                        f"{sorted(ANNOTATIONS)}.")
    info = registry.get_dataset_info("cityscapes")
    # 0 is road here and 255 the void classes, so {0, 255} is a legitimate (coarse) mask.
    return convert.convert_splits(
        {split: cityscapes_samples(cityscapes_root, split) for split in splits},
        output_dir=output_dir, num_classes=info.num_classes, ignore_label=info.ignore_label,
        num_shards=num_shards, skip_bad=skip_bad, binary_check=False)
