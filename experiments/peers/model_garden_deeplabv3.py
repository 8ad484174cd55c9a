"""TF Model Garden's DeepLabv3-ResNet101 on the CPU, timed as `experiments.benchmark` times ours.

Not part of the package: run it in a separate virtualenv with `pip install tf-models-official`
(see experiments/README.md, "Peers"). Random weights; inference on one 513x513 image or a training
step (SGD, softmax cross-entropy at the input size) on two, in `tf.function`; median of 10 calls
after 3 warm-up ones. The model is official.vision's DilatedResNet-101 + ASPP + a segmentation
head with one 3x3 conv (as torchvision's), logits resized bilinearly to the input.

    python experiments/peers/model_garden_deeplabv3.py --output_stride=16 --what=train
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from official.vision.modeling.backbones.resnet_deeplab import DilatedResNet  # noqa: E402
from official.vision.modeling.decoders.aspp import ASPP  # noqa: E402
from official.vision.modeling.heads.segmentation_heads import SegmentationHead  # noqa: E402
from official.vision.modeling.segmentation_model import SegmentationModel  # noqa: E402



def build(output_stride, size):
    level = {16: 4, 8: 3}[output_stride]
    backbone = DilatedResNet(model_id=101, output_stride=output_stride,
                             input_specs=tf_keras.layers.InputSpec(shape=[None, size, size, 3]))
    decoder = ASPP(level=level, dilation_rates=[6, 12, 18] if output_stride == 16 else [12, 24, 36])
    return SegmentationModel(backbone, decoder, SegmentationHead(num_classes=21, level=level, num_convs=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_stride", type=int, default=16, choices=[8, 16])
    parser.add_argument("--what", default="infer", choices=["infer", "train"])
    parser.add_argument("--size", type=int, default=513, help="square input size")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls after the warm-up")
    args = parser.parse_args()
    tf.random.set_seed(0)
    model = build(args.output_stride, args.size)
    size = args.size

    def logits(images, training):
        return tf.image.resize(model(images, training=training)["logits"], [size, size])

    if args.what == "infer":
        inputs = (tf.random.uniform([1, size, size, 3], 0, 255),)
        step = tf.function(lambda images: tf.argmax(logits(images, False), axis=-1))
    else:
        inputs = (tf.random.uniform([2, size, size, 3], 0, 255),
                  tf.random.uniform([2, size, size], 0, 21, dtype=tf.int32))
        optimizer = tf_keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9)

        @tf.function
        def step(images, labels):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=labels, logits=logits(images, True)))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss

    for _ in range(3):
        step(*inputs).numpy()
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step(*inputs).numpy()
        seconds.append(time.perf_counter() - start)
    unit = "s/image" if args.what == "infer" else "s/step (batch 2)"
    print(f"Model Garden {args.what} R101 OS{args.output_stride} float32 (TF {tf.__version__}): "
          f"{statistics.median(seconds):.3f} {unit} median, {min(seconds):.3f} min", flush=True)


if __name__ == "__main__":
    main()
