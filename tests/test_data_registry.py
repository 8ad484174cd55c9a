"""Dataset registry: built-in datasets, user datasets from a spec."""

import json

import pytest

from deeplab_tf.data import DatasetInfo, dataset_info_from_spec, get_dataset_info, register_dataset
from deeplab_tf.data.registry import PASCAL_VOC_HARD_CLASSES


def test_builtin_datasets_carry_the_paper_split_sizes():
    voc = get_dataset_info("pascal_voc_seg")
    assert (voc.num_classes, voc.ignore_label, voc.colormap) == (21, 255, "pascal")
    assert voc.splits == {"train": 1464, "val": 1449, "trainval": 2913, "trainaug": 10582}
    assert voc.class_names[0] == "background" and voc.class_names[20] == "tvmonitor"
    assert [voc.class_names[i] for i in PASCAL_VOC_HARD_CLASSES] == [
        "bicycle", "chair", "diningtable", "pottedplant", "sofa"]
    cityscapes = get_dataset_info("cityscapes")
    assert cityscapes.num_classes == 19 and cityscapes.class_names[18] == "bicycle"
    assert cityscapes.splits == {"train": 2975, "val": 500, "train_extra": 19998}
    assert get_dataset_info("coco_voc").num_classes == 21


def test_user_dataset_from_a_json_spec(tmp_path):
    spec = {"name": "leaves_from_json", "num_classes": 3, "class_names": ["soil", "leaf", "spot"],
            "colormap": [[0, 0, 0], [0, 200, 0], [200, 0, 0]], "splits": {"train": 8}}
    path = tmp_path / "leaves.json"
    path.write_text(json.dumps(spec))
    info = register_dataset(dataset_info_from_spec(str(path)))
    assert get_dataset_info("leaves_from_json") is info
    assert info.colormap == ((0, 0, 0), (0, 200, 0), (200, 0, 0))
    assert info.ignore_label == 255 and info.splits == {"train": 8}
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(info)


def test_minimal_spec_gets_default_names():
    info = dataset_info_from_spec({"name": "two", "num_classes": 2})
    assert info.class_names == ("class_0", "class_1") and info.colormap == "pascal"


@pytest.mark.parametrize("spec, message", [
    ({"name": "x"}, "needs 'name' and 'num_classes'"),
    ({"name": "x", "num_classes": 3, "colour": "pascal"}, "needs 'name' and 'num_classes'"),
    ({"name": "x", "num_classes": 3, "class_names": ["a"]}, "1 class names for 3 classes"),
    ({"name": "x", "num_classes": 2, "colormap": [[0, 0, 0]]}, "colormap needs 2 RGB triples"),
    ({"name": "x", "num_classes": 2, "colormap": "rainbow"}, "colormap 'rainbow' is not one of"),
    ({"name": "x", "num_classes": 3, "ignore_label": 1}, "ignore_label 1 is a class id"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        dataset_info_from_spec(spec)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown dataset 'voc'.*pascal_voc_seg"):
        get_dataset_info("voc")


def test_info_is_frozen():
    with pytest.raises(AttributeError):
        get_dataset_info("cityscapes").num_classes = 20
    assert isinstance(get_dataset_info("cityscapes"), DatasetInfo)
