"""Training: the poly schedule, the loss, and the real loop at test size (ResNet-50, 65x65 crops)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf import workdir as workdir_lib
from deeplab_tf.training import losses
from deeplab_tf.training import config as config_lib
from deeplab_tf.training.config import check_config, recorded_run_config
from deeplab_tf.training.schedules import PolyLearningRate
from deeplab_tf.training.trainer import build_model, train
from training_utils import make_learnable_voc, small_config

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    return make_learnable_voc(str(tmp_path_factory.mktemp("voc")))


def _train(config, workdir, **kwargs):
    lines = []
    summary = train(config, str(workdir), log=lines.append, **kwargs)
    return summary, lines


def _moving_stats(model):
    return {v.path: v.numpy().copy() for v in model.non_trainable_variables if "moving" in v.path}


# --- schedule and loss -----------------------------------------------------------------------------

@pytest.mark.parametrize("step", [0, 1, 1000, 29999, 30000, 40000])
def test_poly_learning_rate_is_the_formula(step):
    schedule = PolyLearningRate(0.007, 30000, power=0.9)
    expected = 0.007 * (1 - min(step, 30000) / 30000) ** 0.9
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_warmup_is_constant_then_poly_at_the_global_step():
    schedule = PolyLearningRate(0.01, 100, power=0.9, warmup_steps=10, warmup_learning_rate=1e-4)
    assert float(schedule(0)) == pytest.approx(1e-4) and float(schedule(9)) == pytest.approx(1e-4)
    assert float(schedule(10)) == pytest.approx(0.01 * 0.9 ** 0.9, rel=1e-5)


def test_ignored_pixels_contribute_nothing_to_loss_or_gradients():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (2, 5, 6)).astype(np.int32)
    labels[0, :2] = 255
    logits = tf.Variable(rng.normal(size=(2, 5, 6, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss_sum, count = losses.segmentation_loss_terms(labels, logits)
    gradient = tape.gradient(loss_sum, logits).numpy()
    assert count == np.sum(labels != 255)
    assert np.all(gradient[0, :2] == 0) and np.any(gradient[0, 2:] != 0)
    # Changing the logits of ignored pixels changes nothing; the loss is plain CE over the rest.
    perturbed = logits.numpy()
    perturbed[0, :2] += 100.0
    assert float(losses.segmentation_loss_terms(labels, perturbed)[0]) == pytest.approx(float(loss_sum))
    valid = labels != 255
    log_probs = tf.nn.log_softmax(logits).numpy()
    expected = -np.sum(np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0][valid])
    assert float(loss_sum) == pytest.approx(expected, rel=1e-5)


def test_top_k_keeps_the_hardest_pixels():
    labels = np.zeros((1, 2, 5), np.int32)
    labels[0, 1, 4] = 255
    logits = np.zeros((1, 2, 5, 2), np.float32)
    logits[..., 1] = np.arange(10, dtype=np.float32).reshape(2, 5)  # Harder (for class 0) to the right.
    pixel_losses, _ = losses.pixel_cross_entropy(labels, logits)
    loss_sum, count = losses.segmentation_loss_terms(labels, logits, top_k_percent_pixels=0.25)
    assert int(count) == 2  # int(10 pixels * 0.25), both losses non-zero (tests/test_losses.py has the rule)
    assert float(loss_sum) == pytest.approx(float(np.sort(pixel_losses.numpy())[-2:].sum()), rel=1e-6)
    with pytest.raises(ValueError, match="top_k_percent_pixels"):
        losses.segmentation_loss_terms(labels, logits, top_k_percent_pixels=0.0)


# --- bad configurations: errors before any training ------------------------------------------------

@pytest.mark.parametrize("override, message", [
    (dict(strategy="horovod"), "config.train.strategy='horovod' is unknown"),
    (dict(crop_size=(25, 25)), r"crop_size=\(25, 25\) is too small for output_stride=16.*at least 33"),
    (dict(batch_size=1), "cannot estimate batch statistics"),
    (dict(init_checkpoint="/nonexistent/resnet_v1_50.ckpt"),
     "init_checkpoint='/nonexistent/resnet_v1_50.ckpt' does not exist"),
])
def test_bad_configs_fail_before_training(tfrecords, tmp_path, override, message):
    config = small_config(tfrecords, **override)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        train(config, str(tmp_path / "run"), log=lambda line: None)
    assert not os.path.exists(tmp_path / "run")  # nothing written: not even the workdir and its lock


@pytest.mark.parametrize("field, value, message", [
    ("train.crop_size", (65, "abc"), "config.train.crop_size=(65, 'abc') is not N or H,W in pixels, e.g. 513 or 513,513."),
    ("train.crop_size", (65, 65, 3), "config.train.crop_size=(65, 65, 3) is not N or H,W in pixels"),
    ("train.crop_size", (0, 65), "config.train.crop_size=(0, 65) is not N or H,W in pixels"),
    ("train.steps", -5, "config.train.steps=-5 is not a whole number from 1 up."),
    ("train.batch_size", 2.5, "config.train.batch_size=2.5 is not a whole number from 1 up."),
    ("train.steps_per_schedule", 0, "config.train.steps_per_schedule=0 is not a whole number from 1 up."),
    ("train.log_every_steps", 0, "config.train.log_every_steps=0 is not a whole number from 1 up."),
    ("train.keep_checkpoints", True, "config.train.keep_checkpoints=True is not a whole number from 1 up."),
    ("train.warmup_steps", -1, "config.train.warmup_steps=-1 is not a whole number from 0 up (0: off)."),
    ("train.min_resize_value", -513, "config.train.min_resize_value=-513 is not a whole number from 0 up"),
    ("train.seed", -1, "config.train.seed=-1 is not a whole number in 0..2**32-1."),
    ("train.flip", "yes", "config.train.flip='yes' is not True or False."),
    ("train.base_learning_rate", float("nan"), "config.train.base_learning_rate=nan is not a number > 0."),
    ("train.checkpoint_every_minutes", 0.0, "config.train.checkpoint_every_minutes=0.0 is not a number > 0."),
    ("train.momentum", 1.5, "config.train.momentum=1.5 is not a number in [0, 1)."),
    ("train.top_k_percent_pixels", 0.0, "config.train.top_k_percent_pixels=0.0 is not a fraction in (0, 1]."),
    ("train.init_exclude", ("logits(",), "config.train.init_exclude=('logits(',) is not a tuple of regular expressions"),
    ("train.init_checkpoint", None, "config.train.init_checkpoint=None is not a string."),
    ("train.precision", "fp16", "config.train.precision='fp16' is unknown; choose one of float32, mixed_bfloat16, "
                                "mixed_float16."),
    ("train.optimizer", "adam", "config.train.optimizer='adam' is unknown; choose one of momentum, keras_sgd."),
    ("model.output_stride", 12, "config.model.output_stride=12 is not a power of two from 4 up, e.g. 8 or 16."),
    ("model.multi_grid", (1, 2), "config.model.multi_grid=(1, 2) is not () or three unit rates, e.g. 1,2,4."),
    ("model.multi_grid", ("",), "config.model.multi_grid=('',) is not () or three unit rates"),  # --...multi_grid=
    ("model.atrous_rates", (6, 0, 18), "config.model.atrous_rates=(6, 0, 18) is not () or ASPP rates"),
    ("model.num_cascaded_blocks", 4, "config.model.num_cascaded_blocks=4 is not a number of blocks in 0..3"),
    ("model.head", "deeplabv3+", "config.model.head='deeplabv3+' is unknown; choose one of aspp, cascade."),
    ("model.dropout_rate", 1.0, "config.model.dropout_rate=1.0 is not a number in [0, 1)."),
    ("model.bn_epsilon", -1e-5, "config.model.bn_epsilon=-1e-05 is not a number > 0."),
    ("dataset.name", "voc", "config.dataset.name='voc' is unknown; choose one of ade20k, cityscapes, coco_voc, "),
    ("dataset.ignore_label", 300, "config.dataset.ignore_label=300 is not a label value in 0..255"),
    ("dataset.num_classes", -1, "config.dataset.num_classes=-1 is not 0 (the dataset's) or a number of classes"),
    ("dataset.eval_crop_size", (513, 0), "config.dataset.eval_crop_size=(513, 0) is not () (each image at its own "
                                         "size) or N or H,W in pixels"),
    ("dataset.bootstrap_classes", (2, "chair"), "config.dataset.bootstrap_classes=(2, 'chair') is not a tuple of "
                                                "class ids"),
    ("dataset.bootstrap_classes", (2, 21), "config.dataset.bootstrap_classes=(2, 21) names class 21, but the dataset "
                                           "has 21 classes (0..20)."),
    ("dataset.bootstrap_factor", 0, "config.dataset.bootstrap_factor=0 is not a whole number from 1 up."),
    ("dataset.eval_pattern", "/nowhere/val-*", "no TFRecord files match ['/nowhere/val-*']"),
    ("train.min_scale", 2.5, "config.train.min_scale=2.5 is above config.train.max_scale=2.0: swap them"),
])
def test_odd_field_values_are_one_line_before_anything_is_written(tfrecords, tmp_path, field, value, message):
    """Every field is checked for its type, sign, length and names (as a Python config file may set any value; the
    command line gives tuples of strings) before the workdir is made: one line naming the field, the value and what
    it takes. They passed the checks and failed in the tf.data graph, or gave a traceback, or a wrong reason."""
    config = small_config(tfrecords)
    section, name = field.split(".")
    with config.ignore_type():
        config[section][name] = value
    with pytest.raises(ValueError) as error:
        train(config, str(tmp_path / "run"), log=lambda line: None)
    assert str(error.value).startswith(message) and "\n" not in str(error.value), str(error.value)
    assert not (tmp_path / "run").exists()


def test_every_field_of_the_default_config_says_what_it_takes():
    """A field added to default_config() needs its entry in _field_checks (until then its values go unchecked)."""
    assert set(config_lib._field_checks()) == {path for path, _ in config_lib._fields(config_lib.default_config())}


def test_unknown_and_missing_fields_and_sizes_given_as_n(tfrecords, tmp_path):
    config = small_config(tfrecords)
    with config.unlocked():
        config.train.stepz = 4
    with pytest.raises(ValueError, match=r"^config.train.stepz is not a field of deeplab-train's config; did you mean "
                                         r"config.train.steps\?$"):
        check_config(config, num_replicas=1)
    config = small_config(tfrecords)
    del config.train.steps
    with pytest.raises(ValueError, match=r"^config.train.steps is missing: start the config from deeplab_tf"):
        check_config(config, num_replicas=1)
    config = small_config(tfrecords, crop_size=(81,))  # --config.train.crop_size=81, as the binaries' N
    config.dataset.eval_crop_size = (97,)
    check_config(config, num_replicas=1)
    assert (config.train.crop_size, config.dataset.eval_crop_size) == ((81, 81), (97, 97))


def test_a_recorded_config_comes_back_with_the_types_of_the_default_config(tfrecords, tmp_path):
    """config.json stores tuples as JSON lists: a rerun gets the default config's types back, so overrides and
    checks treat it as a config file; a field it does not know or cannot hold is named with the file."""
    config = small_config(tfrecords, class_weights=(1.0, 2.0) + (1.0,) * 19, init_exclude=("logits", "aspp"))
    config.model.atrous_rates = (3, 6, 9)
    workdir_lib.save_run_config(config, str(tmp_path / "run"), {"argv": ["deeplab-train"]})
    for path in (tmp_path / "run", tmp_path / "run" / "config.json"):
        rerun = recorded_run_config(str(path))
        assert rerun == config and rerun.model.atrous_rates == (3, 6, 9)
        assert all(isinstance(value, tuple) for value in (rerun.train.crop_size, rerun.train.class_weights,
                                                          rerun.model.multi_grid, rerun.dataset.eval_crop_size))
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    for section, name, value, message in (
            ("train", "stepz", 4, "records config.train.stepz, which deeplab-train's config does not have: remove it"),
            ("train", "steps", 1.5, "records config.train.steps=1.5, but the field holds int values: fix it")):
        (tmp_path / "bad").mkdir(exist_ok=True)
        recorded["config"][section] = {**recorded["config"][section], name: value}
        (tmp_path / "bad" / "config.json").write_text(json.dumps(recorded))
        with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'bad' / 'config.json'} {message}")):
            recorded_run_config(str(tmp_path / "bad"))
        del recorded["config"][section][name]
    with pytest.raises(FileNotFoundError, match="neither a workdir holding a config.json nor such a file"):
        recorded_run_config(str(tmp_path))


def test_empty_train_pattern_is_refused(tfrecords, tmp_path):
    config = small_config(tfrecords)
    config.dataset.train_pattern = ""
    with pytest.raises(ValueError, match="train_pattern is empty"):
        train(config, str(tmp_path / "run"), log=lambda line: None)


# --- the loop --------------------------------------------------------------------------------------

def test_default_run_checkpoints_resumes_and_loads_at_output_stride_8(tfrecords, tmp_path):
    workdir = tmp_path / "run"
    config = small_config(tfrecords, steps=3)
    # Two globs joined by a comma (e.g. Cityscapes fine + coarse), and an evaluation after training.
    config.dataset.train_pattern = f"{tfrecords}/train-00000-*,{tfrecords}/train-00001-*"
    config.dataset.eval_pattern = f"{tfrecords}/val-*"
    summary, lines = _train(config, workdir)
    assert summary["step"] == 3 and summary["checkpoint"].endswith("ckpt-3")
    assert any(re.match(r"Evaluation at output stride 16: mIOU [\d.]+ on .*val-\* -> .*eval_os16/metrics-3.json",
                        line) for line in lines), lines
    progress = [line for line in lines if line.startswith("step ")]
    assert len(progress) == 3
    assert re.match(r"step 3/3 \| loss [\d.]+ \| total [\d.]+ \| lr [\d.]+ \| [\d.]+ s/step \| [\d.]+ img/s \| "
                    r"ETA \d+:\d\d:\d\d", progress[-1])
    saved = json.load(open(workdir / "config.json"))
    assert saved["config"]["train"]["steps"] == 3
    tags = {value.tag for path in tf.io.gfile.glob(str(workdir / "train" / "events.out.tfevents.*"))
            for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value}
    assert {"train/loss", "train/total_loss", "train/learning_rate", "train/image_label_prediction"} <= tags

    # The eval side rebuilds the model at OS 8 from the workdir.
    model, prefix, model_config = workdir_lib.load_model(str(workdir), output_stride=8)
    assert prefix == summary["checkpoint"] and model_config["output_stride"] == 16
    assert model(tf.zeros([1, 33, 33, 3]), training=False).shape == (1, 33, 33, 21)

    # A longer schedule in the same workdir resumes at step 3 with the schedule at step 3.
    config = small_config(tfrecords, steps=5)
    summary, lines = _train(config, workdir)
    assert any("Resuming from" in line and "ckpt-3 at step 3" in line for line in lines)
    assert [line.split(" |")[0] for line in lines if line.startswith("step ")] == ["step 4/5", "step 5/5"]
    lr = float(re.search(r"lr ([\d.]+)", [line for line in lines if line.startswith("step 4/5")][0]).group(1))
    assert lr == pytest.approx(0.007 * (1 - 4 / 5) ** 0.9, abs=1e-6)
    assert summary["step"] == 5


def test_loss_decreases_on_learnable_data(tfrecords, tmp_path):
    config = small_config(tfrecords, steps=24, base_learning_rate=0.01, min_scale=1.0, max_scale=1.0)
    config.model.weight_decay = 0.0
    _, lines = _train(config, tmp_path / "run")
    values = [float(re.search(r"loss ([\d.]+)", line).group(1)) for line in lines if line.startswith("step ")]
    assert len(values) == 24
    assert np.mean(values[-4:]) < 0.7 * np.mean(values[:4]), values


def test_batch_norm_statistics_move_when_trained_and_stay_frozen_in_stage_2(tfrecords, tmp_path):
    """Stage 1 trains BN; stage 2 starts from stage 1 (new logits) with BN frozen, as section 4.3 does."""
    stage1 = small_config(tfrecords, steps=2)
    initial = _moving_stats(build_model(stage1))
    _train(stage1, tmp_path / "stage1")
    trained = _moving_stats(workdir_lib.load_model(str(tmp_path / "stage1"))[0])
    assert initial.keys() == trained.keys() and len(trained) > 100
    assert all(not np.array_equal(initial[name], trained[name]) for name in trained)

    stage2 = small_config(tfrecords, steps=2, fine_tune_batch_norm=False, base_learning_rate=0.001,
                          init_checkpoint=str(tmp_path / "stage1"))
    stage2.dataset.num_classes = 4  # A new head: logits are excluded from the initialisation.
    _, lines = _train(stage2, tmp_path / "stage2")
    assert any(line.startswith("Initialised ") for line in lines)
    assert any("Excluded by config.train.init_exclude" in line and "logits" in line for line in lines)
    frozen = _moving_stats(workdir_lib.load_model(str(tmp_path / "stage2"))[0])
    assert all(np.array_equal(trained[name], frozen[name]) for name in trained)


def test_mixed_bfloat16_trains_with_float32_logits_and_loss(tfrecords, tmp_path):
    config = small_config(tfrecords, steps=1, precision="mixed_bfloat16")
    summary, _ = _train(config, tmp_path / "run")
    assert np.isfinite(summary["loss"]) and keras.mixed_precision.global_policy().name == "float32"
    model = build_model(config)
    assert any(layer.compute_dtype == "bfloat16" for layer in model.backbone.layers)
    assert model.get_layer("logits").compute_dtype == "float32"
    assert model(tf.zeros([1, 65, 65, 3]), training=False).dtype == tf.float32


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tfrecords, tmp_path):
    workdir = tmp_path / "run"
    _train(small_config(tfrecords, steps=2), workdir)
    # An absurd learning rate overflows the weights within a few steps.
    with pytest.raises(FloatingPointError, match="training stopped without saving") as error:
        _train(small_config(tfrecords, steps=8, base_learning_rate=1e30, checkpoint_every_steps=1), workdir)
    nan_step, named = re.search(r"at step (\d+);.*last good checkpoint is (\S+)\. ", str(error.value)).groups()
    latest = tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(str(workdir)))
    assert named == latest and int(latest.rsplit("-", 1)[1]) in range(2, int(nan_step))
    model, _, _ = workdir_lib.load_model(str(workdir))
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weights)


def _write_config_file(path, tfrecords, **overrides):
    """A config file deeplab-train can load, built from the test's small config."""
    config = small_config(tfrecords, **overrides)
    path.write_text("import ml_collections, json\n\n"
                    f"def get_config():\n    return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n")
    return str(path)


def test_sigterm_saves_a_checkpoint_then_the_same_command_resumes(tfrecords, tmp_path):
    workdir = tmp_path / "run"
    config_file = _write_config_file(tmp_path / "config.py", tfrecords, steps=1000, checkpoint_every_steps=1000,
                                     checkpoint_every_minutes=100.0)
    command = [sys.executable, "-m", "deeplab_tf.cli.train", f"--config={config_file}", f"--workdir={workdir}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("step 2/1000"):
            process.send_signal(signal.SIGTERM)
            break
    output += process.stdout.readlines()
    assert process.wait(timeout=120) == 0, "".join(output)
    text = "".join(output)
    saved = re.search(r"SIGTERM received: saved (\S+) at step (\d+)", text)
    assert saved, text
    assert int(saved.group(2)) >= 2 and saved.group(1).endswith(f"ckpt-{saved.group(2)}")

    # Resuming under the same command (shortened schedule) starts from the saved step.
    result = subprocess.run(command + [f"--config.train.steps={int(saved.group(2)) + 1}"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"at step {saved.group(2)}." in result.stdout


def test_cli_reports_a_bad_config_without_a_traceback(tfrecords, tmp_path):
    config_file = _write_config_file(tmp_path / "config.py", tfrecords)
    result = subprocess.run([sys.executable, "-m", "deeplab_tf.cli.train", f"--config={config_file}",
                             f"--workdir={tmp_path / 'run'}", "--config.train.strategy=horovod"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "deeplab-train: config.train.strategy='horovod' is unknown" in result.stderr
    assert "Traceback" not in result.stderr


# --- strategies that need a process of their own ---------------------------------------------------

@pytest.mark.parametrize("kind, steps", [("mirrored", 3), ("parameter_server", 6)])
def test_distributed_run_writes_a_checkpoint_the_eval_code_loads(tfrecords, tmp_path, kind, steps):
    start = time.time()
    result = subprocess.run([sys.executable, os.path.join(HERE, "run_training_job.py"), kind, tfrecords,
                             str(tmp_path / kind)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert report["step"] == steps and report["checkpoint"].endswith(f"ckpt-{steps}")
    assert report["logits_shape"] == [1, 33, 33, 21] and np.isfinite(report["loss"])
    if kind == "mirrored":
        assert "MirroredStrategy with 2 replica(s) in sync." in result.stdout
    print(f"{kind}: {time.time() - start:.0f} s")
