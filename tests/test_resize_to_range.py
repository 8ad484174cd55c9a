"""The original release's resize to range (min_resize_value, max_resize_value, resize_factor), as it
resizes every ADE20K image before augmentation and evaluation: the sizes against a numpy transcription
of its rule, aligned-corner bilinear / nearest resizing, and its use in the pipelines, the config and
deeplab-eval."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.cli import eval as eval_cli
from deeplab_tf.constants import MEAN_RGB
from deeplab_tf.data import eval_dataset, fake, preprocess, train_dataset
from deeplab_tf.data.registry import DatasetInfo
from deeplab_tf.data.sources import folder
from deeplab_tf.evaluation import evaluator
from deeplab_tf.training.config import check_config
from eval_utils import make_workdir, run_main
from experiments.configs import ade20k

NUM_CLASSES = 21


def reference_size(height, width, min_size, max_size=None, factor=None):
    """The release's resize_to_range sizes, transcribed in numpy float32 as it computes them."""
    f32 = np.float32
    height, width, min_size = f32(height), f32(width), f32(min_size)
    if max_size and factor:
        max_size = f32(max_size) + (factor - (f32(max_size) - 1) % factor) % factor - factor
    scale = min_size / min(height, width)
    new = np.ceil([height * scale, width * scale]).astype(np.int32)
    if max_size and f32(new.max()) > f32(max_size):
        scale = f32(max_size) / max(height, width)
        new = np.ceil([height * scale, width * scale]).astype(np.int32)
    if factor:
        new += (factor - (new - 1) % factor) % factor
    return tuple(int(side) for side in new)


def _aligned_positions(size, new_size):
    """Source coordinates (float32) of the resized pixels with aligned corners."""
    scale = np.float32(size - 1) / np.float32(new_size - 1) if new_size > 1 else np.float32(0)
    return np.arange(new_size, dtype=np.float32) * scale


def reference_nearest(label, new_size):
    rows = np.minimum(np.floor(_aligned_positions(label.shape[0], new_size[0]) + 0.5).astype(int), label.shape[0] - 1)
    cols = np.minimum(np.floor(_aligned_positions(label.shape[1], new_size[1]) + 0.5).astype(int), label.shape[1] - 1)
    return label[rows][:, cols]


def reference_bilinear(image, new_size):
    image = image.astype(np.float32)
    out = image
    for axis, (size, new) in enumerate(zip(image.shape[:2], new_size)):
        position = _aligned_positions(size, new)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, size - 1)
        weight = (position - low).reshape([-1, 1, 1] if axis == 0 else [1, -1, 1])
        out = np.take(out, low, axis) * (1 - weight) + np.take(out, high, axis) * weight
    return out


SHAPES = [(375, 500), (500, 375), (40, 300), (2000, 1500), (513, 513), (17, 23), (1, 7)]
RANGES = [(513, 513, 16), (513, 513, None), (65, 65, None), (321, None, 8), (300, 400, None)]


@pytest.mark.parametrize("min_size,max_size,factor", RANGES)
def test_sizes_follow_the_release_rule(min_size, max_size, factor):
    for height, width in SHAPES:
        size = preprocess.resize_to_range_size(height, width, min_size=min_size, max_size=max_size, factor=factor)
        assert tuple(size.numpy()) == reference_size(height, width, min_size, max_size, factor), (height, width)


def test_ade20k_setting_sizes_by_hand():
    # Cap 513 lowered to 497 (16k + 1), shorter side rounded up to 16k + 1.
    assert reference_size(375, 500, 513, 513, 16) == (385, 497)
    assert reference_size(40, 300, 513, 513, 16) == (81, 497)
    assert reference_size(40, 300, 65, 65) == (9, 65)
    assert reference_size(100, 200, 65, 200) == (65, 130)  # the shorter side reaches min_size


def test_image_bilinear_and_label_nearest_with_aligned_corners():
    rng = np.random.default_rng(0)
    image = fake.random_image(rng, 31, 47)
    label = rng.choice(np.array([0, 3, 7, 255], np.uint8), size=(31, 47))
    resized_image, resized_label = preprocess.resize_to_range(image, label, min_size=65, max_size=97, factor=16)
    size = reference_size(31, 47, 65, 97, 16)
    assert resized_label.dtype == tf.int32 and resized_image.dtype == tf.float32
    assert resized_label.shape == size and resized_image.shape == (*size, 3)
    np.testing.assert_array_equal(resized_label, reference_nearest(label, size))
    assert set(np.unique(resized_label)) <= {0, 3, 7, 255}
    np.testing.assert_allclose(resized_image, reference_bilinear(image, size), atol=1e-3)
    # Aligned corners: the four corner pixels are the source's.
    np.testing.assert_array_equal(resized_image.numpy()[[0, 0, -1, -1], [0, -1, 0, -1]],
                                  image[[0, 0, -1, -1], [0, -1, 0, -1]])


def test_needs_a_min_size():
    with pytest.raises(ValueError, match="min_size"):
        preprocess.resize_to_range(tf.zeros([4, 4, 3]), tf.zeros([4, 4]), min_size=None, max_size=513)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """One 40 x 300 image with a full mask (no ignore label), as TFRecords."""
    root = str(tmp_path_factory.mktemp("resize"))
    mask = fake.random_mask(np.random.default_rng(1), 40, 300, class_ids=[1, 5, 9], ignore_border=False)
    image_dir, mask_dir, images = fake.make_folder(root, masks={"wide": mask}, image_ext=".png")
    folder.convert_folder(image_dir, mask_dir, os.path.join(root, "tfrecord"),
                          info=DatasetInfo(name="resize_test", num_classes=NUM_CLASSES), num_shards=1)
    return dict(root=root, pattern=os.path.join(root, "tfrecord", "train-*"), image=images["wide"], mask=mask)


def test_training_crops_come_from_the_resized_image(wide):
    # min = max = 65: 40 x 300 -> 9 x 65, then scale 1, no flip, padded to the 65 x 65 crop.
    images, labels = next(iter(train_dataset(
        wide["pattern"], batch_size=1, crop_size=65, min_scale=1.0, max_scale=1.0, flip=False, seed=0,
        min_resize_value=65, max_resize_value=65)))
    expected_label = reference_nearest(wide["mask"], (9, 65))
    np.testing.assert_array_equal(labels[0, :9], expected_label)
    assert np.all(labels[0, 9:].numpy() == 255)
    np.testing.assert_allclose(images[0, :9], reference_bilinear(wide["image"], (9, 65)), atol=1e-2)
    np.testing.assert_allclose(images[0, 9:], np.broadcast_to(np.float32(MEAN_RGB), (56, 65, 3)))
    # Without the option the crop comes from the stored 40 x 300 image: 40 label rows.
    _, labels = next(iter(train_dataset(wide["pattern"], batch_size=1, crop_size=65, min_scale=1.0,
                                        max_scale=1.0, flip=False, seed=0)))
    assert np.all(labels[0, :40].numpy() != 255) and np.all(labels[0, 40:].numpy() == 255)


def test_eval_dataset_resizes_image_and_label(wide):
    example = next(iter(eval_dataset(wide["pattern"], min_resize_value=65, max_resize_value=65)))
    assert example["image"].shape == (1, 9, 65, 3)
    np.testing.assert_array_equal(example["label"][0], reference_nearest(wide["mask"], (9, 65)))


def test_evaluation_scores_at_the_resized_size(wide):
    class ConstantModel:  # predicts class 1 everywhere, at the size it is given
        sizes = []

        def __call__(self, images, training=False):
            self.sizes.append(tuple(images.shape[1:3]))
            return tf.one_hot(tf.ones(tf.shape(images)[:3], tf.int32), NUM_CLASSES)

    resize = dict(min_resize_value=65, max_resize_value=65, resize_factor=None)
    metrics = evaluator.evaluate(ConstantModel(), wide["pattern"], num_classes=NUM_CLASSES, resize=resize)
    counts = np.bincount(reference_nearest(wide["mask"], (9, 65)).ravel(), minlength=NUM_CLASSES)
    assert metrics["num_pixels"] == 9 * 65
    np.testing.assert_array_equal(np.asarray(metrics["confusion_matrix"])[:, 1], counts)
    native = evaluator.evaluate(ConstantModel(), wide["pattern"], num_classes=NUM_CLASSES)
    assert native["num_pixels"] == 40 * 300


def test_ade20k_config_resizes_as_the_release():
    config = ade20k.get_config("train")
    assert (config.train.min_resize_value, config.train.max_resize_value, config.train.resize_factor) == (513, 513, 16)
    check_config(config, num_replicas=1)


def test_max_resize_value_without_min_is_a_config_error():
    config = ade20k.get_config("train")
    config.train.min_resize_value = 0
    with pytest.raises(ValueError, match="config.train.min_resize_value"):
        check_config(config, num_replicas=1)


def test_deeplab_eval_flags_resize_and_record_it(wide, tmp_path):
    workdir = str(tmp_path / "run")
    make_workdir(workdir, step=5)
    run_main(eval_cli, checkpoint=workdir, eval_pattern=wide["pattern"], min_resize_value=65,
             max_resize_value=65)
    with open(os.path.join(workdir, "eval_os16_resize65", "metrics-5.json")) as f:
        results = json.load(f)
    assert results["resize"] == {"min_resize_value": 65, "max_resize_value": 65, "resize_factor": None}
    assert results["num_pixels"] == 9 * 65
