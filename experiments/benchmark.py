"""Model speed and memory: inference seconds/image and a training step, R50/R101 at OS 16 and 8.

Each case runs in its own process so that its peak resident memory is its own. Within a case the
precisions are timed interleaved (one call of each in turn), so that the machine's drift hits them
alike and their ratio is fair. Prints one line per case and precision; `experiments/peers/` times
torchvision and TF Model Garden on the same machine for comparison.

    python -m experiments.benchmark                      # all cases, float32 and mixed_bfloat16
    python -m experiments.benchmark --cases=r101_os16_infer --repeats=10 --precisions=float32
    python -m experiments.benchmark --cases=r50_os16_train --size=129 --batch=8   # the demo's step

mixed_bfloat16 pays off where the CPU has bfloat16 matrix units (AMX, as here) or on GPU/TPU; on
CPUs without them it is much slower than float32.
"""

import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from deeplab_tf.modeling.precision import PRECISIONS  # noqa: E402

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
flags.DEFINE_list("precisions", list(PRECISIONS),
                  "Keras dtype policies to time, interleaved (float32, mixed_bfloat16).")
flags.DEFINE_string("_child", None, "Internal: run one case in this process and print JSON.")
FLAGS = flags.FLAGS


def _build_step(name, precision):
    import keras
    import tensorflow as tf

    from deeplab_tf.modeling import DeepLabV3
    from deeplab_tf.modeling.folding import fold_batch_norm
    from deeplab_tf.modeling.precision import dtype_policy
    from deeplab_tf.training.step import make_train_step

    backbone, output_stride, batch, mode = CASES[name]
    batch = FLAGS.batch or batch
    with dtype_policy(precision):
        model = DeepLabV3(num_classes=21, backbone=backbone, output_stride=output_stride)
    images = tf.random.uniform([batch, FLAGS.size, FLAGS.size, 3], 0, 255)
    if mode == "infer":
        model = fold_batch_norm(model)  # the inference form deeplab-eval, -vis and -export run
        step = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1))
        return batch, step, (images,)
    labels = tf.random.uniform([batch, FLAGS.size, FLAGS.size], 0, 21, dtype=tf.int32)
    optimizer = keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9)
    optimizer.build(model.trainable_variables)
    step = tf.function(make_train_step(model, optimizer, global_step=tf.Variable(0, dtype=tf.int64)))
    return batch, step, (images, labels)


def _run_case(name):
    import tensorflow as tf

    steps = {precision: _build_step(name, precision) for precision in FLAGS.precisions}
    for _ in range(2):  # warm-up: tracing and oneDNN's first-call set-up
        for _, step, args in steps.values():
            step(*args)
    times = {precision: [] for precision in steps}
    for _ in range(FLAGS.repeats):
        for precision, (_, step, args) in steps.items():
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), step(*args))
            times[precision].append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = []
    for precision, (batch, _, _) in steps.items():
        seconds = sorted(times[precision])[len(times[precision]) // 2]
        results.append({"case": name, "precision": precision, "seconds": seconds,
                        "images_per_second": batch / seconds, "peak_mib": peak_mib})
    return results


def main(argv):
    del argv
    if FLAGS._child:
        print(json.dumps(_run_case(FLAGS._child)))
        return
    for precision in FLAGS.precisions:
        if precision not in PRECISIONS:
            raise app.UsageError(f"--precisions: unknown {precision!r}; use {' and/or '.join(PRECISIONS)}")
    for name in FLAGS.cases:
        if name not in CASES:
            raise app.UsageError(f"--cases: unknown case {name!r}; known: {', '.join(CASES)}")
    print(f"{'case':<18} {'precision':<15} {'s/step':>8} {'img/s':>7} {'vs fp32':>8} {'peak MiB':>9}   "
          f"({FLAGS.size}x{FLAGS.size}, median of {FLAGS.repeats}, precisions interleaved; peak memory is the "
          f"case's process, all its precisions)")
    for name in FLAGS.cases:
        output = subprocess.run(
            [sys.executable, "-m", "experiments.benchmark", f"--_child={name}", f"--size={FLAGS.size}",
             f"--repeats={FLAGS.repeats}", f"--precisions={','.join(FLAGS.precisions)}", f"--batch={FLAGS.batch}"],
            capture_output=True, text=True, check=True).stdout
        results = json.loads(output.strip().splitlines()[-1])
        reference = {r["precision"]: r["seconds"] for r in results}.get("float32")
        for result in results:
            ratio = f"{reference / result['seconds']:.2f}x" if reference else ""
            print(f"{name:<18} {result['precision']:<15} {result['seconds']:>8.3f} "
                  f"{result['images_per_second']:>7.2f} {ratio:>8} {result['peak_mib']:>9.0f}", flush=True)


if __name__ == "__main__":
    app.run(main)
