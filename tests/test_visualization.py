import json

import numpy as np
import pytest
from PIL import Image

from deeplab_tf import visualization


def test_pascal_colormap():
    colormap = visualization.pascal_colormap()
    assert colormap.shape == (256, 3) and colormap.dtype == np.uint8
    assert colormap[0].tolist() == [0, 0, 0]
    assert colormap[1].tolist() == [128, 0, 0]  # aeroplane
    assert colormap[2].tolist() == [0, 128, 0]  # bicycle
    assert colormap[15].tolist() == [192, 128, 128]  # person
    assert colormap[20].tolist() == [0, 64, 128]  # tv/monitor
    assert colormap[255].tolist() == [224, 224, 192]  # object boundaries (ignore label)
    assert len({tuple(c) for c in colormap}) == 256


def test_cityscapes_colormap_by_train_id():
    colormap = visualization.cityscapes_colormap()
    assert colormap.shape == (256, 3) and colormap.dtype == np.uint8
    assert colormap[0].tolist() == [128, 64, 128]  # road
    assert colormap[13].tolist() == [0, 0, 142]  # car
    assert colormap[18].tolist() == [119, 11, 32]  # bicycle
    assert len({tuple(c) for c in colormap[:19]}) == 19
    assert not colormap[19:].any()


def test_ade20k_colormap():
    colormap = visualization.ade20k_colormap()
    assert colormap.shape == (256, 3) and colormap.dtype == np.uint8
    assert colormap[0].tolist() == [0, 0, 0]
    assert colormap[1].tolist() == [120, 120, 120]  # wall
    assert colormap[150].tolist() == [92, 0, 255]
    assert colormap[1:151].any(axis=1).all() and not colormap[151:].any()


def test_get_colormap_names_and_user_palettes(tmp_path):
    np.testing.assert_array_equal(visualization.get_colormap("Cityscapes"),
                                  visualization.cityscapes_colormap())
    user = visualization.get_colormap([[1, 2, 3], [4, 5, 6]])
    assert user.shape == (256, 3) and user[1].tolist() == [4, 5, 6] and not user[2:].any()
    path = tmp_path / "palette.json"
    path.write_text(json.dumps([[10, 20, 30]]))
    assert visualization.get_colormap(str(path))[0].tolist() == [10, 20, 30]
    with pytest.raises(ValueError, match="Unknown colormap"):
        visualization.get_colormap("mapillary")
    with pytest.raises(ValueError, match="0..255"):
        visualization.get_colormap([[0, 0, 256]])
    with pytest.raises(ValueError, match="triples"):
        visualization.get_colormap([1, 2, 3])
    (tmp_path / "bad.json").write_text("[[1, 2")
    with pytest.raises(ValueError, match="not valid JSON"):
        visualization.get_colormap(str(tmp_path / "bad.json"))


def test_label_to_color_image_and_overlay():
    label = np.array([[0, 1], [15, 255]])
    color = visualization.label_to_color_image(label, "pascal")
    assert color.shape == (2, 2, 3) and color.dtype == np.uint8
    assert color[1, 0].tolist() == [192, 128, 128] and color[1, 1].tolist() == [224, 224, 192]
    with pytest.raises(ValueError, match="0..255"):
        visualization.label_to_color_image(np.array([[0, 256]]), "pascal")
    with pytest.raises(ValueError, match="2-D"):
        visualization.label_to_color_image(np.zeros((1, 2, 2), int), "pascal")

    image = np.full((2, 2, 3), 100, np.uint8)
    np.testing.assert_array_equal(visualization.overlay(image, label, "pascal", alpha=0.0), image)
    np.testing.assert_array_equal(visualization.overlay(image, label, "pascal", alpha=1.0), color)
    half = visualization.overlay(image, label, "pascal")
    np.testing.assert_array_equal(half, np.round((image.astype(float) + color) / 2).astype(np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        visualization.overlay(image[:1], label, "pascal")


def test_save_prediction_writes_index_color_and_overlay_pngs(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 21, (33, 17))
    image = rng.integers(0, 256, (33, 17, 3)).astype(np.uint8)
    paths = visualization.save_prediction(str(tmp_path), "val/2007_000033", image, label, colormap="pascal")
    assert sorted(paths) == ["color", "index", "overlay"]
    assert paths["index"] == str(tmp_path / "index" / "val" / "2007_000033.png")

    index = Image.open(paths["index"])
    assert index.mode == "P"
    np.testing.assert_array_equal(np.array(index), label)
    np.testing.assert_array_equal(np.array(index.getpalette(), np.uint8).reshape(-1, 3),
                                  visualization.pascal_colormap())
    np.testing.assert_array_equal(np.array(Image.open(paths["color"])),
                                  visualization.label_to_color_image(label, "pascal"))
    np.testing.assert_array_equal(np.array(Image.open(paths["overlay"])),
                                  visualization.overlay(image, label, "pascal"))


def test_save_prediction_writes_cityscapes_label_ids(tmp_path):
    train_ids = np.array([[0, 13, 18, 255]])  # road, car, bicycle, ignore
    paths = visualization.save_prediction(str(tmp_path), "frankfurt_000000_000294", None, train_ids,
                                          colormap="cityscapes", write_overlay=False,
                                          train_id_to_label_id=True)
    assert sorted(paths) == ["color", "index"]
    index = Image.open(paths["index"])
    assert index.mode == "L"
    np.testing.assert_array_equal(np.array(index), [[7, 26, 33, 0]])
    assert np.array(Image.open(paths["color"]))[0, 1].tolist() == [0, 0, 142]
