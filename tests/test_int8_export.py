"""deeplab-export --int8_tflite_path: the int8 TFLite file, scored by the installed deeplab-eval --tflite and drawn by
deeplab-vis --tflite, against the float model it came from; the mistakes a user can make, one line each.

The model is a random ResNet-50 whose logits layer is fitted to the learnable split by ridge regression on its
features: trained for 60 steps it still predicted background everywhere (labels then agree trivially), random
logits are too flat to agree (83% of the pixels here), and the fit takes seconds. Its float labels agree with the
int8 file's on 99.3% of the val pixels when this was written (98% asserted).
"""

import os
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app
from PIL import Image

from deeplab_tf import workdir as workdir_lib
from deeplab_tf.cli import eval as eval_cli
from deeplab_tf.cli import export as export_cli
from deeplab_tf.cli import vis as vis_cli
from deeplab_tf.data import eval_dataset
from deeplab_tf.evaluation import evaluator, inference
from deeplab_tf.export import TFLiteModel
from deeplab_tf.modeling.layers import resize_bilinear

from eval_utils import make_workdir, run_main
from training_utils import make_learnable_voc, small_config

CANVAS = (65, 65)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _fit_logits(model, pattern, *, ridge=0.01):
    """Sets the logits layer to the ridge regression of the split's one-hot labels on the features it reads
    (upsampled to the canvas: the layer and the upsampling are both linear)."""
    features = keras.Model(model.input, model.get_layer("logits").input)
    inputs, targets = [], []
    for example in eval_dataset(pattern):
        height, width = example["image"].shape[1:3]
        canvas = inference.pad_to_canvas(example["image"], CANVAS, evaluator.model_pad_value(model))
        values = resize_bilinear(features(canvas, training=False), CANVAS)[0, :height, :width].numpy()
        labels = example["label"][0].numpy()
        inputs.append(values[labels != 255])
        targets.append(np.eye(model.num_classes)[labels[labels != 255]])
    inputs = np.concatenate([np.concatenate(inputs), np.ones([sum(map(len, targets)), 1])], axis=1)
    gram = inputs.T @ inputs
    solution = np.linalg.solve(gram + ridge * np.trace(gram) / len(gram) * np.eye(len(gram)),
                               inputs.T @ np.concatenate(targets))
    kernel, bias = solution[:-1].reshape(1, 1, -1, model.num_classes), solution[-1]
    model.get_layer("logits").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A fitted run (config.json: the training split, a 65x65 canvas) and its int8 file written by deeplab-export
    with 4 calibration images: {workdir, tfrecords, tflite, report}."""
    root = tmp_path_factory.mktemp("int8")
    tfrecords = make_learnable_voc(str(root / "voc"), num_images=8, num_objects=3, seed=2)
    workdir = str(root / "run")
    model = make_workdir(workdir, num_classes=21, step=9)
    _fit_logits(model, os.path.join(tfrecords, "train-*"))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), workdir_lib.checkpoint_dir(workdir),
                               max_to_keep=1).save(checkpoint_number=9)
    config = small_config(tfrecords)
    config.dataset.eval_crop_size = CANVAS
    workdir_lib.save_run_config(config, workdir)
    tflite = str(root / "exports" / "deeplab_int8.tflite")  # the folder does not exist yet: it is made
    # The installed binary, as users run it (and the converter's calibration peak leaves with its process).
    result = subprocess.run(["deeplab-export", f"--checkpoint={workdir}", f"--int8_tflite_path={tflite}",
                             "--calibration_images=4"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(workdir=workdir, tfrecords=tfrecords, tflite=tflite, report=result.stdout)


def test_the_export_names_its_canvas_and_calibration_images_and_records_them_in_the_file(run):
    report = run["report"]
    assert f"wrote {run['tflite']}" in report and "int8, 65x65 input (the eval_crop_size of" in report, report
    train = os.path.join(run["tfrecords"], "train-*")
    assert f"calibrated on 4 images of {train}: 2007_00000" in report, report
    settings = TFLiteModel(run["tflite"]).settings
    assert settings["calibration"] == {"pattern": train, "images": report.split(f"{train}: ")[1].strip().split(", ")}
    assert (settings["eval_crop_size"], settings["output_stride"], settings["num_classes"]) == ([65, 65], 16, 21)
    assert settings["checkpoint"].endswith("ckpt-9")
    details = tf.lite.Interpreter(run["tflite"]).get_tensor_details()
    assert sum(detail["dtype"] == np.int8 for detail in details) > 100  # int8 weights and activations


def test_int8_labels_agree_with_float32_on_98_percent_of_val_pixels(run):
    float_model = workdir_lib.load_model(run["workdir"], fold_batch_norm=True)[0]
    int8_model = TFLiteModel(run["tflite"])
    agree = total = 0
    classes = set()
    for example in eval_dataset(os.path.join(run["tfrecords"], "val-*")):
        labels = [inference.predict(model, example["image"], **evaluator.canvas_options(model, example["image"], CANVAS))
                  for model in (float_model, int8_model)]
        classes.update(np.unique(labels[0]))
        agree += int(tf.reduce_sum(tf.cast(labels[0] == labels[1], tf.int32)))
        total += int(tf.size(labels[0]))
    assert len(classes) > 1  # the fitted model finds objects: the agreement is not background's alone
    assert agree / total >= 0.98, agree / total


def test_installed_deeplab_eval_and_vis_score_and_draw_the_int8_file(run, tmp_path):
    val = os.path.join(run["tfrecords"], "val-*")
    result = subprocess.run(["deeplab-eval", f"--tflite={run['tflite']}", f"--eval_pattern={val}", "--flip"],
                            capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr
    folder = os.path.join(run["workdir"], "eval_os16_crop65x65_flip_int8")
    assert "images padded to 65x65, int8" in result.stdout and f"-> {folder}/metrics-9.json" in result.stdout
    assert os.path.exists(os.path.join(folder, "metrics-9.json"))

    result = subprocess.run(["deeplab-vis", f"--tflite={run['tflite']}", f"--vis_pattern={val}",
                             f"--output_dir={tmp_path / 'vis'}"], capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr
    int8_model = TFLiteModel(run["tflite"])
    for example in eval_dataset(val):
        name = example["filename"][0].numpy().decode()
        drawn = np.array(Image.open(tmp_path / "vis" / "index" / f"{name}.png"))
        expected = inference.predict(int8_model, example["image"],
                                     **evaluator.canvas_options(int8_model, example["image"], CANVAS))[0]
        np.testing.assert_array_equal(drawn, expected.numpy())


def test_export_mistakes_are_one_line_naming_the_flag(run, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    common = dict(checkpoint=run["workdir"], int8_tflite_path=str(tmp_path / "m.tflite"))
    for flag_values, expected in (
            ({**common, "int8_tflite_path": str(a_file / "m.tflite")}, "--int8_tflite_path=.*cannot create it"),
            ({**common, "int8_tflite_path": str(tmp_path)}, "--int8_tflite_path=.* is a folder"),
            ({**common, "calibration_pattern": str(tmp_path / "none-*")}, "--calibration_pattern=.*no TFRecord files"),
            ({**common, "eval_crop_size": "none"}, "--int8_tflite_path needs a fixed input size"),
            ({**common, "eval_scales": "0.5,1.0"}, "--eval_scales, --flip and --window_size set the SavedModel"),
            ({**common, "precision": "mixed_bfloat16"}, "--int8_tflite_path needs --precision=float32")):
        with pytest.raises((app.UsageError, SystemExit), match=expected):
            run_main(export_cli, **flag_values)
    assert not os.path.exists(tmp_path / "m.tflite")


def test_eval_and_vis_mistakes_are_one_line_naming_the_flag(run, tmp_path):
    float_file = tmp_path / "float.tflite"  # a float TFLite file, as --tflite_path writes them
    double = tf.function(lambda x: 2 * x, input_signature=[tf.TensorSpec([1, 4], tf.float32)]).get_concrete_function()
    float_file.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([double]).convert())
    val = os.path.join(run["tfrecords"], "val-*")
    common = dict(tflite=run["tflite"], eval_pattern=val)
    for flag_values, expected in (
            ({**common, "tflite": str(float_file)}, "--tflite: .*float.tflite is not an int8 model"),
            ({**common, "tflite": str(tmp_path / "missing.tflite")}, "--tflite: .*missing.tflite: no such file"),
            ({**common, "eval_scales": "0.5,1.0"}, "--eval_scales: --tflite runs the int8 file as exported"),
            ({**common, "eval_output_stride": "8"}, "--eval_output_stride: --tflite runs"),
            ({**common, "eval_crop_size": "97"}, "--eval_crop_size: .* takes 65x65 images"),
            ({**common, "checkpoint": run["workdir"]}, "give --checkpoint .* or --tflite .*, not both"),
            ({**common, "loop": "true"}, "--loop follows a training run's checkpoints")):
        with pytest.raises((app.UsageError, SystemExit), match=expected):
            run_main(eval_cli, **flag_values)
    with pytest.raises((app.UsageError, SystemExit), match="--window_size: --tflite runs"):
        run_main(vis_cli, tflite=run["tflite"], vis_pattern=val, output_dir=str(tmp_path / "vis"), window_size="33")
