"""PASCAL VOC 2012 segmentation and its SBD augmentation (`trainaug`, section 4 of the paper).

VOC layout: `VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/*.txt}`;
SBD layout: `benchmark_RELEASE/dataset/{img, cls/*.mat, train.txt, val.txt}`.
trainaug = (VOC train + SBD train + SBD val) - VOC val: 10,582 images on the real data.
"""

import functools
import os

import numpy as np
import scipy.io

from deeplab_tf.data import convert, registry
from deeplab_tf.data.validation import DataError, read_index_mask

VOC_SPLITS = ("train", "val", "trainval")
TRAINAUG = "trainaug"
TRAINAUG_SIZE = 10582
# (VOC train, VOC val, SBD train, SBD val) on the released data; trainaug is checked only then.
_RELEASED_LIST_SIZES = (1464, 1449, 8498, 2857)


def _find_root(root, marker, nested):
    """`root`, or `root/nested` when the user pointed one level up (VOCdevkit, benchmark_RELEASE)."""
    for candidate in (root, os.path.join(root, nested)):
        if os.path.isdir(os.path.join(candidate, marker)):
            return candidate
    raise DataError(f"{root}: no {marker}/ here nor in {nested}/; point to the folder that "
                    f"contains {marker}/.")


def _read_ids(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: split list not found; check the dataset root.") from None


def read_sbd_mask(path):
    """An SBD `cls/*.mat` file -> uint8 class ids [H, W] (its GTcls.Segmentation field)."""
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        segmentation = mat["GTcls"].Segmentation
    except FileNotFoundError:
        raise DataError(f"{path}: SBD mask not found; check --sbd_root.") from None
    except (KeyError, AttributeError, ValueError, TypeError, OSError) as e:
        raise DataError(f"{path}: not an SBD class mask (GTcls.Segmentation): {e}; "
                        "use the files from benchmark_RELEASE/dataset/cls.") from None
    return np.asarray(segmentation, dtype=np.uint8)


def _voc_sample(voc_root, image_id):
    mask_path = os.path.join(voc_root, "SegmentationClass", image_id + ".png")
    return convert.Sample(name=image_id,
                          image_path=os.path.join(voc_root, "JPEGImages", image_id + ".jpg"),
                          mask_path=mask_path,
                          read_mask=functools.partial(read_index_mask, mask_path))


def _sbd_sample(voc_root, sbd_root, image_id):
    image_path = os.path.join(voc_root, "JPEGImages", image_id + ".jpg")
    if not os.path.exists(image_path):
        image_path = os.path.join(sbd_root, "img", image_id + ".jpg")
    mask_path = os.path.join(sbd_root, "cls", image_id + ".mat")
    return convert.Sample(name=image_id, image_path=image_path, mask_path=mask_path,
                          read_mask=functools.partial(read_sbd_mask, mask_path))


def voc2012_samples(voc_root, split):
    """The Samples of an official VOC 2012 segmentation split."""
    voc_root = _find_root(voc_root, "ImageSets", "VOC2012")
    ids = _read_ids(os.path.join(voc_root, "ImageSets", "Segmentation", split + ".txt"))
    return [_voc_sample(voc_root, i) for i in ids]


def trainaug_samples(voc_root, sbd_root):
    """trainaug = (VOC train + SBD train + SBD val) - VOC val, VOC's own mask preferred.

    On the released lists the result must hold 10,582 images, else DataError.
    """
    voc_root = _find_root(voc_root, "ImageSets", "VOC2012")
    sbd_root = _find_root(sbd_root, "cls", "dataset")
    lists = [_read_ids(os.path.join(voc_root, "ImageSets", "Segmentation", s + ".txt"))
             for s in ("train", "val")]
    lists += [_read_ids(os.path.join(sbd_root, s + ".txt")) for s in ("train", "val")]
    voc_train, voc_val, sbd_train, sbd_val = lists
    ids = sorted(set(voc_train).union(sbd_train, sbd_val) - set(voc_val))
    if tuple(len(ids_) for ids_ in lists) == _RELEASED_LIST_SIZES and len(ids) != TRAINAUG_SIZE:
        raise DataError(f"trainaug has {len(ids)} images, expected {TRAINAUG_SIZE} from the released "
                        f"VOC and SBD lists; check {voc_root} and {sbd_root}.")
    voc_train = set(voc_train)
    return [_voc_sample(voc_root, i) if i in voc_train else _sbd_sample(voc_root, sbd_root, i)
            for i in ids]


def convert_voc2012(voc_root, output_dir, *, splits=None, num_shards=4, sbd_root=None,
                    skip_bad=False):
    """Converts VOC 2012 (and trainaug with SBD) to `<output_dir>/<split>-*.tfrecord`.

    `splits` defaults to train, val, trainval, plus trainaug when `sbd_root` is given.
    Returns a convert.ConversionSummary.
    """
    if splits is None:
        splits = VOC_SPLITS + ((TRAINAUG,) if sbd_root else ())
    samples = {}
    for split in splits:
        if split == TRAINAUG:
            if not sbd_root:
                raise DataError("trainaug needs the SBD annotations: pass sbd_root "
                                "(--sbd_root=.../benchmark_RELEASE).")
            samples[split] = trainaug_samples(voc_root, sbd_root)
        elif split in VOC_SPLITS:
            samples[split] = voc2012_samples(voc_root, split)
        else:
            raise DataError(f"unknown VOC split {split!r}; choose from "
                            f"{VOC_SPLITS + (TRAINAUG,)}.")
    info = registry.get_dataset_info("pascal_voc_seg")
    return convert.convert_splits(samples, output_dir=output_dir, num_classes=info.num_classes,
                                  ignore_label=info.ignore_label, num_shards=num_shards,
                                  skip_bad=skip_bad)
