"""build_voc2012_data: VOC 2012 palette masks and SBD .mat masks -> train/val/trainval/trainaug."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_tf.data import fake, tfrecord
from deeplab_tf.data.sources import voc
from deeplab_tf.data.validation import DataError

IDS = [f"2008_{i:06d}" for i in range(6)]


def _records(pattern):
    """{filename: (image uint8, label uint8)} of every record matching `pattern`."""
    out = {}
    for serialized in tf.data.TFRecordDataset(sorted(glob.glob(pattern))):
        example = tfrecord.parse_example(serialized)
        out[example["filename"].numpy().decode()] = (example["image"].numpy(),
                                                     example["label"].numpy())
    return out


@pytest.fixture(scope="module")
def voc_data(tmp_path_factory):
    """VOC: train = ids 0-2, val = 3-4, trainval = 0-4; SBD: train = 1-3 + 5, val = 4.
    trainaug = (VOC train + SBD train + SBD val) - VOC val = ids 0, 1, 2, 5."""
    root = str(tmp_path_factory.mktemp("voc"))
    rng = np.random.default_rng(0)
    voc_masks = {i: fake.random_mask(rng, 30 + n, 40, class_ids=list(range(1, 21)))
                 for n, i in enumerate(IDS[:5])}
    images = fake.make_voc(os.path.join(root, "VOCdevkit"), masks=voc_masks,
                           splits={"train": IDS[:3], "val": IDS[3:5], "trainval": IDS[:5]})
    # SBD masks differ from VOC's (no borders, only class 2) so the test sees which one is used.
    sbd_masks = {i: fake.random_mask(rng, 30 + n, 40, class_ids=[2], ignore_border=False)
                 for n, i in enumerate(IDS) if n >= 1}
    images = fake.make_sbd(root, masks=sbd_masks, images=images,
                           splits={"train": IDS[1:4] + IDS[5:], "val": IDS[4:5]})
    output = os.path.join(root, "tfrecords")
    summary = voc.convert_voc2012(os.path.join(root, "VOCdevkit"), output, num_shards=2,
                                  sbd_root=os.path.join(root, "benchmark_RELEASE"))
    return dict(root=root, output=output, summary=summary, voc_masks=voc_masks,
                sbd_masks=sbd_masks, images=images)


def test_splits_and_shards(voc_data):
    assert voc_data["summary"].records == {"train": 3, "val": 2, "trainval": 5, "trainaug": 4}
    assert sorted(os.listdir(voc_data["output"])) == sorted(
        f"{s}-{i:05d}-of-00002.tfrecord" for s in ("train", "val", "trainval", "trainaug")
        for i in range(2))


def test_trainaug_is_voc_and_sbd_minus_voc_val_with_voc_masks_first(voc_data):
    records = _records(os.path.join(voc_data["output"], "trainaug-*"))
    assert sorted(records) == [IDS[0], IDS[1], IDS[2], IDS[5]]
    for image_id, (_, label) in records.items():
        source = voc_data["voc_masks"] if image_id in IDS[:3] else voc_data["sbd_masks"]
        np.testing.assert_array_equal(label, source[image_id])


def test_records_read_back_to_the_same_pixels(voc_data):
    for image_id, (image, label) in _records(os.path.join(voc_data["output"], "val-*")).items():
        jpeg = os.path.join(voc_data["root"], "VOCdevkit", "VOC2012", "JPEGImages",
                            image_id + ".jpg")
        # The JPEG is stored untouched, so training decodes the very pixels of the file.
        with open(jpeg, "rb") as f:
            np.testing.assert_array_equal(image, tf.io.decode_jpeg(f.read()).numpy())
        np.testing.assert_array_equal(label, voc_data["voc_masks"][image_id])


def test_palette_masks_are_read_as_indices_not_colours(voc_data):
    path = os.path.join(voc_data["root"], "VOCdevkit", "VOC2012", "SegmentationClass",
                        IDS[0] + ".png")
    assert Image.open(path).mode == "P"
    _, label = _records(os.path.join(voc_data["output"], "train-*"))[IDS[0]]
    assert set(np.unique(label)) <= set(range(21)) | {255}
    np.testing.assert_array_equal(label, voc_data["voc_masks"][IDS[0]])


def test_histogram_counts_every_pixel(voc_data):
    split = voc_data["summary"].splits["val"]
    expected = sum(np.bincount(voc_data["voc_masks"][i].ravel(), minlength=256) for i in IDS[3:5])
    np.testing.assert_array_equal(split.histogram, expected)


def test_trainaug_size_is_checked_on_the_released_lists(voc_data, monkeypatch):
    # Pretend the tiny lists are the released ones: then 4 != 10,582 must stop the conversion.
    monkeypatch.setattr(voc, "_RELEASED_LIST_SIZES", (3, 2, 4, 1))
    with pytest.raises(DataError, match="trainaug has 4 images, expected 10582"):
        voc.trainaug_samples(os.path.join(voc_data["root"], "VOCdevkit"),
                             os.path.join(voc_data["root"], "benchmark_RELEASE"))


def test_trainaug_without_sbd_is_a_clear_error(voc_data, tmp_path):
    with pytest.raises(DataError, match="--sbd_root"):
        voc.convert_voc2012(os.path.join(voc_data["root"], "VOCdevkit"), str(tmp_path),
                            splits=["trainaug"])
