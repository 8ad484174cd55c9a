"""build_cityscapes_data: labelIds (gtFine, gtCoarse) -> the 19 train ids, everything else 255."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.data import cityscapes_labels, fake, tfrecord
from deeplab_tf.data.sources import cityscapes
from deeplab_tf.data.validation import DataError

# labelIds: 7 road -> 0, 26 car -> 13, 33 bicycle -> 18, 24 person -> 11; 0 unlabeled,
# 3 out of roi, 9 parking (not evaluated) -> 255.
LABEL_IDS = (7, 26, 33, 24, 0, 3, 9)


def _label_ids(seed, height=16, width=32):
    return np.random.default_rng(seed).choice(LABEL_IDS, size=(height, width)).astype(np.uint8)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cityscapes"))
    label_ids = {
        ("train", "aachen_000000_000019", "gtFine"): _label_ids(0),
        ("train", "bochum_000000_000313", "gtFine"): _label_ids(1),
        ("val", "frankfurt_000000_000294", "gtFine"): _label_ids(2),
        ("train_extra", "augsburg_000000_000000", "gtCoarse"): _label_ids(3),
    }
    images = fake.make_cityscapes(root, label_ids=label_ids)
    output = os.path.join(root, "tfrecords")
    summary = cityscapes.convert_cityscapes(root, output, splits=("train", "val", "train_extra"),
                                            num_shards=10)
    return dict(root=root, output=output, summary=summary, label_ids=label_ids, images=images)


def test_splits_and_shard_count_capped_by_images(converted):
    assert converted["summary"].records == {"train": 2, "val": 1, "train_extra": 1}
    assert sorted(os.listdir(converted["output"])) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
        "train_extra-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord"]


def test_labels_are_train_ids_and_images_exact(converted):
    lookup = np.asarray(cityscapes_labels.label_id_lookup_table())
    by_name = {image_id: mask for (_, image_id, _), mask in converted["label_ids"].items()}
    seen = set()
    for path in sorted(glob.glob(os.path.join(converted["output"], "*.tfrecord"))):
        for serialized in tf.data.TFRecordDataset(path):
            example = tfrecord.parse_example(serialized)
            name = example["filename"].numpy().decode()
            label = example["label"].numpy()
            np.testing.assert_array_equal(label, lookup[by_name[name]])
            np.testing.assert_array_equal(example["image"].numpy(), converted["images"][name])
            seen |= set(np.unique(label).tolist())
    assert seen == {0, 11, 13, 18, 255}


def test_missing_split_folder(converted):
    with pytest.raises(DataError, match=r"unknown Cityscapes split\(s\) \['test'\]"):
        cityscapes.convert_cityscapes(converted["root"], converted["output"], splits=("test",))
    with pytest.raises(DataError, match="leftImg8bit/val.*not found"):
        cityscapes.convert_cityscapes(os.path.join(converted["root"], "gtFine"),
                                      converted["output"], splits=("val",))
