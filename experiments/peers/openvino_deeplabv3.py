"""Our DeepLabv3 run by OpenVINO on the CPU, timed as `experiments.benchmark` times it in TensorFlow.

Not part of the package: run it in a separate virtualenv with `pip install openvino numpy` (no
TensorFlow; see experiments/README.md, "Peers"). It reads the float32 TFLite file deeplab-export
writes (`--tflite_path`), whose `predict_images` signature returns the labels, the argmax of the
logits, as our benchmark's inference case does; `experiments.compare_peers` writes one with random
weights. Not the SavedModel: OpenVINO converts only its `serving_default` signature, which decodes
image bytes with ops OpenVINO has no conversion for. Two threads, the latency hint, the input fixed
at one SIZExSIZE image; median of 10 calls after 3 warm-up ones.

    python experiments/peers/openvino_deeplabv3.py --model=/tmp/deeplab.tflite --dtype=bfloat16
"""

import argparse
import statistics
import sys
import time

import numpy as np
import openvino as ov
import openvino.properties.hint as hints


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="float32 TFLite file of our exported model")
    parser.add_argument("--output_stride", type=int, default=16, choices=[8, 16],
                        help="the output stride the model was exported at (it names the printed line)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the CPU plugin's inference precision (bfloat16: its bf16 hint on the float32 model)")
    parser.add_argument("--what", default="infer", choices=["infer"], help="inference only: OpenVINO does not train")
    parser.add_argument("--size", type=int, default=513, help="square input size")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls after the warm-up")
    args = parser.parse_args()
    precision = ov.Type.bf16 if args.dtype == "bfloat16" else ov.Type.f32
    model = ov.convert_model(args.model, input=[1, args.size, args.size, 3])
    compiled = ov.Core().compile_model(model, "CPU", {
        ov.properties.inference_num_threads: 2, hints.performance_mode: hints.PerformanceMode.LATENCY,
        hints.inference_precision: precision})
    # The plugin silently computes in f32 on a CPU without bf16 instructions: say so, the figure is not bf16's.
    if compiled.get_property(hints.inference_precision) != precision:
        print(f"openvino: {args.dtype} asked, the CPU plugin runs "
              f"{compiled.get_property(hints.inference_precision)}", file=sys.stderr)
    request = compiled.create_infer_request()
    image = np.random.default_rng(0).uniform(0, 255, [1, args.size, args.size, 3]).astype(np.float32)

    for _ in range(3):
        request.infer([image])
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        request.infer([image])
        seconds.append(time.perf_counter() - start)
    print(f"openvino {args.what} R101 OS{args.output_stride} {args.dtype} (openvino {ov.__version__.split('-')[0]}): "
          f"{statistics.median(seconds):.3f} s/image median, {min(seconds):.3f} min", flush=True)


if __name__ == "__main__":
    main()
