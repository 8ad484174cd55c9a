"""Reading TensorFlow's profiler trace and oneDNN's verbose log: op kinds, shapes and work.

Pure functions on the data `experiments/profile_ops.py` collects (no flags, so tests import them).
"""

import collections
import glob
import os
import re

# Op types (oneDNN-rewritten names included) by what they are for.
CATEGORIES = (
    ("convolution / matmul", re.compile(r"Conv2D|Conv2DBackprop|MatMul|Einsum")),
    ("tap windows (slice, pad)", re.compile(r"^(_Mkl)?(Strided)?Slice|^Pad")),
    ("adds", re.compile(r"^(_Mkl)?(AddN|AddV2|Add)$")),
    ("casts", re.compile(r"^Cast$")),
    ("batch norm", re.compile(r"BatchNorm")),
    ("resizes", re.compile(r"Resize")),
    ("relu", re.compile(r"Relu")),
    ("loss / softmax", re.compile(r"Softmax|CrossEntropy|TopK|ArgMax")),
    ("optimizer / variables", re.compile(r"ResourceApply|AssignVariable|ReadVariable|AssignAdd|AssignSub")),
)


def category(op_type):
    """The kind of `op_type` (a TensorFlow op type, oneDNN's renamed ones included); "other" if none."""
    for name, pattern in CATEGORIES:
        if pattern.search(op_type):
            return name
    return "other"


def op_times(trace_dir):
    """{op type: summed milliseconds} of the trace's TensorFlow ops."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    times = collections.Counter()
    for line in plane.lines:
        if not line.name.startswith("tf_Compute"):
            continue
        for event in line.events:
            op_type = plane.event_metadata[event.metadata_id].display_name
            if op_type:
                times[op_type] += event.duration_ps / 1e9
    return times


# oneDNN verbose: onednn_verbose,v1,primitive,exec,cpu,<kind>,<impl>,<propagation>,<memory>,<attrs>,<aux>,<problem>,<ms>
_CONV = re.compile(r"mb(\d+)_(?:g\d+)?ic(\d+)oc(\d+)_ih\d+oh(\d+)kh(\d+)sh(\d+)dh(\d+)ph\d+_iw\d+ow(\d+)kw(\d+)")


def onednn_record(line):
    """(group key, GFLOP, (M, K, N) or None, milliseconds) of one oneDNN verbose exec line, or None."""
    fields = line.strip().split(",")
    if len(fields) < 13 or fields[0] != "onednn_verbose" or fields[3] != "exec":
        return None
    kind, implementation, propagation, problem, ms = fields[5], fields[6], fields[7], fields[-2], float(fields[-1])
    direction = {"forward_training": "fwd", "forward_inference": "fwd", "backward_data": "bwd data",
                 "backward_weights": "bwd weights", "backward": "bwd"}.get(propagation, propagation)
    isa = implementation.split(":")[-1]
    if kind == "convolution":
        mb, ic, oc, oh, kh, sh, dh, ow, kw = map(int, _CONV.search(problem).groups())
        shape = (mb * oh * ow, ic * kh * kw, oc)
        label = f"{kh}x{kw}" + (f"/{sh}" if sh > 1 else "") + (f" rate {int(dh) + 1}" if dh else "")
        return (f"conv {label} {direction} [{isa}]", 2 * shape[0] * shape[1] * shape[2] / 1e9, shape, ms)
    if kind == "matmul":
        source, weights = (part.split("x") for part in problem.split(":")[:2])
        batch = 1
        for d in source[:-2]:
            batch *= int(d)
        shape = (batch * int(source[-2]), int(source[-1]), int(weights[-1]))
        return (f"matmul (atrous taps) [{isa}]", 2 * shape[0] * shape[1] * shape[2] / 1e9, shape, ms)
    return (f"{kind} {direction}".strip(), 0.0, None, ms)
