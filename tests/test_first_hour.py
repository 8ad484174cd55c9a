"""What a newcomer meets in the first hour: each binary's --help shows the flags its README commands use without
loading TensorFlow, nothing prints start-up lines that read as failures, and deeplab-eval / deeplab-vis take the
dataset (classes, names, colours) and the evaluation canvas from the checkpoint's workdir.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deeplab_tf import workdir as workdir_lib
from deeplab_tf.training.config import default_config
from eval_utils import make_workdir
from test_console_scripts import REPO, console_script_command, console_scripts
from test_readme_commands import readme_commands
from training_utils import make_learnable_voc

# TensorFlow's C++ logging prefixes: an E0000 "failed call to cuInit" on a CPU machine reads as a failure.
START_UP_PREFIXES = ("E0000", "I0000", "W0000", "WARNING: All log messages before absl::InitializeLog")


def _env():
    # The user's environment as it comes: no TF_CPP_MIN_LOG_LEVEL set by the test.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run(command, **kwargs):
    return subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, **kwargs)


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_help_lists_the_readme_flags_without_loading_tensorflow(name):
    """--help is what a user types first: it must answer at once (no TensorFlow import, whose start-up takes
    seconds here) and name every flag the README's commands give this binary."""
    module, function = console_scripts()[name].split(":")
    code = (f"import sys; sys.argv = [{name!r}, '--help']; from {module} import {function}\n"
            f"try:\n    {function}()\nexcept SystemExit as exit_:\n    assert exit_.code in (0, None), exit_.code\n"
            "print('tensorflow loaded' if 'tensorflow' in sys.modules else 'tensorflow not loaded')")
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("tensorflow not loaded"), result.stdout[-500:]
    # Flags after "--" belong to the command deeplab-local-cluster wraps.
    readme_flags = {arg.split("=")[0][2:] for _, argv in readme_commands() if argv[0] == name
                    for arg in argv[1:argv.index("--") if "--" in argv else None]
                    if arg.startswith("--") and not arg.startswith("--config.")}
    shown = result.stdout
    assert [flag for flag in sorted(readme_flags) if f"--{flag}:" not in shown and f"--[no]{flag}:" not in shown] == []


@pytest.mark.parametrize("command", [
    [sys.executable, "-c", "import deeplab_tf; deeplab_tf.DeepLabV3(num_classes=3, backbone='resnet_v1_50')"],
    console_script_command("deeplab-demo", console_scripts()["deeplab-demo"], "--help"),
    console_script_command("deeplab-eval", console_scripts()["deeplab-eval"], "--checkpoint=missing",
                           "--eval_pattern=missing-*"),
], ids=["import and build", "deeplab-demo --help", "deeplab-eval error"])
def test_no_start_up_lines_that_read_as_failures(command):
    result = _run(command)
    assert [line for line in result.stderr.splitlines() if line.startswith(START_UP_PREFIXES)] == []


def test_the_serving_decode_plans_no_uint8_transpose():
    """The serving signature's EXIF turn transposed uint8 pixels, which oneDNN refuses on some CPUs with an E0000
    line ("oneDNN supports DT_UINT8 only on platforms with AVX-512") in every demo run and server start."""
    code = ("import io, numpy, PIL.Image, tensorflow as tf\n"
            "from deeplab_tf.export import decoding\n"
            "data = io.BytesIO(); PIL.Image.fromarray(numpy.zeros((9, 7, 3), numpy.uint8)).save(data, 'JPEG')\n"
            "decode = tf.function(lambda x: decoding.decode_image_bytes(x, 10**7, tf.constant(0)))\n"
            "assert decode(tf.constant(data.getvalue())).shape == (9, 7, 3)")
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert "DT_UINT8" not in result.stderr


def test_a_users_log_level_still_shows_tensorflows_lines():
    result = subprocess.run([sys.executable, "-c", "import deeplab_tf; deeplab_tf.DeepLabV3(num_classes=3)"],
                            cwd=REPO, env={**_env(), "TF_CPP_MIN_LOG_LEVEL": "0"}, capture_output=True, text=True,
                            timeout=600)
    assert any(line.startswith("I0000") for line in result.stderr.splitlines()), result.stderr


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory):
    """A workdir trained on the demo's 6-class dataset with its canvas recorded, and records to score."""
    root = tmp_path_factory.mktemp("demo_like")
    tfrecords = make_learnable_voc(str(root / "voc"))
    workdir = str(root / "run")
    make_workdir(workdir, num_classes=6)
    config = default_config()
    config.dataset.name = "demo_shapes"
    config.dataset.eval_crop_size = (65, 65)
    workdir_lib.save_run_config(config, workdir)
    return {"workdir": workdir, "pattern": os.path.join(tfrecords, "val-*"), "root": root}


def _binary(name, *args):
    return console_script_command(name, console_scripts()[name], *args)


def test_deeplab_eval_takes_the_dataset_and_canvas_from_the_workdir(demo_like, tmp_path):
    result = _run(_binary("deeplab-eval", f"--checkpoint={demo_like['workdir']}",
                          f"--eval_pattern={demo_like['pattern']}", f"--output_dir={tmp_path}"))
    assert result.returncode == 0, result.stderr
    metrics = json.load(open(tmp_path / "metrics-5.json"))
    assert metrics["dataset"] == "demo_shapes" and metrics["eval_crop_size"] == [65, 65]
    assert [entry["name"] for entry in metrics["per_class"]] == ["background", "disc", "square", "triangle", "ring",
                                                                  "bar"]


def test_deeplab_vis_takes_the_dataset_colours_from_the_workdir(demo_like, tmp_path):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)).save(image_dir / "a.png")
    result = _run(_binary("deeplab-vis", f"--checkpoint={demo_like['workdir']}", f"--image_dir={image_dir}",
                          f"--output_dir={tmp_path / 'vis'}"))
    assert result.returncode == 0, result.stderr
    labels = np.asarray(Image.open(tmp_path / "vis" / "index" / "a.png"))
    assert labels.shape == (40, 50) and labels.max() < 6


@pytest.mark.parametrize("binary", ["deeplab-eval", "deeplab-vis"])
def test_a_dataset_that_contradicts_the_workdir_is_one_line(demo_like, tmp_path, binary):
    args = ([f"--eval_pattern={demo_like['pattern']}"] if binary == "deeplab-eval" else
            [f"--image_dir={tmp_path}", f"--output_dir={tmp_path / 'vis'}"])
    result = _run(_binary(binary, f"--checkpoint={demo_like['workdir']}", "--dataset=cityscapes", *args))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"{binary}: --dataset=cityscapes, but {demo_like['workdir']}/config.json records training on "
                     f"demo_shapes: drop --dataset to use the run's, or give the checkpoint of a cityscapes run."]
