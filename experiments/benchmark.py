"""Model speed and memory: inference seconds/image and a training step, R50/R101 at OS 16 and 8.

Each case runs in its own process so that its peak resident memory is its own. Prints one line per
case and a summary table; compare against DESIGN.md's anchors (TF Model Garden R101 OS16: 0.52 s,
torch.compile: 0.29 s, on this 2-core machine).

    python -m experiments.benchmark                      # all cases
    python -m experiments.benchmark --cases=r101_os16_infer --repeats=10
    python -m experiments.benchmark --cases=r50_os16_train --size=129 --batch=8   # the demo's step
"""

import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

CASES = {
    # name: (backbone, output_stride, batch, mode)
    "r50_os16_infer": ("resnet_v1_50", 16, 1, "infer"),
    "r50_os8_infer": ("resnet_v1_50", 8, 1, "infer"),
    "r101_os16_infer": ("resnet_v1_101", 16, 1, "infer"),
    "r101_os8_infer": ("resnet_v1_101", 8, 1, "infer"),
    "r50_os16_train": ("resnet_v1_50", 16, 2, "train"),
    "r101_os16_train": ("resnet_v1_101", 16, 2, "train"),
}

flags.DEFINE_list("cases", list(CASES), "Cases to run.")
flags.DEFINE_integer("size", 513, "Square input size.")
flags.DEFINE_integer("batch", 0, "Batch size for every case (0: the case's own, 1 or 2).")
flags.DEFINE_integer("repeats", 5, "Timed repetitions after two warm-up runs.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"], "Keras dtype policy.")
flags.DEFINE_string("_child", None, "Internal: run one case in this process and print JSON.")
FLAGS = flags.FLAGS


def _run_case(name):
    import keras
    import tensorflow as tf

    from deeplab_tf.modeling import DeepLabV3
    from deeplab_tf.training.step import make_train_step

    keras.mixed_precision.set_global_policy(FLAGS.precision)
    backbone, output_stride, batch, mode = CASES[name]
    batch = FLAGS.batch or batch
    model = DeepLabV3(num_classes=21, backbone=backbone, output_stride=output_stride)
    images = tf.random.uniform([batch, FLAGS.size, FLAGS.size, 3], 0, 255)
    if mode == "infer":
        step = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1))
        args = (images,)
    else:
        labels = tf.random.uniform([batch, FLAGS.size, FLAGS.size], 0, 21, dtype=tf.int32)
        optimizer = keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9)
        optimizer.build(model.trainable_variables)
        step = tf.function(make_train_step(model, optimizer, global_step=tf.Variable(0, dtype=tf.int64)))
        args = (images, labels)
    for _ in range(2):
        step(*args)
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        result = step(*args)
        tf.nest.map_structure(lambda t: t.numpy(), result)
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": name, "seconds": seconds, "images_per_second": batch / seconds, "peak_mib": peak_mib}


def main(argv):
    del argv
    if FLAGS._child:
        print(json.dumps(_run_case(FLAGS._child)))
        return
    print(f"{'case':<18} {'s/step':>8} {'img/s':>7} {'peak MiB':>9}   ({FLAGS.size}x{FLAGS.size}, {FLAGS.precision}, "
          f"median of {FLAGS.repeats})")
    for name in FLAGS.cases:
        if name not in CASES:
            raise app.UsageError(f"--cases: unknown case {name!r}; known: {', '.join(CASES)}")
        output = subprocess.run(
            [sys.executable, "-m", "experiments.benchmark", f"--_child={name}", f"--size={FLAGS.size}",
             f"--repeats={FLAGS.repeats}", f"--precision={FLAGS.precision}", f"--batch={FLAGS.batch}"],
            capture_output=True, text=True, check=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        print(f"{name:<18} {result['seconds']:>8.3f} {result['images_per_second']:>7.2f} {result['peak_mib']:>9.0f}",
              flush=True)


if __name__ == "__main__":
    app.run(main)
