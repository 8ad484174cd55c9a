"""build_folder_data: index masks, binary masks with a value map, RGB colour masks via a palette."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf import visualization
from deeplab_tf.data import fake, tfrecord
from deeplab_tf.data.registry import DatasetInfo
from deeplab_tf.data.sources import folder
from deeplab_tf.data.validation import DataError

LEAVES = DatasetInfo(name="leaves", num_classes=3, class_names=("soil", "leaf", "spot"),
                     colormap=((0, 0, 0), (0, 200, 0), (200, 0, 0)))


def _records(output_dir, split="train"):
    out = {}
    for serialized in tf.data.TFRecordDataset(sorted(glob.glob(f"{output_dir}/{split}-*"))):
        example = tfrecord.parse_example(serialized)
        out[example["filename"].numpy().decode()] = (example["image"].numpy(),
                                                     example["label"].numpy())
    return out


def _masks(num, *, class_ids, ignore_border=False, seed=0):
    rng = np.random.default_rng(seed)
    return {f"img{i}": fake.random_mask(rng, 24 + i, 32, class_ids=class_ids,
                                        ignore_border=ignore_border) for i in range(num)}


def test_index_masks_and_lossless_png_images_read_back_exactly(tmp_path):
    masks = _masks(3, class_ids=[1, 2], ignore_border=True)
    image_dir, mask_dir, images = fake.make_folder(str(tmp_path), masks=masks, image_ext=".png")
    summary = folder.convert_folder(image_dir, mask_dir, str(tmp_path / "out"), info=LEAVES,
                                    num_shards=2)
    assert summary.records == {"train": 3}
    records = _records(tmp_path / "out")
    for name, mask in masks.items():
        np.testing.assert_array_equal(records[name][0], images[name])
        np.testing.assert_array_equal(records[name][1], mask)


def test_binary_masks_with_value_map_or_without_the_binary_check(tmp_path):
    masks = {name: np.where(mask > 0, 255, 0).astype(np.uint8)
             for name, mask in _masks(2, class_ids=[1]).items()}
    image_dir, mask_dir, _ = fake.make_folder(str(tmp_path), masks=masks)
    info = DatasetInfo(name="binary", num_classes=2)
    with pytest.raises(DataError, match="look binary"):
        folder.convert_folder(image_dir, mask_dir, str(tmp_path / "out"), info=info)
    folder.convert_folder(image_dir, mask_dir, str(tmp_path / "out"), info=info,
                          value_map={255: 1})
    for name, (_, label) in _records(tmp_path / "out").items():
        np.testing.assert_array_equal(label, masks[name] // 255)
    # Or, when 255 really is "ignore" (an image of background and unlabelled pixels only):
    folder.convert_folder(image_dir, mask_dir, str(tmp_path / "kept"), info=info,
                          binary_check=False)
    for name, (_, label) in _records(tmp_path / "kept").items():
        np.testing.assert_array_equal(label, masks[name])


def test_rgb_masks_with_an_explicit_palette_and_ignore_colour(tmp_path):
    masks = _masks(2, class_ids=[1, 2], ignore_border=True)
    palette = np.zeros((256, 3), np.uint8)
    palette[:3] = LEAVES.colormap
    palette[255] = (255, 255, 255)
    image_dir, mask_dir, _ = fake.make_folder(str(tmp_path), masks=masks, color_palette=palette)
    with pytest.raises(DataError, match=r"colours \(255, 255, 255\) are not in the palette"):
        folder.convert_folder(image_dir, mask_dir, str(tmp_path / "out"), info=LEAVES,
                              mask_format="rgb")
    folder.convert_folder(image_dir, mask_dir, str(tmp_path / "out"), info=LEAVES,
                          mask_format="rgb", ignore_color=(255, 255, 255))
    for name, (_, label) in _records(tmp_path / "out").items():
        np.testing.assert_array_equal(label, masks[name])


def test_rgb_masks_in_voc_colours_use_the_pascal_palette_by_default(tmp_path):
    masks = _masks(2, class_ids=[1, 15, 20], ignore_border=True)  # borders in (224, 224, 192)
    image_dir, mask_dir, _ = fake.make_folder(
        str(tmp_path), masks=masks, color_palette=visualization.get_colormap("pascal"))
    folder.convert_folder(image_dir, mask_dir, str(tmp_path / "out"),
                          info=DatasetInfo(name="voc_like", num_classes=21), mask_format="rgb")
    for name, (_, label) in _records(tmp_path / "out").items():
        np.testing.assert_array_equal(label, masks[name])


def test_split_file_and_mask_suffix(tmp_path):
    masks = _masks(3, class_ids=[1])
    image_dir, mask_dir, _ = fake.make_folder(str(tmp_path), masks=masks)
    for name in masks:
        os.rename(os.path.join(mask_dir, name + ".png"),
                  os.path.join(mask_dir, name + "_mask.png"))
    split_file = tmp_path / "val.txt"
    split_file.write_text("img2\nimg0\n")
    folder.convert_folder(image_dir, mask_dir, str(tmp_path / "out"), info=LEAVES, split="val",
                          split_file=str(split_file), mask_suffix="_mask")
    assert sorted(_records(tmp_path / "out", "val")) == ["img0", "img2"]
    split_file.write_text("img0\nimg9\n")
    with pytest.raises(DataError, match="1 names have no image.*'img9'"):
        folder.convert_folder(image_dir, mask_dir, str(tmp_path / "out"), info=LEAVES,
                              split_file=str(split_file), mask_suffix="_mask")


def test_greyscale_and_rgba_images_become_rgb(tmp_path):
    masks = _masks(2, class_ids=[1])
    image_dir, mask_dir, _ = fake.make_folder(str(tmp_path), masks=masks, image_ext=".png")
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    rgba = rng.integers(0, 256, (25, 32, 4), dtype=np.uint8)
    fake.save_image(os.path.join(image_dir, "img0.png"), grey)
    fake.save_image(os.path.join(image_dir, "img1.png"), rgba)
    folder.convert_folder(image_dir, mask_dir, str(tmp_path / "out"), info=LEAVES)
    records = _records(tmp_path / "out")
    np.testing.assert_array_equal(records["img0"][0], np.repeat(grey[..., None], 3, axis=-1))
    np.testing.assert_array_equal(records["img1"][0], rgba[..., :3])


def test_rerun_with_fewer_shards_replaces_the_old_ones(tmp_path):
    image_dir, mask_dir, _ = fake.make_folder(str(tmp_path), masks=_masks(4, class_ids=[1]))
    out = str(tmp_path / "out")
    folder.convert_folder(image_dir, mask_dir, out, info=LEAVES, num_shards=3)
    folder.convert_folder(image_dir, mask_dir, out, info=LEAVES, num_shards=2)
    assert sorted(os.listdir(out)) == ["train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord"]
    assert len(_records(out)) == 4
