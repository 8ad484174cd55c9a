"""The public Python API: names, Keras compile/fit with the package's loss, metric, schedule and optimizer,
`.keras` files, loading a training run, and the README's "Use from Python" example."""

import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import deeplab_tf
from deeplab_tf import workdir as workdir_lib
from deeplab_tf.data import fake
from deeplab_tf.data.registry import get_dataset_info
from deeplab_tf.evaluation import evaluator
from eval_utils import make_workdir
from training_utils import make_learnable_voc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "TF_CPP_MIN_LOG_LEVEL": "2"}
ODD_IMAGE = np.random.default_rng(7).uniform(0, 255, (1, 37, 45, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    return make_learnable_voc(str(tmp_path_factory.mktemp("voc")))


@pytest.fixture(scope="module")
def fitted(tfrecords):
    """A ResNet-50 DeepLabV3 after 12 steps of `fit` on the learnable split, and its history."""
    keras.utils.set_random_seed(0)
    # A fast batch-norm momentum, so that 12 steps move the moving statistics inference uses.
    model = deeplab_tf.DeepLabV3(num_classes=21, backbone="resnet_v1_50", output_stride=16, bn_momentum=0.9)
    model.compile(optimizer=deeplab_tf.MomentumSGD(deeplab_tf.PolyLearningRate(0.01, 12), momentum=0.9),
                  loss=deeplab_tf.SegmentationLoss(), metrics=[deeplab_tf.MeanIoU(num_classes=21)])
    train = deeplab_tf.train_dataset(os.path.join(tfrecords, "train-*"), batch_size=2, crop_size=(65, 65),
                                     min_scale=1.0, max_scale=1.0, shuffle_buffer=8, seed=0)
    val = deeplab_tf.image_label_pairs(deeplab_tf.eval_dataset(os.path.join(tfrecords, "val-*")))
    history = model.fit(train, steps_per_epoch=4, epochs=3, validation_data=val, verbose=0)
    return model, history.history


def test_every_public_name_is_importable_and_documented():
    documented = open(os.path.join(ROOT, "docs", "api.md")).read()
    for name in deeplab_tf.__all__:
        value = getattr(deeplab_tf, name)
        assert value.__doc__, name
        assert f"`{name}" in documented, f"{name} is missing from docs/api.md"
    with pytest.raises(AttributeError, match="no attribute 'secret'"):
        deeplab_tf.secret  # noqa: B018


def test_import_deeplab_tf_does_not_load_tensorflow():
    code = "import sys, os; import deeplab_tf; print('tensorflow' in sys.modules, os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    env = {key: value for key, value in ENV.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "2"]


def test_fit_lowers_the_loss_and_reports_the_miou_deeplab_eval_gives(fitted, tfrecords, tmp_path):
    model, history = fitted
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    # deeplab-eval's library path on the same weights: a workdir, then evaluate_checkpoint (folded).
    workdir = str(tmp_path / "run")
    workdir_lib.save_model_config(workdir, model)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), workdir_lib.checkpoint_dir(workdir),
                               max_to_keep=1).save(checkpoint_number=12)
    results, _ = evaluator.evaluate_checkpoint(workdir, os.path.join(tfrecords, "val-*"),
                                               dataset_info=get_dataset_info("pascal_voc_seg"))
    assert 0.0 < results["mean_iou"] < 1.0
    assert history["val_mean_iou"][-1] == pytest.approx(results["mean_iou"], rel=1e-9)


def test_keras_file_round_trip_gives_identical_outputs(fitted, tmp_path):
    model, _ = fitted
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, deeplab_tf.DeepLabV3) and loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded(ODD_IMAGE, training=False), model(ODD_IMAGE, training=False))
    assert loaded.loss.get_config() == model.loss.get_config()
    assert loaded.optimizer.get_config()["learning_rate"] == model.optimizer.get_config()["learning_rate"]
    assert loaded.optimizer.get_config()["learning_rate"]["class_name"] == "PolyLearningRate"
    # The public loader reads it back folded (the inference form) with the same logits.
    folded = deeplab_tf.load_model(path)
    assert folded.fold_batch_norm
    np.testing.assert_allclose(folded(ODD_IMAGE), model(ODD_IMAGE, training=False), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match=r"model.keras is a .keras file.*load the training workdir"):
        deeplab_tf.load_model(path, output_stride=8)


def test_load_model_reads_a_compiled_keras_file_in_a_fresh_process(fitted, tmp_path):
    """`import deeplab_tf` registers nothing with Keras (it stays cheap); load_model must, or a compiled
    model's loss, metric, schedule and optimizer cannot be found."""
    model, _ = fitted
    path = str(tmp_path / "model.keras")
    model.save(path)
    expected = str(tmp_path / "expected.npy")
    np.save(expected, model(ODD_IMAGE, training=False))
    code = (f"import numpy as np, deeplab_tf; model = deeplab_tf.load_model({path!r}, fold_batch_norm=False); "
            f"image = np.random.default_rng(7).uniform(0, 255, (1, 37, 45, 3)).astype(np.float32); "
            f"np.testing.assert_array_equal(model(image, training=False), np.load({expected!r})); "
            f"print(type(model.loss).__name__, model.optimizer.get_config()['learning_rate']['class_name'], "
            f"type(model.optimizer).__name__)")
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["SegmentationLoss", "PolyLearningRate", "MomentumSGD"]


def test_folded_model_round_trips_through_a_keras_file(fitted, tmp_path):
    folded = deeplab_tf.fold_batch_norm(fitted[0])
    folded.save(str(tmp_path / "folded.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "folded.keras"))
    assert loaded.fold_batch_norm
    np.testing.assert_array_equal(loaded(ODD_IMAGE), folded(ODD_IMAGE))
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.save(str(tmp_path / "other.keras"))
    with pytest.raises(ValueError, match="holds a Sequential, not a deeplab_tf DeepLabV3"):
        deeplab_tf.load_model(str(tmp_path / "other.keras"))


@pytest.mark.parametrize("fold", [True, False])
def test_load_model_from_a_training_workdir(tmp_path, fold):
    trained = make_workdir(str(tmp_path / "run"))
    model = deeplab_tf.load_model(str(tmp_path / "run"), fold_batch_norm=fold)
    assert model.fold_batch_norm == fold and model.output_stride == 16
    np.testing.assert_allclose(model(ODD_IMAGE, training=False), trained(ODD_IMAGE, training=False),
                               rtol=1e-4, atol=1e-3)
    assert deeplab_tf.load_model(str(tmp_path / "run"), output_stride=8).output_stride == 8


def test_poly_learning_rate_serialises():
    schedule = deeplab_tf.PolyLearningRate(0.007, 100, power=0.9, warmup_steps=5, warmup_learning_rate=1e-4)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, deeplab_tf.PolyLearningRate)
    assert [float(restored(s)) for s in (0, 5, 50, 100)] == [float(schedule(s)) for s in (0, 5, 50, 100)]


# The README's example trains for hours on VOC; here only its data sizes and step counts shrink.
README_TEST_SIZES = {
    "batch_size=8, crop_size=(513, 513)": "batch_size=2, crop_size=(65, 65)",
    "epochs=30, steps_per_epoch=1000": "epochs=1, steps_per_epoch=2",
}


def readme_python_example():
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_example_runs(tfrecords, tmp_path):
    code = readme_python_example()
    for written, small in README_TEST_SIZES.items():
        assert written in code, f"README example changed: update README_TEST_SIZES ({written!r})"
        code = code.replace(written, small)
    shutil.copytree(tfrecords, tmp_path / "tfrecords")
    make_workdir(str(tmp_path / "runs" / "voc_os16"))
    fake.save_image(str(tmp_path / "photo.jpg"), fake.random_image(np.random.default_rng(0), 43, 51))
    code += "\nprint('labels', labels.shape, labels.dtype)\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "labels (43, 51) int32" in result.stdout
    assert "ran out of data" not in result.stderr  # Keras' warning after each validation pass of unknown length.
    reloaded = keras.saving.load_model(str(tmp_path / "voc_finetuned.keras"))
    assert isinstance(reloaded, deeplab_tf.DeepLabV3)
