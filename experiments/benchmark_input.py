"""Throughput of the training input pipeline (images/s), to check it never starves training.

Makes --num_images 500x375 JPEGs with masks (VOC's typical size) in a temporary folder, converts
them to TFRecords, then times `train_dataset` (decode, random scale 0.5-2.0, pad, crop, flip,
batch) at --crop, interleaved with a naive pipeline that resizes the whole image before padding
and cropping, and prints both rates and their ratio.

  python experiments/benchmark_input.py --num_images=200 --crop=513 --batch=8
"""

import os
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import tensorflow as tf
from absl import app, flags

from deeplab_tf.constants import MEAN_RGB
from deeplab_tf.data import fake, tfrecord, train_dataset
from deeplab_tf.data.registry import get_dataset_info
from deeplab_tf.data.sources import folder

flags.DEFINE_integer("num_images", 200, "Distinct images converted.")
flags.DEFINE_integer("crop", 513, "Crop size (square).")
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("batches_per_round", 15, "Batches timed per round and pipeline.")
flags.DEFINE_integer("rounds", 4, "Rounds, alternating the pipelines.")
FLAGS = flags.FLAGS


def naive_dataset(file_pattern, *, batch_size, crop):
    """The straightforward composition: resize the whole image, pad, crop, flip."""

    def augment(serialized):
        example = tfrecord.parse_example(serialized)
        image, label = tf.cast(example["image"], tf.float32), example["label"]
        scale = 0.5 + 0.25 * tf.cast(tf.random.uniform([], 0, 7, tf.int32), tf.float32)
        size = tf.cast(tf.round(tf.cast(tf.shape(label), tf.float32) * scale), tf.int32)
        image = tf.image.resize(image, size)
        label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
        padding = [[0, tf.maximum(crop - size[0], 0)], [0, tf.maximum(crop - size[1], 0)]]
        image = tf.pad(image - MEAN_RGB, padding + [[0, 0]]) + MEAN_RGB
        label = tf.pad(label, padding, constant_values=255)
        limit = tf.shape(label) - crop + 1
        top = tf.random.uniform([], 0, limit[0], tf.int32)
        left = tf.random.uniform([], 0, limit[1], tf.int32)
        image, label = image[top:top + crop, left:left + crop], label[top:top + crop, left:left + crop]
        flip = tf.random.uniform([]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
        return tf.ensure_shape(image, [crop, crop, 3]), tf.cast(label, tf.int32)

    return (tf.data.TFRecordDataset(tf.io.gfile.glob(file_pattern)).shuffle(1000).repeat()
            .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        masks = {f"{i:06d}": fake.random_mask(rng, 375, 500, class_ids=list(range(1, 21)))
                 for i in range(FLAGS.num_images)}
        image_dir, mask_dir, _ = fake.make_folder(root, masks=masks)
        folder.convert_folder(image_dir, mask_dir, os.path.join(root, "records"),
                              info=get_dataset_info("pascal_voc_seg"), num_shards=4)
        pattern = os.path.join(root, "records", "train-*")
        pipelines = {
            "train_dataset": train_dataset(pattern, batch_size=FLAGS.batch, crop_size=FLAGS.crop,
                                           seed=0),
            "naive": naive_dataset(pattern, batch_size=FLAGS.batch, crop=FLAGS.crop),
        }
        iterators = {name: iter(dataset) for name, dataset in pipelines.items()}
        seconds = dict.fromkeys(iterators, 0.0)
        for name, batches in iterators.items():  # warm up: trace, fill buffers
            for _ in range(3):
                next(batches)
        for _ in range(FLAGS.rounds):
            for name, batches in iterators.items():
                start = time.perf_counter()
                for _ in range(FLAGS.batches_per_round):
                    next(batches)
                seconds[name] += time.perf_counter() - start
    images = FLAGS.rounds * FLAGS.batches_per_round * FLAGS.batch
    rates = {name: images / s for name, s in seconds.items()}
    print(f"{images} images of 500x375 JPEG -> {FLAGS.crop}x{FLAGS.crop} crops, batch "
          f"{FLAGS.batch}, {os.cpu_count()} CPU cores:")
    for name, rate in rates.items():
        print(f"  {name}: {rate:.1f} images/s")
    print(f"  train_dataset / naive: {rates['train_dataset'] / rates['naive']:.2f}x")


if __name__ == "__main__":
    app.run(main)
