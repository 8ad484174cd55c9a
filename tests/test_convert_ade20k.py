"""build_ade20k_data: ADEChallengeData2016's benchmark ids (0 "other", 1..150) -> 0..149 with "other"
ignored; the loss and the mIOU leave those pixels out; experiments/configs/ade20k.py loads and trains."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.data import fake, registry, tfrecord, train_dataset
from deeplab_tf.data.sources import ade20k
from deeplab_tf.data.validation import DataError
from deeplab_tf.evaluation import evaluator
from deeplab_tf.training import losses, trainer
from test_experiments import parse_train_flags
from training_utils import small_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (23, 31)  # 713 pixels: two masks hold every benchmark id 0..150 several times


def _benchmark_mask(seed):
    """Every id 0..150 at least once, shuffled, more "other" (0) in the top rows."""
    rng = np.random.default_rng(seed)
    ids = np.resize(np.arange(151), SIZE[0] * SIZE[1])
    mask = rng.permutation(ids).reshape(SIZE).astype(np.uint8)
    mask[:3] = 0
    return mask


def make_ade20k(root, splits):
    """`root/ADEChallengeData2016/{images,annotations}/<folder>/ADE_<split>_<n>.{jpg,png}`.

    splits: {"train": [mask, ...], ...}. Returns {name: (jpeg path, benchmark mask)}.
    """
    rng = np.random.default_rng(5)
    files = {}
    for split, masks in splits.items():
        folder = ade20k.FOLDERS[split]
        for i, mask in enumerate(masks, start=1):
            name = f"ADE_{split}_{i:08d}"
            image = os.path.join(root, "ADEChallengeData2016", "images", folder, name + ".jpg")
            fake.save_image(image, fake.random_image(rng, *mask.shape), quality=90)
            fake.save_image(os.path.join(root, "ADEChallengeData2016", "annotations", folder, name + ".png"),
                            mask)
            files[name] = (image, mask)
    return files


def _records(pattern):
    """{filename: (image, label)} of every record matching `pattern`."""
    out = {}
    for serialized in tf.data.TFRecordDataset(sorted(glob.glob(pattern))):
        example = tfrecord.parse_example(serialized)
        out[example["filename"].numpy().decode()] = (example["image"].numpy(), example["label"].numpy())
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The converter as users run it, from the repository root."""
    root = str(tmp_path_factory.mktemp("ade20k"))
    files = make_ade20k(root, {"train": [_benchmark_mask(0), _benchmark_mask(1), _benchmark_mask(2)],
                               "val": [_benchmark_mask(3), _benchmark_mask(4)]})
    output = os.path.join(root, "tfrecords", "ade20k")
    run = subprocess.run(
        [sys.executable, "datasets/build_ade20k_data.py",
         f"--ade20k_root={os.path.join(root, 'ADEChallengeData2016')}", f"--output_dir={output}",
         "--num_shards=2"],
        cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True,
        timeout=600)
    return dict(root=root, files=files, output=output, run=run)


def _histogram(report, split, class_name):
    """The pixel count of `class_name` in `split`'s histogram of the converter's report."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(split + ":"))
    for line in lines[start + 1:]:
        if line.split()[1:2] == [class_name]:
            return int(line.split()[-2])
    raise AssertionError(f"no {class_name} row in the {split} histogram:\n{report}")


def test_benchmark_ids_move_down_by_one_and_other_becomes_the_ignore_label():
    stored = ade20k.to_train_ids(np.arange(151, dtype=np.uint8).reshape(1, -1), path="m.png")
    np.testing.assert_array_equal(stored[0], [255] + list(range(150)))
    assert stored.dtype == np.uint8
    info = registry.get_dataset_info("ade20k")
    assert (info.num_classes, info.ignore_label) == (150, 255)
    assert (info.class_names[0], info.class_names[11], info.class_names[149]) == ("wall", "sidewalk", "flag")
    # The benchmark palette shifted with the ids: wall's grey, flag's colour last.
    assert info.colormap[0] == (120, 120, 120) and info.colormap[149] == (92, 0, 255)


def test_a_value_above_150_is_refused_naming_the_file():
    with pytest.raises(DataError, match=r"m\.png: mask values \{151, 200\} are not ADE20K SceneParsing ids"):
        ade20k.to_train_ids(np.array([[0, 151, 200, 150]], np.uint8), path="m.png")


def test_script_writes_each_split_with_the_mapped_labels_and_exact_images(converted):
    run = converted["run"]
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(converted["output"])) == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
        "val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord"]
    records = {**_records(os.path.join(converted["output"], "train-*")),
               **_records(os.path.join(converted["output"], "val-*"))}
    assert sorted(records) == sorted(converted["files"])
    seen = set()
    for name, (image, label) in records.items():
        jpeg_path, benchmark = converted["files"][name]
        np.testing.assert_array_equal(label, np.where(benchmark == 0, 255, benchmark.astype(np.int64) - 1))
        with open(jpeg_path, "rb") as f:
            np.testing.assert_array_equal(image, tf.io.decode_jpeg(f.read(), channels=3).numpy())
        seen |= set(np.unique(label).tolist())
    assert seen == set(range(150)) | {255}
    # The report's histogram names the classes: benchmark id 1 is wall, 150 flag, 0 the ignored pixels.
    train = [converted["files"][f"ADE_train_{i:08d}"][1] for i in (1, 2, 3)]
    assert "train: 3 records in 2 shards" in run.stdout
    assert _histogram(run.stdout, "train", "wall") == sum(int((m == 1).sum()) for m in train)
    assert _histogram(run.stdout, "train", "flag") == sum(int((m == 150).sum()) for m in train)
    assert _histogram(run.stdout, "train", "(ignore)") == sum(int((m == 0).sum()) for m in train)


def test_user_mistakes_stop_with_one_line(tmp_path):
    make_ade20k(str(tmp_path), {"train": [np.full(SIZE, 200, np.uint8)]})
    output = str(tmp_path / "out")
    run = subprocess.run([sys.executable, "datasets/build_ade20k_data.py", f"--ade20k_root={tmp_path}",
                          f"--output_dir={output}", "--splits=train"],
                         cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "ADE_train_00000001.png: mask values {200}" in last
    assert not glob.glob(os.path.join(output, "*.tfrecord"))
    with pytest.raises(DataError, match="no images/ folder here nor in ADEChallengeData2016/"):
        ade20k.convert_ade20k(str(tmp_path / "out"), output)
    with pytest.raises(DataError, match=r"images/validation: not found"):
        ade20k.convert_ade20k(str(tmp_path), output, splits=("val",))
    with pytest.raises(DataError, match=r"unknown ADE20K split\(s\) \['test'\]"):
        ade20k.convert_ade20k(str(tmp_path), output, splits=("test",))


def test_other_pixels_count_in_neither_the_loss_nor_the_miou(converted):
    """Training crops hold only 0..149 and 255; a model predicting wall everywhere is scored on the
    labelled pixels only (the confusion matrix sums to them), and "other" gets no loss."""
    pattern = os.path.join(converted["output"], "train-*")
    _, labels = next(iter(train_dataset(pattern, batch_size=3, crop_size=SIZE, min_scale=1.0,
                                        max_scale=1.0, flip=False, seed=0)))
    labels = labels.numpy()
    # Scale 1 and crops of the images' size: each crop is a whole stored label map, "other" at 255.
    expected = [np.where(m == 0, 255, m.astype(np.int64) - 1)
                for name, (_, m) in sorted(converted["files"].items()) if name.startswith("ADE_train")]
    assert sorted(label.tobytes() for label in labels) == sorted(e.astype(np.int32).tobytes() for e in expected)

    logits = tf.zeros(labels.shape + (150,))
    _, valid = losses.pixel_cross_entropy(tf.constant(labels), logits, ignore_label=255)
    assert float(tf.reduce_sum(valid)) == int((labels != 255).sum())

    def wall_everywhere(images, training=False):
        shape = tf.shape(images)[:3]
        return tf.one_hot(tf.zeros(shape, tf.int32), 150)

    wall_everywhere.num_classes = 150
    val = [converted["files"][f"ADE_val_{i:08d}"][1] for i in (1, 2)]
    results = evaluator.evaluate(wall_everywhere, os.path.join(converted["output"], "val-*"),
                                 num_classes=150, ignore_label=255)
    confusion = np.asarray(results["confusion_matrix"])
    assert confusion.sum() == confusion[:, 0].sum() == sum(int((m != 0).sum()) for m in val)
    assert confusion[0, 0] == sum(int((m == 1).sum()) for m in val)


def test_config_loads_and_trains_a_step_on_the_records(converted, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    config, _ = parse_train_flags(["--config=experiments/configs/ade20k.py:train"])
    assert config.dataset.name == "ade20k" and trainer.num_classes_of(config) == 150
    assert config.dataset.train_pattern == "tfrecords/ade20k/train-*"
    assert (config.train.steps, tuple(config.train.crop_size), config.train.batch_size) == (150000, (513, 513), 16)
    assert (config.train.min_scale, config.train.max_scale) == (0.5, 2.0)
    assert config.model.backbone == "resnet_v1_101" and tuple(config.dataset.eval_crop_size) == ()

    # Tiny overrides: ResNet-50 from scratch, 65x65 crops, batch 2, one step, then the evaluation.
    small = small_config(converted["output"], steps=1)
    config.model.update(small.model)
    config.train.update({**small.train, "init_checkpoint": ""})
    config.dataset.train_pattern = os.path.join(converted["output"], "train-*")
    config.dataset.eval_pattern = os.path.join(converted["output"], "val-*")
    lines = []
    trainer.train(config, str(tmp_path / "run"), log=lines.append)
    assert os.path.exists(str(tmp_path / "run" / "checkpoints" / "ckpt-1.index"))
    evaluation = next(line for line in lines if line.startswith("Evaluation at output stride 16: mIOU"))
    assert "val-*" in evaluation
