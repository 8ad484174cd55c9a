"""Bad inputs: each is one clear error naming the file and the fix, and no shard is left behind
(or, with skip_bad, the file is reported and skipped)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from deeplab_tf import visualization
from deeplab_tf.data import fake
from deeplab_tf.data.registry import DatasetInfo, PASCAL_VOC_CLASS_NAMES
from deeplab_tf.data.sources import folder, voc
from deeplab_tf.data.validation import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    path = os.path.join(image_dir, "b.jpg")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])  # truncated mid-scan
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


def test_skip_bad_reports_and_skips(tmp_path):
    image_dir, mask_dir, output = _dataset(str(tmp_path), "b", BAD_MASKS["binary"][0])
    fake.make_folder(str(tmp_path), masks={"d": BAD_MASKS["value37"][0]})
    os.remove(os.path.join(mask_dir, "c.png"))  # an image without its mask
    summary = _convert(image_dir, mask_dir, output, skip_bad=True)
    split = summary.splits["train"]
    assert split.records == 1
    assert [name for name, _ in split.skipped] == ["b", "c", "d"]
    report = summary.format(class_names=VOC21.class_names)
    assert "3 skipped" in report and "look binary" in report and "mask file not found" in report
    assert _left_files(output) == ["train-00000-of-00001.tfrecord"]


def test_skip_bad_with_nothing_good_is_an_error(tmp_path):
    image_dir, mask_dir, output = _dataset(str(tmp_path), "b", BAD_MASKS["binary"][0])
    for name in ("a", "c"):
        os.remove(os.path.join(mask_dir, name + ".png"))
    with pytest.raises(DataError, match="all 3 images were bad"):
        _convert(image_dir, mask_dir, output, skip_bad=True)
    assert _left_files(output) == []


def test_script_exits_with_one_line_not_a_traceback(tmp_path):
    image_dir, mask_dir, output = _dataset(str(tmp_path), "b", BAD_MASKS["binary"][0])
    result = subprocess.run(
        [sys.executable, "-m", "datasets.build_folder_data", f"--image_dir={image_dir}",
         f"--mask_dir={mask_dir}", "--num_classes=21", f"--output_dir={output}"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "look binary" in last and "--value_map=255:1" in last
    assert _left_files(output) == []
