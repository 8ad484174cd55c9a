"""A tiny learnable VOC-layout dataset and a small training config shared by the training tests."""

import os

import numpy as np

from deeplab_tf.data import fake
from deeplab_tf.data.sources.voc import convert_voc2012
from deeplab_tf.training.config import default_config


def make_learnable_voc(root, *, num_images=6, size=(49, 57), seed=0, num_objects=2):
    """VOC folder + TFRecords where each object's colour gives its class, so a model can learn it
    (`num_objects` rectangles per image).

    Returns the TFRecord directory (train-* and val-* shards).
    """
    rng = np.random.default_rng(seed)
    palette = fake.visualization.get_colormap("pascal")
    masks, ids = {}, []
    for i in range(num_images):
        image_id = f"2007_{i:06d}"
        masks[image_id] = fake.random_mask(rng, *size, class_ids=[1, 2, 3], num_objects=num_objects)
        ids.append(image_id)
    fake.make_voc(root, masks=masks, splits={"train": ids, "val": ids[:2]}, seed=seed)
    # Repaint the images: class colour plus noise, background grey.
    for image_id, mask in masks.items():
        image = np.where(mask[..., None] == 0, 128, palette[np.where(mask == 255, 0, mask)]).astype(np.float32)
        image += rng.normal(0, 10, image.shape)
        fake.save_image(os.path.join(root, "VOC2012", "JPEGImages", image_id + ".jpg"),
                        np.clip(image, 0, 255).astype(np.uint8), quality=95)
    output = os.path.join(root, "tfrecord")
    convert_voc2012(os.path.join(root, "VOC2012"), output, splits=("train", "val"), num_shards=2)
    return output


def small_config(tfrecord_dir, **train_overrides):
    """ResNet-50, 65x65 crops, batch 2, a few steps: the real model and loop at test size."""
    config = default_config()
    config.dataset.train_pattern = os.path.join(tfrecord_dir, "train-*")
    config.model.backbone = "resnet_v1_50"
    config.model.multi_grid = ()
    config.train.crop_size = (65, 65)
    config.train.batch_size = 2
    config.train.steps = 3
    config.train.log_every_steps = 1
    config.train.summary_every_steps = 1
    config.train.image_summary_every_steps = 2
    config.train.shuffle_buffer = 8
    config.train.update(train_overrides)
    return config
