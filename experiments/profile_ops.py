"""Where a benchmark case's time goes, op by op: the numbers behind docs/performance.md.

Two views of the same steps (a case of `experiments.benchmark`, after two warm-up steps):

1. TensorFlow's profiler (`tf.profiler.experimental`, the trace TensorBoard's viewer shows): time of
   every executed op, summed by op type and grouped into convolution/matmul, tap-window copies
   (slices, pads), adds, casts, batch norm, resizes and the rest. Ops on the two inter-op threads
   overlap, so shares are of summed op time, not of the wall clock.
2. oneDNN's own log (`ONEDNN_VERBOSE=1`, in a second process): every primitive TensorFlow's oneDNN
   kernels ran, with its shape, so each convolution kind gets its GFLOP/s, set beside a plain
   `tf.matmul` of the same (M, K, N) in the same precision, and the layout reorders show apart.

    python -m experiments.profile_ops --case=r101_os16_train --precision=mixed_bfloat16
    python -m experiments.profile_ops --case=r101_os16_infer --precision=float32 --trace_dir=/tmp/trace

`--trace_dir` keeps the trace for TensorBoard's profile plugin (`tensorboard --logdir`); `--size` and
`--batch` are `experiments.benchmark`'s.
"""

import collections
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments import benchmark  # noqa: E402
from experiments.trace_reading import category, onednn_record, op_times  # noqa: E402

flags.DEFINE_string("case", "r101_os16_infer", f"One of {', '.join(benchmark.CASES)}.")
flags.DEFINE_string("precision", "mixed_bfloat16", "float32 or mixed_bfloat16.")
flags.DEFINE_integer("steps", 3, "Profiled steps (after two warm-up ones).")
flags.DEFINE_string("trace_dir", None, "Keep the profiler trace here (default: a temporary folder).")
flags.DEFINE_bool("onednn", True, "Also run the oneDNN view (a second process with ONEDNN_VERBOSE=1).")
flags.DEFINE_bool("_onednn_child", False, "Internal: run the steps with oneDNN's log on.")
FLAGS = flags.FLAGS

_MARK_START, _MARK_END = "=====profile_ops start", "=====profile_ops end"


def _build():
    batch, step, args = benchmark._build_step(FLAGS.case, FLAGS.precision)
    for _ in range(2):
        step(*args)
    return batch, step, args


def _run(step, args):
    import tensorflow as tf

    tf.nest.map_structure(lambda t: t.numpy(), step(*args))


def _print_shares(title, times, steps, wall):
    total = sum(times.values())
    print(f"\n{title} (ms per step; share of summed op time {total / steps:.0f} ms; wall {1e3 * wall:.0f} ms)")
    for name, ms in times.most_common():
        print(f"  {name:<34} {ms / steps:9.1f} {100 * ms / total:6.1f}%")


def _matmul_rate(shape, dtype):
    """GFLOP/s of tf.matmul on (M, K) x (K, N), median of 5 after a warm-up."""
    import tensorflow as tf

    from deeplab_tf.modeling.layers import median_seconds

    m, k, n = shape
    a, b = (tf.cast(tf.random.normal(s), dtype) for s in ((m, k), (k, n)))
    return 2 * m * k * n / 1e9 / median_seconds(tf.function(tf.matmul), a, b, repeats=5)


def _onednn_view(steps):
    environment = dict(os.environ, ONEDNN_VERBOSE="1")
    output = subprocess.run([sys.executable, "-m", "experiments.profile_ops", "--_onednn_child", f"--case={FLAGS.case}",
                             f"--precision={FLAGS.precision}", f"--steps={steps}", f"--size={FLAGS.size}",
                             f"--batch={FLAGS.batch}"],
                            capture_output=True, text=True, check=True, env=environment).stdout
    lines = output.split(_MARK_START, 1)[1].split(_MARK_END, 1)[0].splitlines()
    groups = collections.defaultdict(lambda: {"ms": 0.0, "gflop": 0.0, "shapes": collections.Counter()})
    for record in filter(None, map(onednn_record, lines)):
        key, gflop, shape, ms = record
        groups[key]["ms"] += ms
        groups[key]["gflop"] += gflop
        if shape:
            groups[key]["shapes"][shape] += gflop
    import tensorflow as tf

    dtype = tf.bfloat16 if "bfloat16" in FLAGS.precision else tf.float32
    total = sum(g["ms"] for g in groups.values())
    print(f"\noneDNN primitives (ms per step; share of {total / steps:.0f} ms; GFLOP/s beside a tf.matmul of the "
          "same (M, K, N) shapes, weighted by work)")
    print(f"  {'primitive':<44} {'ms':>8} {'share':>6} {'GFLOP':>7} {'GFLOP/s':>8} {'matmul':>8}")
    for key, group in sorted(groups.items(), key=lambda item: -item[1]["ms"]):
        rate = matmul = ""
        if group["gflop"]:
            rate = f"{group['gflop'] / group['ms'] * 1e3:.0f}"
            # The matmul's time for the same work, shape by shape.
            seconds = sum(gflop / _matmul_rate(shape, dtype) for shape, gflop in group["shapes"].items())
            matmul = f"{group['gflop'] / seconds:.0f}"
        print(f"  {key:<44} {group['ms'] / steps:8.1f} {100 * group['ms'] / total:5.1f}% "
              f"{group['gflop'] / steps:7.1f} {rate:>8} {matmul:>8}")


def main(argv):
    del argv
    if FLAGS.case not in benchmark.CASES:
        raise app.UsageError(f"--case: unknown {FLAGS.case!r}; known: {', '.join(benchmark.CASES)}")
    batch, step, args = _build()
    if FLAGS._onednn_child:
        print(_MARK_START, flush=True)
        for _ in range(FLAGS.steps):
            _run(step, args)
        print(_MARK_END, flush=True)
        return
    import tensorflow as tf

    trace_dir = FLAGS.trace_dir or tempfile.mkdtemp(prefix="profile_ops_")
    tf.profiler.experimental.start(trace_dir)
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        _run(step, args)
    wall = (time.perf_counter() - start) / FLAGS.steps
    tf.profiler.experimental.stop()
    times = op_times(trace_dir)
    by_category = collections.Counter()
    for op_type, ms in times.items():
        by_category[category(op_type)] += ms
    print(f"{FLAGS.case} {FLAGS.precision}, batch {batch}, {FLAGS.steps} profiled steps; trace in {trace_dir}")
    _print_shares("TensorFlow ops by kind", by_category, FLAGS.steps, wall)
    _print_shares("TensorFlow ops by type", collections.Counter(dict(times.most_common(15))), FLAGS.steps, wall)
    if FLAGS.onednn:
        _onednn_view(FLAGS.steps)


if __name__ == "__main__":
    app.run(main)
