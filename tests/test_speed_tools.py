"""The speed tooling of experiments/: its work count, its reading of oneDNN's log, and the scripts as run.

Times are never asserted (they are the scripts' output); what is checked is that the numbers they
print are computed from the right quantities.
"""

import os
import re
import subprocess
import sys

import pytest

from experiments import benchmark, trace_reading
from test_console_scripts import REPO, _env


def test_conv_gflop_counts_only_taps_that_read_pixels():
    """A 3x3 rate-2 conv on 5x5: per axis the taps reading pixels are 2, 2, 3, 2, 2 (11); 2 x 11 x 11
    positions x 2 -> 4 channels; a strided conv counts all its taps."""
    from deeplab_tf.modeling.layers import AtrousConv2D

    atrous = AtrousConv2D(4, 3, rate=2)
    assert benchmark.conv_gflop(atrous, (1, 5, 5, 2)) * 1e9 == pytest.approx(2 * 11 * 11 * 2 * 4)
    # Rate >= size: only the centre tap is left, a 1x1 convolution.
    assert benchmark.conv_gflop(AtrousConv2D(4, 3, rate=6), (2, 5, 5, 2)) * 1e9 == pytest.approx(2 * 2 * 25 * 2 * 4)
    strided = AtrousConv2D(8, 3, strides=2)
    assert benchmark.conv_gflop(strided, (1, 9, 9, 3)) * 1e9 == pytest.approx(2 * 5 * 5 * 9 * 3 * 8)


def test_model_gflop_sums_every_convolution_once():
    """model_gflop counts each AtrousConv2D call of a forward pass: the sum of conv_gflop over the
    layers at the shapes they see (checked against the same sum taken by hand on a small model)."""
    import tensorflow as tf

    from deeplab_tf.modeling import DeepLabV3
    from deeplab_tf.modeling.layers import AtrousConv2D

    model = DeepLabV3(num_classes=3, backbone="resnet_v1_50", output_stride=16)
    seen = []
    convolve = AtrousConv2D.convolve

    def recording(layer, inputs, kernel, **kwargs):
        seen.append(benchmark.conv_gflop(layer, inputs.shape))
        return convolve(layer, inputs, kernel, **kwargs)

    AtrousConv2D.convolve = recording
    try:
        model(tf.zeros([2, 65, 65, 3]), training=False)
    finally:
        AtrousConv2D.convolve = convolve
    convolutions = [layer for layer in model._flatten_layers() if isinstance(layer, AtrousConv2D)]
    assert len(seen) == len(convolutions)  # every layer once, the image pooling's 1x1 included
    assert benchmark.model_gflop(model, 2, 65) == pytest.approx(sum(seen))


LINES = [
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_1x1:avx512_core_bf16,forward_training,"
    "src:bf16::blocked:acdb::f0 wei:bf16:a:blocked:AcdB64a2b::f0 dst:bf16::blocked:acdb::f0,attr-scratchpad:user,"
    "alg:convolution_direct,mb1_ic64oc256_ih129oh129kh1sh1dh0ph0_iw129ow129kw1sw1dw0pw0,1.16016",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_inference,"
    "src:f32::blocked:acdb::f0 wei:f32::blocked:Acdb16a::f0 dst:f32::blocked:acdb::f0,,"
    "alg:convolution_direct,mb2_ic2048oc256_ih33oh33kh3sh1dh11ph12_iw33ow33kw3sw1dw11pw12,5.5",
    "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_bf16,undef,"
    "src:bf16::blocked:ab::f0 wei:bf16::blocked:ab::f0 dst:bf16::blocked:ab::f0,,,1089x512:512x256,0.25",
    "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:bf16::blocked:cdba::f0 "
    "dst:bf16::blocked:AcdB64a2b::f0,,,256x64x1x1,0.0549316",
    "onednn_verbose,v1,primitive,create:cache_hit,cpu,reorder,jit:uni,undef,src dst,,,256x64x1x1,0.01",
]


def test_onednn_log_lines_become_kinds_shapes_and_work():
    conv, dilated, matmul, reorder, created = map(trace_reading.onednn_record, LINES)
    assert conv == ("conv 1x1 fwd [avx512_core_bf16]", pytest.approx(2 * 129 * 129 * 64 * 256 / 1e9),
                    (129 * 129, 64, 256), 1.16016)
    # dh is oneDNN's dilation minus one: rate 12; all nine taps are counted (nominal work).
    assert dilated[0] == "conv 3x3 rate 12 fwd [avx512_core]"
    assert dilated[2] == (2 * 33 * 33, 2048 * 9, 256)
    assert matmul[:3] == ("matmul (atrous taps) [avx512_core_bf16]", pytest.approx(2 * 1089 * 512 * 256 / 1e9),
                          (1089, 512, 256))
    assert reorder == ("reorder undef", 0.0, None, 0.0549316)
    assert created is None  # only executions count


def test_op_categories():
    assert trace_reading.category("_MklNativeFusedConv2D") == "convolution / matmul"
    assert trace_reading.category("_MklNativeConv2DBackpropFilter") == "convolution / matmul"
    assert trace_reading.category("StridedSliceGrad") == "tap windows (slice, pad)"
    assert trace_reading.category("AddN") == "adds"
    assert trace_reading.category("_MklNativeFusedBatchNormGradV3") == "batch norm"
    assert trace_reading.category("ResizeBilinearGrad") == "resizes"
    assert trace_reading.category("Sum") == "other"


def _run(*args):
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_benchmark_prints_rates_and_shares_of_the_matmul_peak():
    output = _run("experiments.benchmark", "--cases=r50_os16_infer", "--size=65", "--repeats=1",
                  "--precisions=float32", "--peak_size=1024")
    assert re.search(r"matmul peak float32\s+\d+ GFLOP/s \(chain of 1024\^2 matmuls", output)
    row = next(line for line in output.splitlines() if line.startswith("r50_os16_infer"))
    seconds, gflop, rate, share = (row.split()[i] for i in (2, 5, 6, 7))
    assert float(gflop) > 0 and share.endswith("%")
    assert float(seconds) > 0.0005
    seconds, gflop = float(seconds), float(gflop)  # printed to 3 decimals and 1; the rate from the unrounded
    assert (gflop - 0.05) / (seconds + 0.0005) - 1 <= float(rate) <= (gflop + 0.05) / (seconds - 0.0005) + 1


def test_profile_ops_breaks_a_step_down():
    output = _run("experiments.profile_ops", "--case=r50_os16_infer", "--precision=float32", "--steps=1", "--size=65")
    assert "TensorFlow ops by kind" in output and "convolution / matmul" in output
    assert re.search(r"^\s+conv 1x1 fwd \[\w+\]\s+[\d.]+\s+[\d.]+%\s+[\d.]+\s+\d+\s+\d+$", output, re.MULTILINE)


def test_compare_peers_prints_the_table_and_our_speedups(tmp_path):
    """Columns only for the interpreters given (here a fake 'torch' one and a fake 'openvino' one, each printing a
    peer's line) and ours; the ratio table divides the peer's seconds by ours in the same precision."""
    fake = tmp_path / "peer_python"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'peer_arguments'}\n"
                    "echo 'torchvision eager infer R101 OS16 float32 (torch x): 0.500 s/image median, 0.4 min'\n")
    # The OpenVINO one also records whether the model file it is given exists while it runs.
    openvino = tmp_path / "openvino_python"
    openvino.write_text(f"#!/bin/sh\nfor a; do case $a in --model=*) test -s \"${{a#--model=}}\" && echo \"$@\" "
                        f">> {tmp_path / 'openvino_arguments'};; esac; done\n"
                        "echo 'openvino infer R101 OS16 float32 (openvino x): 0.250 s/image median, 0.2 min'\n")
    os.chmod(fake, 0o755)
    os.chmod(openvino, 0o755)
    output = _run("experiments.compare_peers", "--rows=r101_os16_infer", f"--torch_python={fake}",
                  f"--openvino_python={openvino}", "--size=65", "--repeats=1", "--peak_size=1024")
    assert re.search(r"^CPU: \S.*, \d+ cores; 65x65, median of 1 calls per cell, 1 round", output, re.MULTILINE)
    # Every peer cell ran at the size and repeats given (four torch columns: eager and compile, fp32 and bf16).
    peer_calls = (tmp_path / "peer_arguments").read_text().splitlines()
    assert len(peer_calls) == 4 and all("--size=65 --repeats=1" in call for call in peer_calls), peer_calls
    # Both OpenVINO cells got the one model file written for the row, which is removed at the end.
    openvino_calls = (tmp_path / "openvino_arguments").read_text().splitlines()
    assert [re.search(r"--dtype=(\S+)", call).group(1) for call in openvino_calls] == ["float32", "bfloat16"]
    assert all("--size=65 --repeats=1" in call for call in openvino_calls), openvino_calls
    models = {re.search(r"--model=(\S+)", call).group(1) for call in openvino_calls}
    assert len(models) == 1 and not os.path.exists(models.pop()), openvino_calls

    def cells(prefix):  # the cells of the lines starting with `prefix`: the seconds table's, then the ratios'
        return [[c.strip() for c in line.strip("|").split("|")] for line in output.splitlines()
                if line.startswith(prefix)]

    (columns, ratio_columns), (row, ratio_row) = cells("| work"), cells("| R101 OS16 inference")
    assert {"torch eager fp32", "OpenVINO fp32", "OpenVINO bf16", "ours fp32"} <= set(columns), columns
    assert not any("Model Garden" in c for c in columns)
    # The ratio is of the unrounded seconds; the table prints them to 3 decimals (half a millisecond either way).
    for peer, peer_seconds, ours_column in [("torch eager fp32", 0.5, "ours fp32"),
                                            ("OpenVINO bf16", 0.25, "ours bf16")]:
        ours = float(row[columns.index(ours_column)].split()[0])
        ratio = ratio_row[ratio_columns.index(peer)]
        assert ratio.endswith("x")
        assert (round(peer_seconds / (ours + 0.0005), 2) <= float(ratio[:-1])
                <= round(peer_seconds / (ours - 0.0005), 2)), (peer, ratio, ours)
