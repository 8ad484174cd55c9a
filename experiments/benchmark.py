"""Model speed and memory: inference seconds/image and a training step, R50/R101 at OS 16 and 8.

Each case runs in its own process so that its peak resident memory is its own. Within a case the
precisions are timed interleaved (one call of each in turn), so that the machine's drift hits them
alike and their ratio is fair. Prints one line per case and precision, with the rate of useful work
(GFLOP/s: multiply-adds x 2 of every convolution tap that reads at least one real pixel) and its share of
the machine's measured matrix-multiplication rate in that precision (`--peak`); `experiments/compare_peers.py`
times torchvision and TF Model Garden on the same machine beside it.

    python -m experiments.benchmark                      # all cases, float32 and mixed_bfloat16
    python -m experiments.benchmark --cases=r101_os16_infer --repeats=10 --precisions=float32
    python -m experiments.benchmark --cases=r50_os16_train --size=129 --batch=8   # the demo's step

Inference cases run the folded model with TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1, as deeplab-eval and
deeplab-vis do (oneDNN keeps the laid-out weights between calls; `deeplab_tf/constants.py`).
mixed_bfloat16 pays off where the CPU has bfloat16 instructions (AVX512-BF16 or AMX) or on GPU/TPU; on
CPUs without them it is much slower than float32.
"""

import json
import os
import resource
import subprocess
import sys
import time
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from deeplab_tf.constants import ASSUME_FROZEN_WEIGHTS  # noqa: E402
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
flags.DEFINE_bool("peak", True, "Measure and print the machine's matmul rate per precision first.")
flags.DEFINE_integer("peak_size", 4096, "Side of the square matmuls the peak is measured on (smaller: quicker, "
                     "below the peak).")
flags.DEFINE_string("_child", None, "Internal: run one case in this process and print JSON.")
FLAGS = flags.FLAGS


def _build_step(name, precision):
    import tensorflow as tf

    from deeplab_tf.modeling import DeepLabV3
    from deeplab_tf.modeling.folding import fold_batch_norm
    from deeplab_tf.modeling.precision import dtype_policy
    from deeplab_tf.training.optimizers import MomentumSGD
    from deeplab_tf.training.step import make_train_step

    backbone, output_stride, batch, mode = CASES[name]
    batch = FLAGS.batch or batch
    if mode == "infer":  # as deeplab-eval and deeplab-vis run (each case has a process of its own)
        os.environ.setdefault(ASSUME_FROZEN_WEIGHTS, "1")
    with dtype_policy(precision):
        model = DeepLabV3(num_classes=21, backbone=backbone, output_stride=output_stride)
    images = tf.random.uniform([batch, FLAGS.size, FLAGS.size, 3], 0, 255)
    if mode == "infer":
        model = fold_batch_norm(model)  # the inference form deeplab-eval, -vis and -export run
        step = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1))
        return batch, step, (images,)
    labels = tf.random.uniform([batch, FLAGS.size, FLAGS.size], 0, 21, dtype=tf.int32)
    optimizer = MomentumSGD(learning_rate=1e-3, momentum=0.9)
    optimizer.build(model.trainable_variables)
    step = tf.function(make_train_step(model, optimizer, global_step=tf.Variable(0, dtype=tf.int64)))
    return batch, step, (images, labels)


def conv_gflop(layer, input_shape):
    """Useful GFLOP of one `AtrousConv2D` call: 2 x multiply-adds of the taps that read real pixels.

    Taps that read only padding (large ASPP rates on small maps) are not work; strided convolutions
    count every tap of every output pixel.
    """
    from deeplab_tf.evaluation.valid_weights import valid_taps

    batch, height, width, channels = input_shape
    per_pixel = 2 * channels * layer.filters
    if layer.rate == 1:
        out_h, out_w = ((n - 1) // layer.strides + 1 for n in (height, width))
        return batch * out_h * out_w * layer.kernel_size ** 2 * per_pixel / 1e9
    rows, cols = (valid_taps(feature_size=n, kernel_size=layer.kernel_size, rate=layer.rate) for n in (height, width))
    return batch * int(rows.sum()) * int(cols.sum()) * per_pixel / 1e9


def model_gflop(model, batch, size):
    """Useful GFLOP of one forward pass of `model` on `batch` images of `size` x `size`."""
    import tensorflow as tf

    from deeplab_tf.modeling.layers import AtrousConv2D

    total = 0.0
    convolve = AtrousConv2D.convolve

    def counting(layer, inputs, kernel, **kwargs):
        nonlocal total
        total += conv_gflop(layer, inputs.shape)
        return convolve(layer, inputs, kernel, **kwargs)

    with mock.patch.object(AtrousConv2D, "convolve", counting):
        tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec([batch, size, size, 3]))
    return total


def work_gflop(name, batch, size):
    """GFLOP of a case's step: one forward pass to infer; to train, forward + the input gradient + the
    kernel gradient, three times the forward's (the first layer's input gradient is not computed, a 0.1% error)."""
    from deeplab_tf.modeling import DeepLabV3

    backbone, output_stride, _, mode = CASES[name]
    model = DeepLabV3(num_classes=21, backbone=backbone, output_stride=output_stride)
    forward = model_gflop(model, batch, size)
    return forward if mode == "infer" else 3 * forward


def matmul_peak(precision, size=4096, chain=8, repeats=5):
    """GFLOP/s of a chain of `size`^2 matmuls in the precision's compute dtype (median of `repeats`)."""
    import tensorflow as tf

    from deeplab_tf.modeling.layers import median_seconds

    dtype = tf.bfloat16 if "bfloat16" in precision else tf.float32
    a = tf.cast(tf.random.normal([size, size], stddev=size ** -0.5), dtype)

    @tf.function
    def run(x):
        for _ in range(chain):
            x = tf.matmul(x, a)
        return x

    return 2 * size ** 3 * chain / 1e9 / median_seconds(run, a, repeats=repeats)


def _run_case(name):
    import tensorflow as tf

    if name == "peak":
        return {precision: matmul_peak(precision, size=FLAGS.peak_size) for precision in FLAGS.precisions}
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
                        "images_per_second": batch / seconds, "peak_mib": peak_mib,
                        "gflop": work_gflop(name, batch, FLAGS.size)})
    return results


def run_child(name, *flags_):
    """Runs `_run_case(name)` in a fresh process (its own peak memory) and returns its JSON."""
    output = subprocess.run([sys.executable, "-m", "experiments.benchmark", f"--_child={name}", *flags_],
                            capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


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
    child_flags = [f"--size={FLAGS.size}", f"--repeats={FLAGS.repeats}", f"--precisions={','.join(FLAGS.precisions)}",
                   f"--batch={FLAGS.batch}", f"--peak_size={FLAGS.peak_size}"]
    peaks = run_child("peak", *child_flags) if FLAGS.peak else {}
    for precision, rate in peaks.items():
        print(f"matmul peak {precision:<15} {rate:7.0f} GFLOP/s (chain of {FLAGS.peak_size}^2 matmuls, median of 5)")
    print(f"{'case':<18} {'precision':<15} {'s/step':>8} {'img/s':>7} {'vs fp32':>8} {'GFLOP':>7} {'GFLOP/s':>8} "
          f"{'% peak':>7} {'peak MiB':>9}   ({FLAGS.size}x{FLAGS.size}, median of {FLAGS.repeats}, precisions "
          f"interleaved; peak memory is the case's process, all its precisions)")
    for name in FLAGS.cases:
        results = run_child(name, *child_flags)
        reference = {r["precision"]: r["seconds"] for r in results}.get("float32")
        for result in results:
            ratio = f"{reference / result['seconds']:.2f}x" if reference else ""
            rate = result["gflop"] / result["seconds"]
            share = f"{100 * rate / peaks[result['precision']]:.0f}%" if peaks else ""
            print(f"{name:<18} {result['precision']:<15} {result['seconds']:>8.3f} "
                  f"{result['images_per_second']:>7.2f} {ratio:>8} {result['gflop']:>7.1f} {rate:>8.0f} {share:>7} "
                  f"{result['peak_mib']:>9.0f}", flush=True)


if __name__ == "__main__":
    app.run(main)
