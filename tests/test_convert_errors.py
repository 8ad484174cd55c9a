"""Bad inputs: each is one clear error naming the file and the fix, and no shard is left behind
(or, with skip_bad, the file is reported and skipped)."""

import dataclasses
import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf import visualization
from deeplab_tf.data import convert, fake, train_dataset, writer
from deeplab_tf.data.registry import DatasetInfo, PASCAL_VOC_CLASS_NAMES
from deeplab_tf.data.sources import folder, voc
from deeplab_tf.data.validation import DataError

VOC21 = DatasetInfo(name="voc21", num_classes=21, class_names=PASCAL_VOC_CLASS_NAMES)


def _good_mask(seed=0):
    return fake.random_mask(np.random.default_rng(seed), 30, 40, class_ids=[1, 5, 9])


def _dataset(root, bad_name, bad_mask=None):
    """Folder dataset of good masks a, c and one bad one named `bad_name` (sorted between)."""
    masks = {"a": _good_mask(0), "c": _good_mask(2)}
    if bad_mask is not None:
        masks[bad_name] = bad_mask
    image_dir, mask_dir, _ = fake.make_folder(root, masks=masks)
    return image_dir, mask_dir, os.path.join(root, "out")


def _convert(image_dir, mask_dir, output, **kwargs):
    return folder.convert_folder(image_dir, mask_dir, output, info=VOC21, num_shards=2, **kwargs)


def _left_files(output):
    return sorted(os.listdir(output)) if os.path.isdir(output) else []


def _with_37():
    mask = _good_mask()
    mask[0, 0] = 37
    return mask


BAD_MASKS = {
    "binary": (np.where(_good_mask() > 0, 255, 0).astype(np.uint8),
               [r"b\.png: mask values \{0, 255\} look binary", "map foreground to 1"]),
    "value37": (_with_37(),
                [r"b\.png: mask values \{37\} are not class ids in \[0, 21\)",
                 "check --num_classes"]),
    "wrong_size": (np.zeros((30, 41), np.uint8) + 1,
                   [r"b\.png: mask is 41x30 \(WxH\) but its image is 40x30", "re-export"]),
}


@pytest.mark.parametrize("kind", sorted(BAD_MASKS))
def test_bad_mask_stops_with_a_message_and_leaves_no_shard(tmp_path, kind):
    bad_mask, messages = BAD_MASKS[kind]
    image_dir, mask_dir, output = _dataset(str(tmp_path), "b", _good_mask(1))
    fake.save_image(os.path.join(mask_dir, "b.png"), bad_mask)  # the image stays 40x30
    with pytest.raises(DataError) as error:
        _convert(image_dir, mask_dir, output)
    for message in messages:
        assert error.match(message)
    assert _left_files(output) == []


def test_corrupt_jpeg(tmp_path):
    image_dir, mask_dir, output = _dataset(str(tmp_path), "b", _good_mask(1))
    _truncate(os.path.join(image_dir, "b.jpg"))
    with pytest.raises(DataError, match=r"b\.jpg: cannot decode the image .*corrupt or truncated"):
        _convert(image_dir, mask_dir, output)
    assert _left_files(output) == []


def test_rgb_colour_mask_without_a_palette(tmp_path):
    colors = visualization.get_colormap("pascal")
    image_dir, mask_dir, output = _dataset(str(tmp_path), "b")
    fake.make_folder(str(tmp_path), masks={"b": _good_mask(1)}, color_palette=colors)
    with pytest.raises(DataError, match=r"b\.png: is an RGB colour mask.*--mask_format=rgb"):
        _convert(image_dir, mask_dir, output)
    assert _left_files(output) == []


def test_empty_split(tmp_path):
    voc_root = os.path.join(tmp_path, "VOCdevkit")
    fake.make_voc(voc_root, masks={"2007_000001": _good_mask()},
                  splits={"train": ["2007_000001"], "val": []})
    with pytest.raises(DataError, match="split 'val' has no images"):
        voc.convert_voc2012(voc_root, str(tmp_path / "out"), splits=["val"])
    assert _left_files(str(tmp_path / "out")) == []


def test_a_failed_run_keeps_the_previous_complete_split(tmp_path):
    image_dir, mask_dir, output = _dataset(str(tmp_path), "b", _good_mask(1))
    _convert(image_dir, mask_dir, output)
    before = {f: os.path.getsize(os.path.join(output, f)) for f in _left_files(output)}
    fake.save_image(os.path.join(mask_dir, "b.png"), BAD_MASKS["value37"][0])
    with pytest.raises(DataError):
        _convert(image_dir, mask_dir, output)
    assert {f: os.path.getsize(os.path.join(output, f)) for f in _left_files(output)} == before


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])  # cut mid-scan


def test_skip_bad_reports_every_kind_of_bad_file_and_keeps_the_good_ones(tmp_path):
    """One run with each bad input of the issue: each is listed with its reason, not written."""
    root = str(tmp_path)
    image_dir, mask_dir, output = _dataset(root, "b1", BAD_MASKS["binary"][0])
    colours = visualization.get_colormap("pascal")
    fake.make_folder(root, masks={"b2": BAD_MASKS["value37"][0], "b3": _good_mask(3),
                                  "b4": _good_mask(4), "b6": _good_mask(6)})
    fake.save_image(os.path.join(mask_dir, "b3.png"), BAD_MASKS["wrong_size"][0])
    _truncate(os.path.join(image_dir, "b4.jpg"))
    fake.make_folder(root, masks={"b5": _good_mask(5)}, color_palette=colours)
    os.remove(os.path.join(mask_dir, "b6.png"))
    summary = _convert(image_dir, mask_dir, output, skip_bad=True)
    split = summary.splits["train"]
    reasons = dict(split.skipped)
    assert sorted(reasons) == ["b1", "b2", "b3", "b4", "b5", "b6"]
    for name, message in {"b1": r"b1\.png: mask values \{0, 255\} look binary",
                          "b2": r"b2\.png: mask values \{37\} are not class ids",
                          "b3": r"b3\.png: mask is 41x30 \(WxH\) but its image is 40x30",
                          "b4": r"b4\.jpg: cannot decode the image",
                          "b5": r"b5\.png: is an RGB colour mask",
                          "b6": r"b6\.png: mask file not found"}.items():
        assert re.search(message, reasons[name]), reasons[name]
    assert split.records == 2
    np.testing.assert_array_equal(
        split.histogram, sum(np.bincount(_good_mask(i).ravel(), minlength=256) for i in (0, 2)))
    report = summary.format(class_names=VOC21.class_names)
    assert "train: 2 records in 2 shards" in report and "6 skipped" in report
    for name, reason in reasons.items():
        assert f"  skipped {name}: {reason}" in report
    assert _left_files(output) == ["train-00000-of-00002.tfrecord",
                                   "train-00001-of-00002.tfrecord"]


def test_skip_bad_does_not_hide_an_empty_split(tmp_path):
    os.makedirs(tmp_path / "images")
    with pytest.raises(DataError, match="split 'train' has no images"):
        _convert(str(tmp_path / "images"), str(tmp_path / "masks"), str(tmp_path / "out"),
                 skip_bad=True)
    assert _left_files(str(tmp_path / "out")) == []


def test_skip_bad_with_nothing_good_is_an_error(tmp_path):
    image_dir, mask_dir, output = _dataset(str(tmp_path), "b", BAD_MASKS["binary"][0])
    for name in ("a", "c"):
        os.remove(os.path.join(mask_dir, name + ".png"))
    with pytest.raises(DataError, match="all 3 images were bad"):
        _convert(image_dir, mask_dir, output, skip_bad=True)
    assert _left_files(output) == []


def test_shards_are_written_under_temporary_names_and_renamed_when_complete(tmp_path):
    """While a split is written, its glob matches nothing; the shards appear only at the end."""
    image_dir, mask_dir, output = _dataset(str(tmp_path), "b", _good_mask(1))
    during = []

    def spied(sample):
        def read_mask():
            during.append((tf.io.gfile.glob(os.path.join(output, "train*")),
                           sorted(os.listdir(writer.incomplete_dir(output, "train")))))
            return sample.read_mask()
        return dataclasses.replace(sample, read_mask=read_mask)

    samples = [spied(s) for s in folder.folder_samples(image_dir, mask_dir)]
    convert.convert_split(samples, output_dir=output, split="train", num_classes=21,
                          num_shards=2)
    assert during == [([], ["train-00000-of-00002.tfrecord",
                            "train-00001-of-00002.tfrecord"])] * 3
    assert _left_files(output) == ["train-00000-of-00002.tfrecord",
                                   "train-00001-of-00002.tfrecord"]  # and no temporary folder


def test_a_killed_conversion_leaves_nothing_a_pipeline_reads(tmp_path):
    output = str(tmp_path / "out")
    killed = writer.ShardedWriter(output_dir=output, split="train", num_shards=2)
    killed.__enter__()  # the process dies while writing: __exit__ never runs
    killed.write(b"half a split")
    assert tf.io.gfile.glob(os.path.join(output, "train*")) == []
    with pytest.raises(ValueError, match="no TFRecord files match"):
        train_dataset(os.path.join(output, "train-*"), batch_size=1)
    # The next conversion clears what the killed one left.
    image_dir, mask_dir, _ = _dataset(str(tmp_path), "b", _good_mask(1))
    _convert(image_dir, mask_dir, output)
    assert _left_files(output) == ["train-00000-of-00002.tfrecord",
                                   "train-00001-of-00002.tfrecord"]


def test_progress_is_logged_while_converting(tmp_path, caplog, monkeypatch):
    image_dir, mask_dir, output = _dataset(str(tmp_path), "b", _good_mask(1))
    caplog.set_level(logging.INFO, logger="absl")
    monkeypatch.setattr(convert, "_PROGRESS_SECONDS", 1e9)  # a quick split: only the final line
    _convert(image_dir, mask_dir, output)
    assert [r.getMessage().split(",")[0] for r in caplog.records
            if "images (" in r.getMessage()] == ["train: 3/3 images (100%)"]
    caplog.clear()
    monkeypatch.setattr(convert, "_PROGRESS_SECONDS", -1.0)  # as if each image took long
    _convert(image_dir, mask_dir, output)
    assert [r.getMessage().split(",")[0] for r in caplog.records
            if "images (" in r.getMessage()] == [
        "train: 1/3 images (33%)", "train: 2/3 images (67%)", "train: 3/3 images (100%)"]
