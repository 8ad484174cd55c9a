"""The served model follows the evaluated protocol: every image padded to the eval canvas, as deeplab-eval
and deeplab-vis pad it, an image larger than the canvas on the canvas deeplab-vis grows for it; the canvas
from --eval_crop_size or, by default, the workdir's config.json."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags
from absl.testing import flagsaver
from PIL import Image

from deeplab_tf import export, workdir as workdir_lib
from deeplab_tf.cli import export as export_cli
from deeplab_tf.data import fake
from deeplab_tf.evaluation import inference
from eval_utils import make_workdir, run_main
from test_export import SUBPROCESS_ENV, _saved_model_cli

CANVAS = (49, 49)  # 16 * 3 + 1, recorded in the workdir's config.json
# (name, height, width): one image inside the canvas, one wider (its canvas grows to 49 x 65).
IMAGES = (("small", 33, 45), ("wide", 41, 61))


def _script(name):
    """The installed console script `name` (beside this Python), as users run it."""
    path = shutil.which(name, path=os.path.dirname(sys.executable))
    assert path, f"{name} is not installed: pip install -e ."
    return path


def _run(name, *flags):
    result = subprocess.run([_script(name), *flags], capture_output=True, text=True, env=SUBPROCESS_ENV,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A workdir whose config.json evaluates on CANVAS, and a folder of JPEGs."""
    root = tmp_path_factory.mktemp("canvas")
    workdir = str(root / "run")
    make_workdir(workdir)
    with open(os.path.join(workdir, workdir_lib.RUN_CONFIG), "w") as f:
        json.dump({"config": {"dataset": {"eval_crop_size": list(CANVAS)}}}, f)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for name, height, width in IMAGES:
        Image.fromarray(fake.random_image(rng, height, width)).save(images / f"{name}.jpg", quality=90)
    return dict(root=root, workdir=workdir, images=images)


@pytest.fixture(scope="module")
def exported(run):
    """deeplab-export without --eval_crop_size: (stdout, version directory)."""
    base = run["root"] / "models"
    return _run("deeplab-export", f"--checkpoint={run['workdir']}", f"--export_dir={base}"), str(base / "1")


def test_export_takes_the_workdirs_canvas_and_records_it(run, exported):
    out, version_dir = exported
    config = os.path.join(run["workdir"], "config.json")
    assert f"{version_dir} in " in out and f"MB), images padded to 49x49 (the eval_crop_size of {config})" in out
    with open(os.path.join(version_dir, export.SETTINGS_FILE)) as f:
        assert json.load(f)["eval_crop_size"] == list(CANVAS)


def test_served_labels_are_deeplab_vis_pngs_inside_and_beyond_the_canvas(run, exported):
    """serving_default (Python loader and saved_model_cli run) gives deeplab-vis's index PNG for a JPEG inside
    the canvas and for one wider than it, whose canvas both grow to 49 x 65."""
    vis_dir = run["root"] / "vis"
    out = _run("deeplab-vis", f"--checkpoint={run['workdir']}", f"--image_dir={run['images']}",
               f"--output_dir={vis_dir}", "--eval_crop_size=49")
    assert ("deeplab-vis: image 'wide' is 41x61, larger than the eval crop 49x49 (--eval_crop_size): segmented "
            "on a 49x65 canvas (sides grown to output_stride * k + 1)") in out.splitlines()
    serving = tf.saved_model.load(exported[1]).signatures[export.SERVING_SIGNATURE]
    for name, height, width in IMAGES:
        data = (run["images"] / f"{name}.jpg").read_bytes()
        labels = serving(image_bytes=tf.constant([data]))["labels"].numpy()[0]
        np.testing.assert_array_equal(labels, np.asarray(Image.open(vis_dir / "index" / f"{name}.png")), err_msg=name)
    np.save(run["root"] / "request.npy", np.array([data], dtype=object))
    _saved_model_cli("run", "--dir", exported[1], "--tag_set", "serve", "--signature_def", export.SERVING_SIGNATURE,
                     "--inputs", f"image_bytes={run['root'] / 'request.npy'}", "--outdir", str(run["root"] / "out"))
    np.testing.assert_array_equal(np.load(run["root"] / "out" / "labels.npy")[0],
                                  np.asarray(Image.open(vis_dir / "index" / "wide.png")))


def test_the_canvas_changes_the_served_labels(run, exported):
    """The float-image signature equals `predict` on the canvas (grown for the wide image), not at own size."""
    model = workdir_lib.load_model(run["workdir"], fold_batch_norm=True)[0]  # what deeplab-export serves
    predict_images = tf.saved_model.load(exported[1]).signatures[export.FLOAT_SIGNATURE]
    changed = 0
    for name, height, width in IMAGES:
        image = np.asarray(Image.open(run["images"] / f"{name}.jpg"), np.float32)[np.newaxis]
        served = predict_images(images=image)["labels"].numpy()
        canvas = (49, 65) if width > CANVAS[1] else CANVAS
        np.testing.assert_array_equal(served, inference.predict(model, image, eval_crop_size=canvas), err_msg=name)
        changed += (served != inference.predict(model, image).numpy()).sum()
    assert changed > 0, "own size and canvas agree everywhere: the test cannot tell them apart"


def test_canvas_for_grows_only_the_sides_the_image_exceeds():
    for size, stride, canvas in (((33, 45), 16, (49, 49)), ((41, 61), 16, (49, 65)), ((50, 49), 16, (65, 49)),
                                 ((49, 100), 8, (49, 105)), ((97, 97), 32, (97, 97))):
        assert tuple(inference.canvas_for(size, (49, 49), stride).numpy()) == canvas, (size, stride)


def _canvas_choice(workdir, *flag_args):
    """deeplab-export's canvas and its source for these flags, without exporting."""
    with flagsaver.flagsaver():
        flags.FLAGS(["deeplab-export", f"--checkpoint={workdir}", *flag_args])
        return export_cli.common.eval_crop_size(workdir)


def test_the_flag_overrides_the_workdir_and_none_is_own_size(run, tmp_path):
    """--eval_crop_size wins over config.json, none asks for own size; a workdir without config.json (or with
    an empty eval_crop_size) exports at own size."""
    assert _canvas_choice(run["workdir"], "--eval_crop_size=33,65") == ([33, 65], "--eval_crop_size")
    assert _canvas_choice(run["workdir"], "--eval_crop_size=none") == (None, "--eval_crop_size")
    bare = str(tmp_path / "bare")
    shutil.copytree(run["workdir"], bare, ignore=shutil.ignore_patterns("config.json"))
    assert _canvas_choice(bare) == (None, "no --eval_crop_size, none recorded")
    with open(os.path.join(bare, "config.json"), "w") as f:
        json.dump({"config": {"dataset": {"eval_crop_size": []}}}, f)
    assert _canvas_choice(bare) == (None, "no --eval_crop_size, none recorded")


@pytest.mark.parametrize("value", ["0", "49,x", "1,2,3", "-5"])
def test_bad_eval_crop_sizes_are_one_line_naming_the_flag(run, tmp_path, value):
    with pytest.raises(app.UsageError, match="^--eval_crop_size: give N or H,W in pixels") as raised:
        run_main(export_cli, checkpoint=run["workdir"], export_dir=str(tmp_path / "models"), eval_crop_size=value)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "models").exists()


def test_a_malformed_recorded_canvas_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"config": {"dataset": {"eval_crop_size": [513]}}}))
    with pytest.raises(ValueError, match=r"config.json: config.dataset.eval_crop_size is \[513\], not \[height, "
                                         r"width\] in pixels: .*--eval_crop_size"):
        workdir_lib.recorded_eval_crop_size(str(tmp_path))
