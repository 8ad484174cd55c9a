"""Training / eval input pipelines: shapes, padding, flips, scales, bootstrapping, sharding."""

import collections
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.constants import MEAN_RGB, UNIT_RANGE_CENTRE
from deeplab_tf.data import bootstrap, eval_dataset, fake, preprocess, tfrecord, train_dataset
from deeplab_tf.data.registry import DatasetInfo, PASCAL_VOC_HARD_CLASSES
from deeplab_tf.data.sources import folder
from deeplab_tf.modeling.resnet import pad_value

NUM_CLASSES = 21
HEIGHT, WIDTH = 24, 32
CHAIR = 9  # a hard class; 15 (person) is not


def _ctx(num_pipelines, pipeline_id, replicas=None):
    return tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                      input_pipeline_id=pipeline_id,
                                      num_replicas_in_sync=replicas or num_pipelines)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 lossless PNG images (img0..img7) with full masks (no 255); img1 and img6 hold a chair."""
    root = str(tmp_path_factory.mktemp("pipeline"))
    rng = np.random.default_rng(0)
    masks = {}
    for i in range(8):
        mask = fake.random_mask(rng, HEIGHT, WIDTH, class_ids=[15, 3], ignore_border=False)
        mask[0, :] = 15  # every image holds person, never the ignore label
        if i in (1, 6):
            mask[-4:, -4:] = CHAIR
        masks[f"img{i}"] = mask
    image_dir, mask_dir, images = fake.make_folder(root, masks=masks, image_ext=".png")
    info = DatasetInfo(name="pipeline_test", num_classes=NUM_CLASSES)
    folder.convert_folder(image_dir, mask_dir, os.path.join(root, "four"), info=info,
                          num_shards=4)
    folder.convert_folder(image_dir, mask_dir, os.path.join(root, "one"), info=info,
                          num_shards=1)
    return dict(four=os.path.join(root, "four", "train-*"), one=os.path.join(root, "one", "train-*"),
                images=images, masks=masks)


def _first(dataset):
    return [t.numpy() for t in next(iter(dataset))]


def test_train_shapes_dtypes_and_label_values(data):
    images, labels = _first(train_dataset(data["four"], batch_size=3, crop_size=(33, 41), seed=0))
    assert images.shape == (3, 33, 41, 3) and images.dtype == np.float32
    assert labels.shape == (3, 33, 41) and labels.dtype == np.int32
    assert 0 <= images.min() and images.max() <= 255
    assert set(np.unique(labels)) <= set(range(NUM_CLASSES)) | {255}


@pytest.mark.parametrize("backbone, value", [("resnet_v1_101", MEAN_RGB), ("resnet_v1_50", MEAN_RGB),
                                             ("resnet_v1_101_beta", UNIT_RANGE_CENTRE),
                                             ("resnet_v1_50_beta", UNIT_RANGE_CENTRE)])
def test_padding_is_the_backbones_pad_value_and_the_ignore_label(data, backbone, value):
    """Plain ResNets pad with the ImageNet mean, the release's `_beta` ones with 127.5."""
    dataset = train_dataset(data["one"], batch_size=8, crop_size=(40, 50), min_scale=1.0,
                            max_scale=1.0, flip=False, repeat=False, seed=0,
                            pad_value=pad_value(backbone))
    images, labels = _first(dataset)
    mean = np.asarray(value, np.float32)
    assert (images[:, HEIGHT:, :] == mean).all() and (images[:, :, WIDTH:] == mean).all()
    assert (labels[:, HEIGHT:, :] == 255).all() and (labels[:, :, WIDTH:] == 255).all()
    # The content sits untouched in the top-left corner (a crop larger than the image).
    found = {name: False for name in data["masks"]}
    for image, label in zip(images, labels):
        for name, mask in data["masks"].items():
            if np.array_equal(label[:HEIGHT, :WIDTH], mask):
                np.testing.assert_allclose(image[:HEIGHT, :WIDTH], data["images"][name],
                                           atol=1e-3)
                found[name] = True
    assert all(found.values())


def test_flip_mirrors_image_and_label_together(data):
    dataset = train_dataset(data["one"], batch_size=8, crop_size=(HEIGHT, WIDTH), min_scale=1.0,
                            max_scale=1.0, seed=1)
    orientations = collections.Counter()
    for images, labels in dataset.take(4):
        for image, label in zip(images.numpy(), labels.numpy()):
            for name, mask in data["masks"].items():
                original = data["images"][name].astype(np.float32)
                if np.allclose(image, original, atol=1e-3):
                    np.testing.assert_array_equal(label, mask)
                    orientations["kept"] += 1
                elif np.allclose(image, original[:, ::-1], atol=1e-3):
                    np.testing.assert_array_equal(label, mask[:, ::-1])
                    orientations["flipped"] += 1
    assert sum(orientations.values()) == 32
    assert orientations["kept"] > 4 and orientations["flipped"] > 4


def _draws(seeds, **kwargs):
    draw = tf.function(lambda seeds: tf.map_fn(lambda s: preprocess.scale_factor(s, **kwargs),
                                               seeds, fn_output_signature=tf.float32))
    return draw(seeds).numpy()


def test_scale_draws_cover_the_grid_and_the_interval():
    seeds = tf.random.experimental.stateless_split([1, 2], 2800)
    values, counts = np.unique(_draws(seeds), return_counts=True)
    np.testing.assert_allclose(values, np.arange(0.5, 2.01, 0.25))
    assert counts.min() > 300 and counts.max() < 500  # ~400 each of 7
    continuous = _draws(seeds[:1000], scale_step=0)
    assert 0.5 <= continuous.min() < 0.55 and 1.95 < continuous.max() <= 2.0
    assert len(np.unique(continuous)) > 990 and abs(continuous.mean() - 1.25) < 0.05


@pytest.mark.parametrize("scale", [0.5, 0.75, 1.25, 2.0])
@pytest.mark.parametrize("flip", [False, True])
def test_scaled_crop_equals_resize_pad_crop_flip(scale, flip):
    """The windowed computation gives what resizing the whole image would."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 56, 3)).astype(np.uint8)
    label = fake.random_mask(rng, 40, 56, class_ids=[1, 2, 3], num_objects=4)
    crop = (48, 48)
    size = tf.constant([round(40 * scale), round(56 * scale)])
    offset = preprocess.crop_offset(size, crop_size=crop, seed=[4, 5])
    got_image, got_label = preprocess.scaled_crop(image, label, size=size, offset=offset,
                                                  crop_size=crop, flip=flip)
    want_image = tf.image.resize(tf.cast(image, tf.float32), size)
    want_label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
    want_image, want_label = want_image.numpy(), want_label.numpy()
    bottom, right = max(crop[0] - size[0], 0), max(crop[1] - size[1], 0)
    want_image = np.pad(want_image - MEAN_RGB, [(0, bottom), (0, right), (0, 0)]) + MEAN_RGB
    want_label = np.pad(want_label, [(0, bottom), (0, right)], constant_values=255)
    top, left = offset.numpy()
    window = np.s_[top:top + crop[0], left:left + crop[1]]
    want_image, want_label = want_image[window], want_label[window]
    if flip:
        want_image, want_label = want_image[:, ::-1], want_label[:, ::-1]
    np.testing.assert_allclose(got_image.numpy(), want_image, atol=0.05)
    np.testing.assert_array_equal(got_label, want_label)


def _scaled_sizes(dataset, batches):
    """(height, width) of the unpadded part of each crop: the scaled image, when the crop is larger
    than any scaled image (the labels have no 255 of their own)."""
    sizes = []
    for _, labels in dataset.take(batches):
        for valid in labels.numpy() != 255:
            sizes.append((int(valid.any(axis=1).sum()), int(valid.any(axis=0).sum())))
    return sizes


def test_pipeline_scales_cover_the_grid_evenly(data):
    crop = (2 * HEIGHT + 1, 2 * WIDTH + 1)
    dataset = train_dataset(data["one"], batch_size=8, crop_size=crop, flip=False, seed=3)
    grid = np.arange(0.5, 2.01, 0.25)
    scale_of = {(round(HEIGHT * s), round(WIDTH * s)): s for s in grid}
    counts = collections.Counter(scale_of[size] for size in _scaled_sizes(dataset, 50))
    assert sorted(counts) == list(grid)
    assert min(counts.values()) > 30 and max(counts.values()) < 90  # 400 draws, ~57 each


def test_pipeline_continuous_scales_span_the_interval(data):
    crop = (2 * HEIGHT + 1, 2 * WIDTH + 1)
    dataset = train_dataset(data["one"], batch_size=8, crop_size=crop, flip=False, seed=4,
                            scale_step=0)
    heights = [h for h, _ in _scaled_sizes(dataset, 25)]
    assert len(set(heights)) > 20  # 200 draws over the 37 heights 12..48, not 7 scales
    assert min(heights) <= 14 and max(heights) >= 46
    assert HEIGHT * 0.5 <= min(heights) and max(heights) <= HEIGHT * 2.0


def test_batches_drop_the_remainder(data):
    dataset = train_dataset(data["one"], batch_size=3, crop_size=(8, 8), repeat=False)
    assert dataset.element_spec[0].shape == (3, 8, 8, 3)  # a static batch size for the model
    assert [images.shape[0] for images, _ in dataset] == [3, 3]  # 8 examples: 2 left out


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_scale_resizes_image_and_label(data, scale):
    dataset = train_dataset(data["one"], batch_size=1, crop_size=(80, 80), min_scale=scale,
                            max_scale=scale, flip=False, seed=0)
    images, labels = _first(dataset)
    assert (labels[0] != 255).sum() == round(HEIGHT * scale) * round(WIDTH * scale)
    assert set(np.unique(labels)) <= {0, 3, 9, 15, 255}  # nearest neighbour: no new class ids


def test_bootstrap_repeats_the_examples_with_hard_classes(data):
    records = tf.data.TFRecordDataset(sorted(glob.glob(data["four"])))
    assert CHAIR in PASCAL_VOC_HARD_CLASSES
    boosted = bootstrap(records, classes=PASCAL_VOC_HARD_CLASSES, factor=3,
                        label_fn=tfrecord.parse_label)
    names = collections.Counter(tfrecord.parse_example(r)["filename"].numpy().decode()
                                for r in boosted)
    assert names == {f"img{i}": 3 if i in (1, 6) else 1 for i in range(8)}
    epoch = train_dataset(data["four"], batch_size=1, crop_size=(8, 8), repeat=False,
                          bootstrap_classes=PASCAL_VOC_HARD_CLASSES, bootstrap_factor=3)
    assert sum(1 for _ in epoch) == 12


@pytest.mark.parametrize("pattern", ["four", "one"])  # shard files / shard records
def test_workers_get_disjoint_data(data, pattern):
    seen = []
    for pipeline_id in range(2):
        dataset = eval_dataset(data[pattern], input_context=_ctx(2, pipeline_id))
        seen.append([e["filename"].numpy()[0].decode() for e in dataset])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(data["masks"])
    assert len(seen[0]) == len(seen[1]) == 4
    for pipeline_id in range(2):
        dataset = train_dataset(data[pattern], batch_size=2, crop_size=(8, 8), repeat=False,
                                input_context=_ctx(2, pipeline_id))
        assert sum(1 for _ in dataset) == 4  # 4 examples each, per-replica batch 1


def test_global_batch_is_split_across_replicas(data):
    dataset = train_dataset(data["four"], batch_size=6, crop_size=(8, 8),
                            input_context=_ctx(1, 0, replicas=3))
    assert _first(dataset)[0].shape == (2, 8, 8, 3)


def test_seed_reproduces_the_batches(data):
    make = lambda seed: _first(train_dataset(data["four"], batch_size=4, crop_size=(16, 16),
                                             scale_step=0, seed=seed))
    first, again, other = make(7), make(7), make(8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_eval_is_whole_images_in_file_order(data):
    elements = list(eval_dataset(data["one"]))
    assert [e["filename"].numpy()[0].decode() for e in elements] == sorted(data["masks"])
    for e in elements:
        name = e["filename"].numpy()[0].decode()
        assert e["image"].shape == (1, HEIGHT, WIDTH, 3) and e["image"].dtype == tf.float32
        assert e["label"].shape == (1, HEIGHT, WIDTH) and e["label"].dtype == tf.int32
        np.testing.assert_array_equal(e["image"][0], data["images"][name])
        np.testing.assert_array_equal(e["label"][0], data["masks"][name])


def test_no_matching_files_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no TFRecord files match"):
        train_dataset(str(tmp_path / "train-*"), batch_size=1)
