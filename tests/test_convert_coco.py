"""build_coco_voc_data: COCO images with VOC objects > 1,000 pixels -> 21-class VOC masks."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

from deeplab_tf.data import fake, tfrecord
from deeplab_tf.data.sources import coco

H, W = 60, 80
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"},
              {"id": 63, "name": "couch"}, {"id": 72, "name": "tv"},
              {"id": 73, "name": "laptop"}]


def _box(top, bottom, left, right):
    region = np.zeros((H, W), np.uint8)
    region[top:bottom, left:right] = 1
    return region


def _rle(region):
    rle = mask_utils.encode(np.asfortranarray(region))
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(region):
    flat = region.ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return {"size": [H, W], "counts": ([0] if flat[0] else []) + runs}


def _annotation(image_id, category_id, segmentation, area, iscrowd=0):
    return {"id": image_id * 10 + category_id, "image_id": image_id, "category_id": category_id,
            "segmentation": segmentation, "area": area, "iscrowd": iscrowd,
            "bbox": [0, 0, 1, 1]}


@pytest.fixture(scope="module")
def coco_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("coco"))
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": H, "width": W}
              for i in range(1, 6)]
    annotations = [
        # 1: a person (1,600 px) with a small tv polygon on it, and a laptop -> kept.
        _annotation(1, 1, _rle(_box(5, 45, 5, 45)), 1600),
        _annotation(1, 72, [[10, 10, 20, 10, 20, 20, 10, 20]], 100),
        _annotation(1, 73, _rle(_box(50, 60, 50, 80)), 300),
        # 2: only a 500 px dog -> dropped.  3: only a large laptop -> dropped.
        _annotation(2, 18, _rle(_box(0, 20, 0, 25)), 500),
        _annotation(3, 73, _rle(_box(0, 60, 0, 80)), 4800),
        # 4: a couch (2,000 px, uncompressed RLE) in front of a crowd of people -> kept.
        _annotation(4, 63, _uncompressed_rle(_box(10, 50, 10, 60)), 2000),
        _annotation(4, 1, _uncompressed_rle(_box(0, 30, 0, 80)), 2400, iscrowd=1),
        # 5: only a crowd -> dropped (crowds do not count as annotated regions).
        _annotation(5, 1, _uncompressed_rle(_box(0, 60, 0, 80)), 4800, iscrowd=1),
    ]
    instances, image_dir, arrays = fake.make_coco(root, images=images, annotations=annotations,
                                                  categories=CATEGORIES)
    output = os.path.join(root, "tfrecords")
    summary = coco.convert_coco_voc(instances, image_dir, output, num_shards=2)
    labels = {}
    for serialized in tf.data.TFRecordDataset(sorted(glob.glob(output + "/train-*"))):
        example = tfrecord.parse_example(serialized)
        labels[example["filename"].numpy().decode()] = example["label"].numpy()
    return dict(instances=instances, image_dir=image_dir, summary=summary, labels=labels)


def test_keeps_images_with_a_large_non_crowd_voc_object(coco_data):
    assert coco_data["summary"].records == {"train": 2}
    assert sorted(coco_data["labels"]) == ["000000000001", "000000000004"]


def test_voc_classes_painted_largest_first_other_classes_background(coco_data):
    label = coco_data["labels"]["000000000001"]
    assert set(np.unique(label)) == {0, 15, 20}  # the laptop is background
    assert (label[30:45, 30:45] == 15).all()  # person
    assert (label[12:19, 12:19] == 20).all()  # the smaller tv stays on top of the person
    assert (label[50:60, 50:80] == 0).all()


def test_crowds_are_ignored_under_the_instances(coco_data):
    expected = np.zeros((H, W), np.uint8)
    expected[_box(0, 30, 0, 80) == 1] = 255
    expected[_box(10, 50, 10, 60) == 1] = 18  # couch -> sofa
    np.testing.assert_array_equal(coco_data["labels"]["000000000004"], expected)


def test_min_region_pixels(coco_data):
    names = lambda pixels: [s.name for s in coco.coco_voc_samples(
        coco_data["instances"], coco_data["image_dir"], min_region_pixels=pixels)]
    assert names(1500) == ["000000000001", "000000000004"]
    assert names(1700) == ["000000000004"]
    assert names(400) == ["000000000001", "000000000002", "000000000004"]
