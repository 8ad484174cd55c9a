"""Checkpoints of the original release (written by its graph, rebuilt with tf_slim in tests/release_reference.py)
load everywhere a checkpoint is taken, and deeplab-convert-checkpoint carries a run both ways bit for bit.

The binaries run as a user runs them (the installed console scripts, in subprocesses).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf import checkpoint_conversion, workdir as workdir_lib
from deeplab_tf.data import get_dataset_info
from deeplab_tf.evaluation import evaluator
from deeplab_tf.modeling import release
from deeplab_tf.training.config import default_config
from tests import release_reference
from tests.training_utils import make_learnable_voc, small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The release's flags for the checkpoints below: ResNet-50 at output stride 16, multi-grid (1, 2, 4), VOC's 21
# classes. Written at step 1000 with accumulators in mid-run, as train.py leaves them.
OPTIONS = release_reference.ReleaseOptions(model_variant="resnet_v1_50", num_classes=21, multi_grid=(1, 2, 4))
RELEASE_FLAGS = ("--multi_grid=1,2,4",)


def _binary(name, *args):
    binary = shutil.which(name)
    module = name.replace("deeplab-", "").replace("-", "_")
    return ([binary] if binary else [sys.executable, "-m", f"deeplab_tf.cli.{module}"]) + list(args)


def _run(name, *args):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(_binary(name, *args), capture_output=True, text=True, timeout=600, env=env)


def _error_lines(stderr):
    """stderr without TensorFlow's start-up logging."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith(("WARNING: All log messages", "I0000", "E0000", "W0000"))]


def _tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _assert_bit_identical(expected, actual):
    assert sorted(expected) == sorted(actual)
    differing = [name for name in expected if expected[name].dtype != actual[name].dtype
                 or expected[name].tobytes() != actual[name].tobytes()]
    assert differing == []


def _train_logdir(directory, options=OPTIONS, *, global_step=1000):
    """A train_logdir as the release's train.py leaves it: model.ckpt-<step> and its `checkpoint` file."""
    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, f"model.ckpt-{global_step}")
    images = np.random.default_rng(3).uniform(0, 255, (2, 65, 65, 3)).astype(np.float32)
    release_reference.write_checkpoint(prefix, options, images, seed=3, global_step=global_step, momentum_scale=0.1)
    with open(os.path.join(directory, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "model.ckpt-{global_step}"\n')
    return prefix


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("release") / "train_logdir")
    _train_logdir(directory)
    return directory


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    return make_learnable_voc(str(tmp_path_factory.mktemp("voc")))


def test_release_checkpoint_is_read_from_its_names_and_shapes(logdir):
    info = release.inspect_release_checkpoint(logdir)
    assert (info.backbone, info.num_classes, info.head, info.image_pooling, info.num_atrous_rates, info.aspp_filters,
            info.global_step, info.has_momentum) == ("resnet_v1_50", 21, "aspp", True, 3, 256, 1000, True)
    assert release.is_release_checkpoint(logdir) and release.is_release_checkpoint(info.prefix)


def test_release_to_ours_to_release_is_bit_identical(logdir, tmp_path):
    """Every tensor the release wrote (weights, statistics, accumulators, global step) comes back exactly."""
    result = _run("deeplab-convert-checkpoint", "--to=deeplab_tf", f"--checkpoint={logdir}",
                  f"--output_dir={tmp_path / 'ours'}", *RELEASE_FLAGS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"deeplab-convert-checkpoint: wrote {tmp_path / 'ours'}/checkpoints/ckpt-1000"
    result = _run("deeplab-convert-checkpoint", "--to=release", f"--checkpoint={tmp_path / 'ours'}",
                  f"--output_dir={tmp_path / 'back'}")
    assert result.returncode == 0, result.stderr
    back = str(tmp_path / "back" / "model.ckpt-1000")
    assert tf.train.latest_checkpoint(str(tmp_path / "back")) == back  # The release's eval.py finds it.
    _assert_bit_identical(_tensors(os.path.join(logdir, "model.ckpt-1000")), _tensors(back))


def test_ours_to_release_to_ours_is_bit_identical(tfrecords, tmp_path):
    """A run trained here, with TF1's momentum form, survives the release's layout exactly: model, slots, step."""
    from deeplab_tf.training.trainer import train
    workdir = str(tmp_path / "run")
    train(small_config(tfrecords, steps=2, optimizer="momentum"), workdir, log=lambda line: None)
    release_prefix, note = checkpoint_conversion.workdir_to_release(workdir, str(tmp_path / "release"))
    assert note == "" and os.path.basename(release_prefix) == "model.ckpt-2"
    assert release.inspect_release_checkpoint(release_prefix).has_momentum
    again = checkpoint_conversion.release_to_workdir(release_prefix, str(tmp_path / "again"))
    _assert_bit_identical(_tensors(tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(workdir))), _tensors(again))


def test_keras_sgd_runs_convert_without_their_slots(tfrecords, tmp_path):
    """Keras' slots hold -lr * a, not the release's accumulator: they are left out, and the report says so."""
    from deeplab_tf.training.trainer import train
    workdir = str(tmp_path / "run")
    train(small_config(tfrecords, steps=1, optimizer="keras_sgd"), workdir, log=lambda line: None)
    prefix, note = checkpoint_conversion.workdir_to_release(workdir, str(tmp_path / "release"))
    assert "momentum accumulators left out" in note and "config.train.optimizer=keras_sgd" in note
    assert not release.inspect_release_checkpoint(prefix).has_momentum


def test_deeplab_eval_scores_a_release_checkpoint_as_its_converted_workdir(logdir, tfrecords, tmp_path):
    """The installed deeplab-eval reads the release's train_logdir directly, with the release's flags, and
    scores exactly what the converted workdir scores."""
    pattern = os.path.join(tfrecords, "val-*")
    direct = _run("deeplab-eval", f"--checkpoint={logdir}", f"--eval_pattern={pattern}",
                  f"--output_dir={tmp_path / 'direct'}", *RELEASE_FLAGS)
    assert direct.returncode == 0, direct.stderr
    direct = json.load(open(tmp_path / "direct" / "metrics-1000.json"))
    assert direct["num_images"] == 2 and direct["checkpoint"] == os.path.join(logdir, "model.ckpt-1000")
    checkpoint_conversion.release_to_workdir(logdir, str(tmp_path / "converted"), multi_grid=(1, 2, 4))
    converted, _ = evaluator.evaluate_checkpoint(str(tmp_path / "converted"), pattern,
                                                 dataset_info=get_dataset_info("pascal_voc_seg"))
    assert direct["per_class"] == converted["per_class"] and direct["mean_iou"] == converted["mean_iou"]


def test_deeplab_export_exports_a_release_checkpoint(logdir, tmp_path):
    result = _run("deeplab-export", f"--checkpoint={logdir}", f"--export_dir={tmp_path / 'exports'}", *RELEASE_FLAGS)
    assert result.returncode == 0, result.stderr
    recorded = json.load(open(tmp_path / "exports" / "1" / "assets.extra" / "deeplab_export.json"))
    assert recorded["checkpoint"] == os.path.join(logdir, "model.ckpt-1000")
    served = tf.saved_model.load(str(tmp_path / "exports" / "1"))
    image = np.random.default_rng(0).uniform(0, 255, (1, 49, 57, 3)).astype(np.float32)
    model, _, _ = workdir_lib.load_model(logdir, multi_grid=(1, 2, 4), fold_batch_norm=True)
    expected = np.argmax(model(image, training=False), axis=-1)
    labels = served.signatures["predict_images"](images=tf.constant(image))["labels"].numpy()
    assert (labels == expected).mean() > 0.999


def test_deeplab_train_fine_tunes_a_release_checkpoint_with_another_class_count(logdir, tfrecords, tmp_path):
    """21 release classes -> 4 of ours: the logits are excluded, everything else starts from the release."""
    config = small_config(tfrecords, steps=1, init_checkpoint=logdir, init_exclude=("logits",))
    config.dataset.num_classes = 4
    config.model.multi_grid = (1, 2, 4)
    path = tmp_path / "config.py"
    path.write_text("import ml_collections, json\n\n"
                    f"def get_config():\n    return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n")
    result = _run("deeplab-train", f"--config={path}", f"--workdir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    reader = tf.train.load_checkpoint(os.path.join(logdir, "model.ckpt-1000"))
    # Every weight and statistic but the logits (the accumulators are not taken without init_continue).
    wanted = [name for name in reader.get_variable_to_shape_map()
              if not name.endswith("/Momentum") and name != "global_step" and not name.startswith("logits/")]
    assert f"Loaded {len(wanted)} variables from {os.path.join(logdir, 'model.ckpt-1000')}" in result.stdout
    assert "Excluded by config.train.init_exclude: logits/semantic/weights, logits/semantic/biases" in result.stdout
    assert "unused" not in result.stdout
    model, _, _ = workdir_lib.load_model(str(tmp_path / "run"))
    # Frozen running statistics are copied as they are (they move only by the decay in one step).
    moving_mean = model.get_layer("aspp").projection.bn.moving_mean.numpy()
    np.testing.assert_allclose(moving_mean, reader.get_tensor("concat_projection/BatchNorm/moving_mean"),
                               rtol=0, atol=1e-3 * np.abs(moving_mean).max())
    assert model.num_classes == 4


def test_init_continue_takes_the_release_step_and_accumulators(logdir, tfrecords, tmp_path):
    from deeplab_tf.training.trainer import train
    config = small_config(tfrecords, steps=1001, init_checkpoint=logdir, init_exclude=(), init_continue=True,
                          optimizer="momentum")
    config.dataset.num_classes = 21
    config.model.multi_grid = (1, 2, 4)
    lines = []
    summary = train(config, str(tmp_path / "run"), log=lines.append)
    assert summary["step"] == 1001  # One step on from the release's 1000.
    loaded = next(line for line in lines if line.startswith("Loaded "))
    reader = tf.train.load_checkpoint(os.path.join(logdir, "model.ckpt-1000"))
    assert loaded.startswith(f"Loaded {len(reader.get_variable_to_shape_map())} variables")  # Slots and step too.


@pytest.mark.parametrize("problem,expected", [
    ("decoder", "is a release checkpoint of DeepLabv3+ (it has decoder/ variables)"),
    ("separable", "an ASPP with separable convolutions"),
    ("xception", "is a release checkpoint of xception_65"),
    ("missing", "has no variable resnet_v1_50/block2/unit_1/bottleneck_v1/conv2/weights (the model's "
                "block2_unit_1/conv2/conv/kernel)"),
    ("shape", "aspp0/weights has shape (1, 1, 2048, 128) but the model's aspp/aspp0/conv/kernel is (1, 1, 2048, 256)"),
])
def test_checkpoints_this_package_cannot_build_are_one_line_and_nothing_is_written(logdir, tmp_path, problem,
                                                                                    expected):
    tensors = _tensors(os.path.join(logdir, "model.ckpt-1000"))
    if problem == "decoder":
        tensors["decoder/decoder_conv0/weights"] = np.zeros([3, 3, 304, 256], np.float32)
    elif problem == "separable":
        tensors["aspp1_depthwise/depthwise_weights"] = tensors.pop("aspp1/weights")[..., :1]
    elif problem == "xception":
        tensors = {name.replace("resnet_v1_50/", "xception_65/"): value for name, value in tensors.items()}
    elif problem == "missing":
        del tensors["resnet_v1_50/block2/unit_1/bottleneck_v1/conv2/weights"]
    else:
        tensors["aspp0/weights"] = tensors["aspp0/weights"][..., :128]
    bad = tmp_path / "bad" / "model.ckpt-5"
    os.makedirs(bad.parent)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(bad), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tensors[name] for name in names])
    result = _run("deeplab-convert-checkpoint", "--to=deeplab_tf", f"--checkpoint={bad}",
                  f"--output_dir={tmp_path / 'out'}", *RELEASE_FLAGS)
    assert result.returncode == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_rates_and_multi_grid_that_do_not_fit_are_one_line_naming_the_flag(logdir, tfrecords, tmp_path):
    pattern = os.path.join(tfrecords, "val-*")
    before = sorted(os.listdir(logdir))
    result = _run("deeplab-eval", f"--checkpoint={logdir}", f"--eval_pattern={pattern}", "--atrous_rates=6,12")
    assert result.returncode == 1
    assert _error_lines(result.stderr) == [
        f"deeplab-eval: --atrous_rates=6,12 gives 2 rates but {logdir}/model.ckpt-1000 has 3 atrous ASPP branches "
        f"(aspp1..aspp3): give 3, as passed to the release's train.py."]
    result = _run("deeplab-eval", f"--checkpoint={logdir}", f"--eval_pattern={pattern}", "--multi_grid=1,2")
    assert _error_lines(result.stderr)[0].startswith("deeplab-eval: --multi_grid=1,2: block4 has 3 units")
    assert sorted(os.listdir(logdir)) == before  # No eval_os16/ beside the checkpoint.


def test_init_checkpoint_of_another_structure_names_the_config_field(logdir, tfrecords, tmp_path):
    from deeplab_tf.training.trainer import train
    config = small_config(tfrecords, steps=1, init_checkpoint=logdir)
    config.model.backbone = "resnet_v1_50_beta"
    with pytest.raises(ValueError, match=r"has model.backbone=resnet_v1_50, config.model.backbone gives "
                                         r"resnet_v1_50_beta: set it as the release's train.py was run"):
        train(config, str(tmp_path / "run"), log=lambda line: None)
    assert not os.path.exists(workdir_lib.checkpoint_dir(str(tmp_path / "run")))


def test_a_run_resumes_only_with_the_momentum_form_it_started_with(tfrecords, tmp_path):
    from deeplab_tf.training.trainer import train
    workdir = str(tmp_path / "run")
    train(small_config(tfrecords, steps=1, optimizer="keras_sgd"), workdir, log=lambda line: None)
    with pytest.raises(ValueError, match=r"trained with config.train.optimizer=keras_sgd, .* resume with "
                                         r"--config.train.optimizer=keras_sgd"):
        train(small_config(tfrecords, steps=2, optimizer="momentum"), workdir, log=lambda line: None)


def test_the_paper_configs_train_with_the_release_momentum_form():
    assert default_config().train.optimizer == "momentum"
