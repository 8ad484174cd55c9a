"""tensorflow-datasets' cityscapes builder as an input: offline from fake zips, labels mapped."""

import os

import numpy as np
import tensorflow as tf
from PIL import Image

from deeplab_tf.data import cityscapes_labels, fake, train_dataset
from deeplab_tf.data.tfds_source import cityscapes_tfds, label_ids_to_train_ids


def test_label_ids_map_to_train_ids():
    label_ids = tf.constant(np.arange(256, dtype=np.uint8).reshape(16, 16))
    train_ids = label_ids_to_train_ids(label_ids).numpy()
    assert train_ids.dtype == np.uint8
    np.testing.assert_array_equal(train_ids.ravel(), cityscapes_labels.label_id_lookup_table())
    assert train_ids.ravel()[7] == 0 and train_ids.ravel()[33] == 18 and train_ids.ravel()[0] == 255


def test_builder_prepares_offline_from_manual_zips(tmp_path):
    # The builder's features fix the Cityscapes size: 1024 x 2048.
    label_ids = np.full((1024, 2048), 7, np.uint8)  # road
    label_ids[:300] = 23  # sky -> 10
    label_ids[900:] = 1  # ego vehicle -> 255
    raw = str(tmp_path / "raw")
    fake.make_cityscapes(raw, label_ids={
        ("train", "aachen_000000_000019", "gtFine"): label_ids,
        ("val", "bonn_000000_000019", "gtFine"): label_ids[:, ::-1].copy(),
        ("test", "berlin_000000_000019", "gtFine"): np.zeros((1024, 2048), np.uint8),
    })
    fake.zip_cityscapes(raw, str(tmp_path / "manual"))
    dataset = cityscapes_tfds("train", manual_dir=str(tmp_path / "manual"),
                              data_dir=str(tmp_path / "tfds"))
    (example,) = list(dataset)
    assert example["filename"].numpy() == b"aachen_000000_000019"
    assert example["image"].shape == (1024, 2048, 3) and example["image"].dtype == tf.uint8
    expected = np.asarray(cityscapes_labels.label_id_lookup_table(), np.uint8)[label_ids]
    np.testing.assert_array_equal(example["label"].numpy(), expected)
    image = np.asarray(Image.open(os.path.join(
        raw, "leftImg8bit", "train", "aachen", "aachen_000000_000019_leftImg8bit.png")))
    np.testing.assert_array_equal(example["image"].numpy(), image)
    # The same elements feed the training pipeline.
    images, labels = next(iter(train_dataset(dataset, batch_size=1, crop_size=(65, 65),
                                             min_scale=0.25, max_scale=0.25, seed=0)))
    assert images.shape == (1, 65, 65, 3)
    assert set(np.unique(labels.numpy())) <= {0, 10, 255}
