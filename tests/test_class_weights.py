"""Class-weighted cross-entropy (config.train.class_weights): the loss against numpy, inverse-frequency
weights against a numpy count of the records, their storage in the workdir, and config errors."""

import io
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_tf.data import DataError, tfrecord
from deeplab_tf.data.pipeline import list_files
from deeplab_tf.training import class_weights as class_weights_lib, losses, trainer
from deeplab_tf.training.config import check_config
from training_utils import make_learnable_voc, small_config


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    return make_learnable_voc(str(tmp_path_factory.mktemp("voc")))


# --- the loss -----------------------------------------------------------------------------------------

def _numpy_weighted_loss(labels, logits, weights, fraction=1.0, ignore_label=255):
    """Weighted cross-entropy in float64: sum of w[label] * CE over the kept pixels / sum of their weights.
    With fraction < 1 the kept pixels are the k = int(fraction * all pixels) largest weighted losses whose
    loss is not 0 (the release's hard pixel mining on weighted losses)."""
    labels = labels.reshape(-1)
    logits = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    valid = labels != ignore_label
    safe = np.where(valid, labels, 0)
    pixel_weights = np.where(valid, np.asarray(weights, np.float64)[safe], 0.0)
    pixel_losses = -np.take_along_axis(log_probs, safe[:, None], -1)[:, 0] * pixel_weights
    kept = np.argsort(-pixel_losses, kind="stable")[:int(fraction * labels.size)]
    kept = kept[pixel_losses[kept] != 0]
    return pixel_losses[kept].sum() / pixel_weights[kept].sum()


def _batch(seed, num_classes=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, (2, 6, 7)).astype(np.int32)
    labels[0, :2] = 255
    labels[1, :, :3] = 255
    logits = (rng.normal(size=(2, 6, 7, num_classes)) * 2).astype(np.float32)
    return labels, logits


@pytest.mark.parametrize("fraction", [1.0, 0.3])
def test_weighted_loss_equals_numpy_weighted_cross_entropy(fraction):
    labels, logits = _batch(0)
    weights = (0.5, 3.0, 0.0, 1.25)  # class 2 left out of the loss
    loss_sum, normaliser = losses.segmentation_loss_terms(labels, logits, top_k_percent_pixels=fraction,
                                                          class_weights=weights)
    expected = _numpy_weighted_loss(labels, logits, weights, fraction)
    assert float(loss_sum) / float(normaliser) == pytest.approx(expected, rel=1e-5)
    from deeplab_tf import SegmentationLoss

    keras_loss = SegmentationLoss(class_weights=weights, top_k_percent_pixels=fraction)
    assert float(keras_loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    restored = keras.losses.deserialize(keras.losses.serialize(keras_loss))
    assert restored.get_config() == keras_loss.get_config() and restored.class_weights == weights


def test_equal_weights_give_the_unweighted_loss_and_weight_0_gives_no_gradient():
    labels, logits = _batch(1)
    unweighted = losses.segmentation_loss_terms(labels, logits)
    weighted = losses.segmentation_loss_terms(labels, logits, class_weights=(2.0,) * 4)
    assert float(weighted[0] / weighted[1]) == pytest.approx(float(unweighted[0] / unweighted[1]), rel=1e-6)
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss_sum, _ = losses.segmentation_loss_terms(labels, variable, class_weights=(1.0, 0.0, 1.0, 1.0))
    gradient = tape.gradient(loss_sum, variable).numpy()
    assert np.all(gradient[(labels == 1) | (labels == 255)] == 0)
    assert np.all(np.any(gradient[(labels == 0) | (labels == 3)] != 0, axis=-1))


# --- inverse-frequency weights from the records -------------------------------------------------------

def _numpy_counts(pattern, num_classes):
    """Pixels per class of every record, decoded with PIL rather than TF."""
    counts = np.zeros(256, np.int64)
    for path in list_files(pattern):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            features = tf.train.Example.FromString(record).features.feature
            label = np.asarray(Image.open(io.BytesIO(features[tfrecord.LABEL_ENCODED].bytes_list.value[0])))
            counts += np.bincount(label.ravel(), minlength=256)
    assert counts[num_classes:255].sum() == 0 and counts[255] > 0  # the data has ignored pixels
    return counts[:num_classes]


def test_inverse_frequency_weights_are_reproducible_from_the_records(tfrecords):
    pattern = f"{tfrecords}/train-*"
    expected_counts = _numpy_counts(pattern, 21)
    counts = class_weights_lib.count_class_pixels(pattern, num_classes=21, ignore_label=255)
    np.testing.assert_array_equal(counts, expected_counts)
    present = expected_counts > 0
    assert present.sum() == 4  # background and classes 1-3; the 17 others are absent and get 0
    expected = np.where(present, expected_counts.sum() / (present.sum() * np.maximum(expected_counts, 1)), 0.0)
    weights = class_weights_lib.inverse_frequency(counts)
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    assert (weights * counts).sum() == pytest.approx(counts.sum())  # a labelled pixel weighs 1 on average


def test_a_label_outside_the_classes_is_named(tfrecords):
    with pytest.raises(DataError, match=r"train-\S+ .*record"):
        class_weights_lib.count_class_pixels(f"{tfrecords}/train-*", num_classes=2, ignore_label=255)


def test_inverse_frequency_is_stored_in_the_workdir_and_reused_on_resume(tfrecords, tmp_path, monkeypatch):
    used = []

    def spy(*args, **kwargs):
        used.append(kwargs["class_weights"])
        return make_train_step(*args, **kwargs)

    make_train_step = trainer.make_train_step
    monkeypatch.setattr(trainer, "make_train_step", spy)
    workdir = tmp_path / "run"
    config = small_config(tfrecords, steps=1, class_weights=("inverse_frequency",))
    lines = []
    trainer.train(config, str(workdir), log=lines.append)
    stored = json.loads((workdir / "class_weights.json").read_text())
    counts = _numpy_counts(config.dataset.train_pattern, 21)
    assert stored["pixel_counts"] == counts.tolist() and stored["labelled_pixels"] == counts.sum()
    np.testing.assert_allclose(stored["weights"], class_weights_lib.inverse_frequency(counts), rtol=1e-12)
    assert stored["train_pattern"] == config.dataset.train_pattern and "N / (K * n_c)" in stored["formula"]
    assert used == [tuple(stored["weights"])]

    # A resumed run takes the stored weights (here edited by hand) and never recounts.
    stored["weights"] = [0.0, 1.0, 2.0, 3.0] + [0.0] * 17
    (workdir / "class_weights.json").write_text(json.dumps(stored))
    monkeypatch.setattr(class_weights_lib, "count_class_pixels", lambda *a, **k: pytest.fail("recounted"))
    lines = []
    trainer.train(small_config(tfrecords, steps=2, class_weights=("inverse_frequency",)), str(workdir),
                  log=lines.append)
    assert f"Class weights (inverse frequency) from {workdir / 'class_weights.json'}." in lines
    assert used[-1] == tuple(stored["weights"])


def test_an_unreadable_weights_file_is_named_with_the_fix(tfrecords, tmp_path):
    (tmp_path / "class_weights.json").write_text('{"weights": [1.0, 2.')  # a truncated write by hand
    config = small_config(tfrecords, class_weights=("inverse_frequency",))
    with pytest.raises(ValueError) as error:
        class_weights_lib.resolve_class_weights(config, str(tmp_path), num_classes=21)
    assert str(error.value).startswith(f"{tmp_path / 'class_weights.json'} cannot be used (JSONDecodeError")
    assert str(error.value).endswith("delete it to recompute the class weights.")
    (tmp_path / "class_weights.json").write_text(json.dumps({"weights": [1.0] * 20}))
    with pytest.raises(ValueError, match=r"class_weights.json cannot be used \(ValueError: its weights has 20 values "
                                         r"for 21 classes"):
        class_weights_lib.resolve_class_weights(config, str(tmp_path), num_classes=21)


# --- configuration errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ((1.0, 2.0), "config.train.class_weights has 2 values for 21 classes: give one weight per class or "
                 "'inverse_frequency'."),
    ((1.0,) * 20 + (-1.0,), "config.train.class_weights[20]=-1.0 is not a finite weight >= 0"),
    ((0.0,) * 21, "config.train.class_weights are all 0"),
    (("inverse_frequencies",), "config.train.class_weights=('inverse_frequencies',): give one number per class"),
])
def test_bad_class_weights_fail_before_training(tfrecords, value, message):
    config = small_config(tfrecords, class_weights=value)
    with pytest.raises(ValueError) as error:
        check_config(config, num_replicas=1)
    assert str(error.value).startswith(message)


def test_cli_reports_bad_class_weights_in_one_line(tfrecords, tmp_path):
    # An experiment file as users write them: default_config() with fields changed (class_weights stays a tuple).
    config_file = tmp_path / "config.py"
    config_file.write_text(
        "from deeplab_tf.training.config import default_config\n\n"
        "def get_config():\n    config = default_config()\n"
        f"    config.dataset.train_pattern = {tfrecords + '/train-*'!r}\n"
        "    config.model.backbone = 'resnet_v1_50'\n    config.train.update(crop_size=(65, 65), batch_size=2)\n"
        "    return config\n")
    binary = shutil.which("deeplab-train")
    command = ([binary] if binary else [sys.executable, "-m", "deeplab_tf.cli.train"]) + [
        f"--config={config_file}", f"--workdir={tmp_path / 'run'}", "--config.train.class_weights=1,-2"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout, not the installed one
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines()  # without TensorFlow's start-up logging
             if line.strip() and not line.startswith(("WARNING: All log messages", "I0000", "E0000", "W0000"))]
    assert lines == ["deeplab-train: config.train.class_weights has 2 values for 21 classes: give one weight per "
                     "class or 'inverse_frequency'."], result.stderr
    assert not (tmp_path / "run").exists()
