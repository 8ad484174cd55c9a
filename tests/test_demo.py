"""The README's first command, `deeplab-demo`, at a reduced size: every stage, then a re-run."""

import json
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image

from deeplab_tf import visualization
from deeplab_tf.data.sources.voc import convert_voc2012
from deeplab_tf.demo import dataset, montage


def _run_demo(workspace):
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_tf.cli.demo", f"--workspace={workspace}", "--steps=3", "--num_train_images=8",
         "--num_val_images=3", "--eval_scales=0.75,1.0"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def test_scenes_are_deterministic_and_hold_every_class():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    scenes = [dataset.make_scene(rng_a) for _ in range(20)]
    image, mask = dataset.make_scene(rng_b)
    np.testing.assert_array_equal(image, scenes[0][0])
    np.testing.assert_array_equal(mask, scenes[0][1])
    assert image.shape == dataset.IMAGE_SIZE + (3,) and mask.shape == dataset.IMAGE_SIZE
    values = set(np.unique(np.concatenate([m.ravel() for _, m in scenes])))
    assert values == set(range(len(dataset.CLASS_NAMES))) | {255}


def test_demo_runs_every_stage_and_reuses_them(tmp_path):
    workspace = tmp_path / "demo"
    output = _run_demo(workspace)
    for stage in range(1, 6):
        assert f"[{stage}/5]" in output
    # The VOC layout went through the real converter.
    voc = workspace / "data" / "VOCdevkit" / "VOC2012"
    assert len(os.listdir(voc / "JPEGImages")) == 11 and len(os.listdir(voc / "SegmentationClass")) == 11
    assert (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split() == [f"val_{i:05d}" for i in range(3)]
    mask = Image.open(voc / "SegmentationClass" / "train_00000.png")
    assert mask.mode == "P"

    # Four evaluations, each with its JSON, three on the release's canvas and one at the images' size,
    # and the report saying which protocol gave each number.
    mious = [float(m) for m in re.findall(r"^  OS .*?: mIOU ([\d.]+) -> ", output, re.MULTILINE)]
    assert len(mious) == 4 and all(0.0 <= m <= 1.0 for m in mious)
    workdir = workspace / "runs" / "demo"
    canvas = list(dataset.EVAL_CROP_SIZE)
    crop = f"_crop{canvas[0]}x{canvas[1]}"
    for name, eval_crop_size in ((f"eval_os16{crop}", canvas), (f"eval_os8{crop}", canvas),
                                 (f"eval_os8{crop}_ms_flip", canvas), ("eval_os16", None)):
        results = json.load(open(workdir / name / "metrics-3.json"))
        assert results["step"] == 3 and results["num_images"] == 3
        assert results["eval_crop_size"] == eval_crop_size
    assert json.load(open(workdir / f"eval_os8{crop}_ms_flip" / "metrics-3.json"))["scales"] == [0.75, 1.0]
    assert "DeepLabv3 demo: results on the val split" in output and "Per class" in output
    assert f"images padded to {canvas[0]}x{canvas[1]}, the original release's protocol" in output
    assert "OS 16, images at their own size" in output

    # Predictions and the served SavedModel, at the images' own size.
    for kind in ("index", "color", "overlay"):
        files = sorted(os.listdir(workspace / "vis" / kind))
        assert len(files) == 3
        assert Image.open(workspace / "vis" / kind / files[0]).size == dataset.IMAGE_SIZE[::-1]
    assert (workspace / "exports" / "demo" / "1" / "saved_model.pb").exists()
    assert re.search(rf"labels {dataset.IMAGE_SIZE[0]}x{dataset.IMAGE_SIZE[1]}", output)
    assert Image.open(workspace / "served_prediction.png").size == dataset.IMAGE_SIZE[::-1]

    # The montage the report names first: a row per val scene (3 here), tiles of image | truth | prediction.
    assert f"Look first: {workspace / 'montage.png'}" in output
    picture = np.asarray(Image.open(workspace / "montage.png").convert("RGB"))
    (width, height), corners = montage.layout(dataset.IMAGE_SIZE, 3)
    assert picture.shape == (height, width, 3)
    colormap = visualization.get_colormap(dataset.INFO.colormap)
    for row, image_id in zip(corners, sorted(name[:-4] for name in os.listdir(workspace / "vis" / "index"))):
        tiles = [np.asarray(Image.open(voc / "JPEGImages" / f"{image_id}.jpg").convert("RGB")),
                 colormap[np.asarray(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))],
                 colormap[np.asarray(Image.open(workspace / "vis" / "index" / f"{image_id}.png"))]]
        for (x, y), tile in zip(row, tiles):
            np.testing.assert_array_equal(picture[y:y + tile.shape[0], x:x + tile.shape[1]], tile)

    # A second run reuses every stage: same results, training resumed at its end.
    again = _run_demo(workspace)
    assert "reusing" in again and "Resuming from" in again and "at step 3." in again
    assert [float(m) for m in re.findall(r"^  OS .*?: mIOU ([\d.]+) -> ", again, re.MULTILINE)] == mious


_TRAIN_DEMO = """
import sys
from deeplab_tf.demo import pipeline
_, summary = pipeline.train_demo(sys.argv[1], sys.argv[2], steps=1, batch_size=2, crop_size=65, log=lambda line: None)
print(repr(summary["loss"]))
"""


def _first_loss(tfrecords, workdir):
    """The loss of the demo's first training step, in a fresh process as `deeplab-demo` runs it."""
    result = subprocess.run([sys.executable, "-c", _TRAIN_DEMO, tfrecords, workdir], capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-4000:]
    return float(result.stdout.strip().splitlines()[-1])


def test_two_demo_trainings_start_from_the_same_weights_and_batch(tmp_path):
    """The first step's loss depends only on the initial weights and the first batch: equal to the last bit.
    (Later steps are not bit-identical: see README.md, "The demo".)"""
    voc, _ = dataset.build(str(tmp_path / "data"), splits={"train": 8, "val": 2})
    tfrecords = str(tmp_path / "tfrecords")
    convert_voc2012(voc, tfrecords, splits=("train", "val"), num_shards=2)
    first = _first_loss(tfrecords, str(tmp_path / "first"))
    assert 0 < first < 10
    assert _first_loss(tfrecords, str(tmp_path / "second")) == first
