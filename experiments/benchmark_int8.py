"""What the int8 TFLite file of `deeplab-export --int8_tflite_path` buys and costs.

Speed: R101 at OS 16, 513x513, batch 1, random weights: the int8 file in TFLite's interpreter (XNNPACK) against
our float32 and bfloat16 inference as deeplab-eval runs it (folded batch norm, TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1).
Each round runs one process per engine, one after the other (TensorFlow's, the int8 interpreter's and, with
--litert_python, LiteRT's interpreter on the same file), each the median of --repeats calls after two warm-ups;
the rounds alternate them, so the machine's drift hits all alike. All on --threads threads.

mIOU: on a deeplab-demo workspace, deeplab-export --int8_tflite_path and deeplab-eval of the float checkpoint and
of the int8 file at OS 16 on the demo's val split, as a user runs them (their output lines are printed).

    python -m experiments.benchmark_int8 --demo_workspace=deeplab_demo
    python -m experiments.benchmark_int8 --rounds=3 --litert_python=/tmp/litert_venv/bin/python --demo_workspace=
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("size", 513, "Square input size.")
flags.DEFINE_integer("repeats", 5, "Timed calls per engine and round, after two warm-ups.")
flags.DEFINE_integer("rounds", 2, "Rounds of the engines, alternated.")
flags.DEFINE_integer("threads", len(os.sched_getaffinity(0)), "Threads of every engine.")
flags.DEFINE_integer("calibration_images", 4, "Random images the speed case's int8 file is calibrated on.")
flags.DEFINE_string("litert_python", None, "A Python with ai-edge-litert installed: also time LiteRT's interpreter.")
flags.DEFINE_string("demo_workspace", None, "A deeplab-demo workspace: also measure the int8 mIOU cost there.")
flags.DEFINE_string("_child", None, "Internal: time one engine (tensorflow, tflite, litert) on --_file.")
flags.DEFINE_string("_file", None, "Internal: the int8 file.")
FLAGS = flags.FLAGS


def _median_seconds(call, repeats):
    call()
    call()  # warm-ups: tracing, oneDNN's and XNNPACK's set-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def _time_tensorflow():
    """{float32, mixed_bfloat16: seconds} of the folded R101 OS 16 as deeplab-eval runs it, interleaved."""
    from deeplab_tf.constants import ASSUME_FROZEN_WEIGHTS

    os.environ.setdefault(ASSUME_FROZEN_WEIGHTS, "1")  # before TensorFlow loads, as deeplab-eval's entry sets it
    import tensorflow as tf

    from deeplab_tf.modeling import DeepLabV3
    from deeplab_tf.modeling.folding import fold_batch_norm
    from deeplab_tf.modeling.precision import dtype_policy

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    images = tf.random.uniform([1, FLAGS.size, FLAGS.size, 3], 0, 255)
    calls = {}
    for precision in ("float32", "mixed_bfloat16"):
        with dtype_policy(precision):
            model = fold_batch_norm(DeepLabV3(num_classes=21, backbone="resnet_v1_101", output_stride=16))
        step = tf.function(lambda x, model=model: tf.argmax(model(x, training=False), axis=-1))
        calls[precision] = lambda step=step: step(images).numpy()
    # Interleaved call by call within the process, as experiments.benchmark does.
    times = {precision: [] for precision in calls}
    for call in calls.values():
        call()
        call()
    for _ in range(FLAGS.repeats):
        for precision, call in calls.items():
            start = time.perf_counter()
            call()
            times[precision].append(time.perf_counter() - start)
    return {precision: statistics.median(values) for precision, values in times.items()}


def _time_interpreter(module):
    """Seconds of one call of the int8 file (plus the argmax, as the float cases) in `module`'s Interpreter."""
    import numpy as np

    interpreter = module.Interpreter(model_path=FLAGS._file, num_threads=FLAGS.threads)
    interpreter.allocate_tensors()
    image = np.random.default_rng(0).uniform(0, 255, [1, FLAGS.size, FLAGS.size, 3]).astype(np.float32)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def call():
        interpreter.set_tensor(input_index, image)
        interpreter.invoke()
        return interpreter.get_tensor(output_index).argmax(-1)

    return {"int8": _median_seconds(call, FLAGS.repeats)}


def _run_child(engine):
    if engine == "tensorflow":
        return _time_tensorflow()
    if engine == "litert":
        from ai_edge_litert import interpreter as litert

        return _time_interpreter(litert)
    import warnings

    import tensorflow as tf

    warnings.filterwarnings("ignore", "\\s*Warning: tf.lite.Interpreter is deprecated")
    return _time_interpreter(tf.lite)


def _write_int8_file(folder):
    """The int8 file of a random folded R101 OS 16 at --size, calibrated on --calibration_images random images."""
    import tensorflow as tf  # noqa: F401  (loads before deeplab_tf's modules, quietly)

    from deeplab_tf.export import export_int8_tflite
    from deeplab_tf.modeling import DeepLabV3
    from deeplab_tf.modeling.folding import fold_batch_norm
    from experiments.benchmark_eval import write_split

    pattern = os.path.join(folder, "calibration.tfrecord")
    write_split(pattern, num_images=FLAGS.calibration_images, height=FLAGS.size, width=FLAGS.size)
    model = fold_batch_norm(DeepLabV3(num_classes=21, backbone="resnet_v1_101", output_stride=16))
    path = os.path.join(folder, "r101_os16_int8.tflite")
    start = time.perf_counter()
    export_int8_tflite(model, path, eval_crop_size=(FLAGS.size, FLAGS.size), calibration_pattern=pattern,
                       calibration_images=FLAGS.calibration_images)
    print(f"int8 file: {os.path.getsize(path) / 1e6:.1f} MB, written in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def _child_times(engine, path):
    python = FLAGS.litert_python if engine == "litert" else sys.executable
    command = [python, "-m", "experiments.benchmark_int8", f"--_child={engine}", f"--_file={path}",
               f"--size={FLAGS.size}", f"--repeats={FLAGS.repeats}", f"--threads={FLAGS.threads}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))).stdout
    return json.loads(output.strip().splitlines()[-1])


def _cpu():
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        f.seek(0)
        flags_line = next((line for line in f if line.startswith("flags")), "")
    features = [name for name in ("avx512_vnni", "avx512_bf16", "amx_int8") if f" {name}" in flags_line]
    return f"{names[0] if names else 'unknown CPU'} ({', '.join(features) or 'no VNNI/BF16/AMX'})"


def _speed():
    print(f"CPU: {_cpu()}; {FLAGS.threads} threads; load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    engines = ["tensorflow", "tflite"] + (["litert"] if FLAGS.litert_python else [])
    with tempfile.TemporaryDirectory() as folder:
        path = _write_int8_file(folder)
        rounds = []
        for index in range(FLAGS.rounds):
            times = {}
            for engine in engines:
                times.update({(engine, key): value for key, value in _child_times(engine, path).items()})
            rounds.append(times)
            print(f"round {index + 1}: " + ", ".join(f"{engine} {key} {value:.3f} s" for (engine, key), value in
                                                      times.items()), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(f"R101 OS16 {FLAGS.size}x{FLAGS.size} batch 1, median of {FLAGS.repeats} per round (rounds: "
          f"{FLAGS.rounds}), seconds and speed-up of the int8 file in TFLite's interpreter:")
    for key in rounds[0]:
        values = [times[key] for times in rounds]
        speedups = [times[key] / times[("tflite", "int8")] for times in rounds]
        print(f"  {key[0]:<10} {key[1]:<15} " + " / ".join(f"{v:.3f}" for v in values) + " s   int8 is "
              + " / ".join(f"{s:.2f}x" for s in speedups) + " faster")


def _binary(*command):
    """Runs an installed binary; returns its last output line."""
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed: {result.stderr.strip().splitlines()[-1]}")
    return result.stdout.strip().splitlines()[-1]


def _demo_miou(workspace):
    """deeplab-export --int8_tflite_path and deeplab-eval (float32 and int8, OS 16, the demo's canvas) on a
    deeplab-demo workspace; prints their report lines."""
    workdir = os.path.join(workspace, "runs", "demo")
    with open(os.path.join(workdir, "config.json")) as f:
        val = json.load(f)["config"]["dataset"]["eval_pattern"]
    path = os.path.join(workspace, "exports", "demo_int8.tflite")
    print(_binary("deeplab-export", f"--checkpoint={workdir}", f"--int8_tflite_path={path}"))
    for flip in ("--noflip", "--flip"):
        print(_binary("deeplab-eval", f"--checkpoint={workdir}", f"--eval_pattern={val}", flip))
        print(_binary("deeplab-eval", f"--tflite={path}", f"--eval_pattern={val}", flip))


def main(argv):
    del argv
    if FLAGS._child:
        print(json.dumps(_run_child(FLAGS._child)))
        return
    _speed()
    if FLAGS.demo_workspace:
        _demo_miou(FLAGS.demo_workspace)


if __name__ == "__main__":
    app.run(main)
