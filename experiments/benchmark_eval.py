"""Evaluation throughput (images/s): single-scale vs the paper's six scales + left-right flips.

Runs `evaluator.evaluate` (TFRecord decoding, `inference.predict`, the confusion matrix) on a split
of synthetic JPEG images with random weights, for each output stride. The first image of each case
carries the tracing and is timed apart; the rate is over the images after it. A "model" row times
the bare model (one static-shape tf.function call + argmax, no input pipeline) for reference.

    python -m experiments.benchmark_eval                          # R101, OS 16 and 8, 4 images
    python -m experiments.benchmark_eval --backbone=resnet_v1_50 --output_strides=16 \
        --image_size=375,500 --num_images=8
"""

import io
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image  # noqa: E402

from deeplab_tf.data import fake, make_example  # noqa: E402
from deeplab_tf.evaluation import evaluator  # noqa: E402
from deeplab_tf.modeling import DeepLabV3  # noqa: E402
from deeplab_tf.modeling.folding import fold_batch_norm  # noqa: E402
from deeplab_tf.modeling.precision import PRECISIONS, dtype_policy  # noqa: E402

PAPER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
MODES = {"single": ((1.0,), False), "ms_flip": (PAPER_SCALES, True)}

flags.DEFINE_string("backbone", "resnet_v1_101", "Backbone of the model.")
flags.DEFINE_list("output_strides", ["16", "8"], "Output strides to evaluate at.")
flags.DEFINE_list("modes", list(MODES), "single: scale 1.0; ms_flip: the paper's 6 scales + flip.")
flags.DEFINE_list("image_size", ["513", "513"], "Height,width of the synthetic images.")
flags.DEFINE_enum("precision", "float32", list(PRECISIONS),
                  "Compute dtype, as deeplab-eval --precision.")
flags.DEFINE_integer("num_images", 4, "Images per case (the first is the warm-up).", lower_bound=2)
FLAGS = flags.FLAGS

NUM_CLASSES = 21


def _encoded(array, image_format):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format)
    return buffer.getvalue()


def write_split(path, *, num_images, height, width):
    """A TFRecord of `num_images` smooth random JPEG images with random-rectangle labels."""
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(num_images):
            label = fake.random_mask(rng, height, width, class_ids=list(range(1, NUM_CLASSES)))
            writer.write(make_example(
                image=_encoded(fake.random_image(rng, height, width), "JPEG"),
                image_format="jpeg", label=_encoded(label, "PNG"), filename=f"{i:06d}",
                height=height, width=width).SerializeToString())


def run_case(model, pattern, *, scales, flip):
    """(seconds of the first image, tracing included; images/s over the others)."""
    finished = []
    start = time.perf_counter()
    evaluator.evaluate(model, pattern, num_classes=NUM_CLASSES, scales=scales, flip=flip,
                       progress=lambda done, total: finished.append(time.perf_counter()))
    return finished[0] - start, (len(finished) - 1) / (finished[-1] - finished[0])


def time_model(model, *, height, width, repeats):
    """Median seconds of the bare model on one image, after a warm-up call."""
    step = tf.function(lambda images: tf.argmax(model(images, training=False), axis=-1))
    images = tf.random.uniform([1, height, width, 3], 0, 255)
    step(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(images).numpy()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv):
    del argv
    if any(mode not in MODES for mode in FLAGS.modes):
        raise app.UsageError(f"--modes: choose from {', '.join(MODES)}")
    height, width = (int(size) for size in FLAGS.image_size)
    with tempfile.TemporaryDirectory() as directory:
        pattern = os.path.join(directory, "val-00000-of-00001.tfrecord")
        write_split(pattern, num_images=FLAGS.num_images, height=height, width=width)
        print(f"{FLAGS.backbone}, {height}x{width} JPEG, {FLAGS.num_images} images per case, "
              f"{FLAGS.precision}, {os.cpu_count()} CPUs")
        print(f"{'OS':>3} {'mode':<8} {'first image s':>14} {'img/s':>7} {'s/img':>7}")
        for output_stride in (int(stride) for stride in FLAGS.output_strides):
            with dtype_policy(FLAGS.precision):
                model = fold_batch_norm(DeepLabV3(num_classes=NUM_CLASSES, backbone=FLAGS.backbone,
                                                  output_stride=output_stride, dropout_rate=0.0))
            seconds = time_model(model, height=height, width=width,
                                 repeats=FLAGS.num_images - 1)
            print(f"{output_stride:>3} {'model':<8} {'':>14} {1 / seconds:>7.3f} {seconds:>7.2f}",
                  flush=True)
            for mode in FLAGS.modes:
                scales, flip = MODES[mode]
                first, rate = run_case(model, pattern, scales=scales, flip=flip)
                print(f"{output_stride:>3} {mode:<8} {first:>14.1f} {rate:>7.3f} {1 / rate:>7.2f}",
                      flush=True)


if __name__ == "__main__":
    app.run(main)
