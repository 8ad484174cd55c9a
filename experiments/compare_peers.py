"""Ours beside torchvision (eager, torch.compile), TF Model Garden and OpenVINO: the README's speed table.

Every cell is one process timing one implementation (random weights, 513x513 unless --size says
otherwise, median of 10 calls after warm-up unless --repeats says otherwise; see `experiments/benchmark.py` and `experiments/peers/`), run one at a time so that
none halves another on a 2-core machine; `--rounds` repeats the whole table, interleaved, and keeps
each cell's median. The peers run in their own virtualenvs (experiments/README.md, "Peers"); a
column whose interpreter is not given is left out. The OpenVINO columns run our own model, as the
float32 TFLite file deeplab-export writes (`--tflite_path`; random weights, batch norm folded), written
here once per inference row into a temporary folder removed at the end; like our cells, it returns the
labels. Then prints our speed-ups over each peer in the same precision, and our rate against the
machine's measured matmul rate.

    python -m experiments.compare_peers --torch_python=/tmp/torchenv/bin/python \\
        --model_garden_python=/tmp/mgenv/bin/python --openvino_python=/tmp/ovenv/bin/python --rounds=2
"""

import concurrent.futures
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments import benchmark  # noqa: E402

ROWS = {
    # case of experiments.benchmark: (title, output stride, what)
    "r101_os16_infer": ("R101 OS16 inference, batch 1", 16, "infer"),
    "r101_os16_train": ("R101 OS16 training step, batch 2", 16, "train"),
    "r101_os8_infer": ("R101 OS8 inference, batch 1", 8, "infer"),
}
# column: (interpreter flag, script, extra arguments, precision); OpenVINO's bf16 is its CPU plugin's bf16
# inference precision on the float32 model, the counterpart of our mixed_bfloat16.
PEERS = {
    "torch eager fp32": ("torch_python", "torchvision_deeplabv3.py", ["--mode=eager", "--dtype=float32"], "float32"),
    "torch eager bf16": ("torch_python", "torchvision_deeplabv3.py", ["--mode=eager", "--dtype=bfloat16"],
                         "mixed_bfloat16"),
    "torch.compile fp32": ("torch_python", "torchvision_deeplabv3.py", ["--mode=compile", "--dtype=float32"],
                           "float32"),
    "torch.compile bf16": ("torch_python", "torchvision_deeplabv3.py", ["--mode=compile", "--dtype=bfloat16"],
                           "mixed_bfloat16"),
    "Model Garden fp32": ("model_garden_python", "model_garden_deeplabv3.py", [], "float32"),
    "OpenVINO fp32": ("openvino_python", "openvino_deeplabv3.py", ["--dtype=float32"], "float32"),
    "OpenVINO bf16": ("openvino_python", "openvino_deeplabv3.py", ["--dtype=bfloat16"], "mixed_bfloat16"),
}
# Columns (by prefix) that time inference only.
INFERENCE_ONLY = ("torch.compile", "OpenVINO")
OURS = {"ours fp32": "float32", "ours bf16": "mixed_bfloat16"}

flags.DEFINE_string("torch_python", None, "Python of a virtualenv with torch and torchvision.")
flags.DEFINE_string("model_garden_python", None, "Python of a virtualenv with tf-models-official.")
flags.DEFINE_string("openvino_python", None, "Python of a virtualenv with openvino (it runs our exported model).")
flags.DEFINE_list("rows", list(ROWS), "Rows (cases) to time.")
flags.DEFINE_integer("rounds", 1, "Times the whole table is run, interleaved; each cell keeps its median.")
# --size (513) and --repeats are experiments.benchmark's flags, passed to every cell; here 10 repeats by default.
flags.FLAGS.set_default("repeats", 10)
FLAGS = flags.FLAGS

_SECONDS = re.compile(r"([0-9.]+) s/(?:image|step)")


def _peer_seconds(column, output_stride, what, our_model):
    """Seconds of one peer cell; `our_model`: the TFLite file of the row the OpenVINO columns run."""
    interpreter_flag, script, arguments, _ = PEERS[column]
    if what == "train" and column.startswith(INFERENCE_ONLY):
        return None
    command = [getattr(FLAGS, interpreter_flag), os.path.join(os.path.dirname(__file__), "peers", script),
               f"--output_stride={output_stride}", f"--what={what}", f"--size={FLAGS.size}",
               f"--repeats={FLAGS.repeats}", *arguments]
    if interpreter_flag == "openvino_python":
        command.append(f"--model={our_model}")
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(_SECONDS.search(output.strip().splitlines()[-1]).group(1))


def _write_tflite(case, folder):
    """Writes the case's model as deeplab-export --tflite_path does (SavedModel, then its float-image signature
    to TFLite), with random weights and batch norm folded as our inference cells run it (`benchmark.CASES`)."""
    from deeplab_tf import export
    from deeplab_tf.modeling import DeepLabV3
    from deeplab_tf.modeling.folding import fold_batch_norm

    backbone, output_stride, _, _ = benchmark.CASES[case]
    model = fold_batch_norm(DeepLabV3(num_classes=21, backbone=backbone, output_stride=output_stride))
    saved_model = os.path.join(folder, case)
    export.export_saved_model(model, saved_model)
    return export.export_tflite(saved_model, saved_model + ".tflite")


def _export_for_openvino(folder):
    """{inference row: its TFLite file in `folder`}, written in a process of its own: the export's memory
    leaves with it instead of staying in this one while the cells run (spawned: this process has TensorFlow)."""
    cases = [case for case in FLAGS.rows if ROWS[case][2] == "infer"] if FLAGS.openvino_python else []
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return {case: pool.submit(_write_tflite, case, folder).result() for case in cases}


def _our_seconds(case):
    results = benchmark.run_child(case, f"--size={FLAGS.size}", f"--repeats={FLAGS.repeats}",
                                  f"--precisions={','.join(OURS.values())}")
    return {r["precision"]: r["seconds"] for r in results}, results[0]["gflop"]


def _cpu_model():
    """The CPU's model name as /proc/cpuinfo gives it (speed figures are only comparable on one CPU)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def _table(columns, cells):
    lines = ["| work | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for case in FLAGS.rows:
        values = [cells[case].get(column) for column in columns]
        lines.append(f"| {ROWS[case][0]} | " + " | ".join("—" if v is None else f"{v:.3f} s" for v in values) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    for case in FLAGS.rows:
        if case not in ROWS:
            raise app.UsageError(f"--rows: unknown {case!r}; known: {', '.join(ROWS)}")
    columns = [c for c, (interpreter_flag, *_) in PEERS.items() if getattr(FLAGS, interpreter_flag)] + list(OURS)
    print(f"CPU: {_cpu_model()}, {len(os.sched_getaffinity(0))} cores; {FLAGS.size}x{FLAGS.size}, median of "
          f"{FLAGS.repeats} calls per cell, {FLAGS.rounds} round(s)")
    samples = {case: {column: [] for column in columns} for case in FLAGS.rows}
    work = {}
    with tempfile.TemporaryDirectory(prefix="compare_peers_") as folder:
        our_models = _export_for_openvino(folder)
        for round_ in range(FLAGS.rounds):
            for case in FLAGS.rows:
                _, output_stride, what = ROWS[case]
                for column in columns:
                    if column in OURS:
                        continue
                    seconds = _peer_seconds(column, output_stride, what, our_models.get(case))
                    if seconds is not None:
                        samples[case][column].append(seconds)
                ours, work[case] = _our_seconds(case)
                for column, precision in OURS.items():
                    samples[case][column].append(ours[precision])
                print(f"round {round_ + 1}/{FLAGS.rounds}: {ROWS[case][0]} done", file=sys.stderr, flush=True)
    cells = {case: {column: statistics.median(values) for column, values in row.items() if values}
             for case, row in samples.items()}
    print(_table(columns, cells))

    peaks = benchmark.run_child("peak", f"--precisions={','.join(OURS.values())}", f"--peak_size={FLAGS.peak_size}")
    print("\nOur speed-up over each peer in the same precision (peer seconds / ours; > 1: we are faster):")
    peer_columns = [c for c in columns if c not in OURS]
    print("| work | " + " | ".join(peer_columns) + " |\n" + "|---" * (len(peer_columns) + 1) + "|")
    for case in FLAGS.rows:
        ratios = []
        for column in peer_columns:
            ours = cells[case][{precision: ours for ours, precision in OURS.items()}[PEERS[column][3]]]
            peer = cells[case].get(column)
            ratios.append("—" if peer is None else f"{peer / ours:.2f}x")
        print(f"| {ROWS[case][0]} | " + " | ".join(ratios) + " |")
    print(f"\nMachine: matmul {peaks['float32']:.0f} GFLOP/s float32, {peaks['mixed_bfloat16']:.0f} bfloat16 "
          f"(chain of {FLAGS.peak_size}^2 matmuls, median of 5). Ours against it:")
    for case in FLAGS.rows:
        rates = [f"{column} {work[case] / cells[case][column]:.0f} GFLOP/s "
                 f"({100 * work[case] / cells[case][column] / peaks[precision]:.0f}%)"
                 for column, precision in OURS.items()]
        print(f"  {ROWS[case][0]}: {work[case]:.1f} GFLOP; " + ", ".join(rates))


if __name__ == "__main__":
    app.run(main)
