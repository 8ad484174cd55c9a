"""torchvision's DeepLabv3-ResNet101 on the CPU, timed as `experiments.benchmark` times ours.

Not part of the package: run it in a separate virtualenv with `pip install torch torchvision`
(see experiments/README.md, "Peers"). Random weights, channels_last, two threads; inference on one
513x513 image (no_grad), or a training step on two (SGD with momentum, cross-entropy on the logits at
the input size, batch norm in training mode); median of 10 calls after 3 warm-up ones.

    python experiments/peers/torchvision_deeplabv3.py --output_stride=16 --mode=compile --dtype=bfloat16
    python experiments/peers/torchvision_deeplabv3.py --what=train --dtype=bfloat16
"""

import argparse
import statistics
import time

import torch
from torchvision.models import resnet101
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3


class _Features(torch.nn.Module):
    """ResNet up to layer4, returning the dict torchvision's DeepLabV3 reads."""

    def __init__(self, resnet):
        super().__init__()
        self.body = torch.nn.Sequential(*list(resnet.children())[:-2])

    def forward(self, x):
        return {"out": self.body(x)}


def build(output_stride):
    """torchvision's DeepLabV3 at output stride 16 (ASPP rates 6, 12, 18) or 8 (its default: 12, 24, 36)."""
    resnet = resnet101(weights=None, replace_stride_with_dilation=[False, output_stride == 8, True])
    rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
    return DeepLabV3(_Features(resnet), DeepLabHead(2048, 21, atrous_rates=rates))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_stride", type=int, default=16, choices=[8, 16])
    parser.add_argument("--mode", default="eager", choices=["eager", "compile"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--what", default="infer", choices=["infer", "train"])
    parser.add_argument("--size", type=int, default=513, help="square input size")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls after the warm-up")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build(args.output_stride).train(args.what == "train").to(memory_format=torch.channels_last)
    if args.mode == "compile":
        model = torch.compile(model)
    batch = 1 if args.what == "infer" else 2
    images = torch.rand(batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 21, (batch, args.size, args.size))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def infer():
        with torch.no_grad(), autocast():
            return model(images)["out"].argmax(1)

    def train():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(images)["out"].float(), labels)
        loss.backward()
        optimizer.step()
        return loss

    run = infer if args.what == "infer" else train

    for _ in range(3):
        run()
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    unit = "s/image" if args.what == "infer" else "s/step (batch 2)"
    print(f"torchvision {args.mode} {args.what} R101 OS{args.output_stride} {args.dtype} (torch {torch.__version__}): "
          f"{statistics.median(seconds):.3f} {unit} median, {min(seconds):.3f} min", flush=True)


if __name__ == "__main__":
    main()
