"""Atrous ResNet v1 backbones (paper sections 3.1-3.2, Fig. 3).

TF-slim's ResNet v1, which the paper used: bottleneck units 1x1 -> 3x3 (carrying the stride and the
atrous rate) -> 1x1 (4x depth); a block's stride sits in its *last* unit; block4 has stride 1. Once the
requested `output_stride` is reached, every later stride becomes 1 and multiplies the atrous rate of
the units after it. `multi_grid` multiplies the rates of the three units of block4 and of every
cascaded block5..block7, which are replicas of block4 (section 3.2).
"""

import dataclasses

import keras
import tensorflow as tf

from deeplab_tf.constants import MEAN_RGB, UNIT_RANGE_CENTRE
from deeplab_tf.modeling.layers import ConvBN, NormalizeImages

# Units per block for the two depths of the paper.
_UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_BASE_DEPTHS = (64, 128, 256, 512)
BACKBONES = ("resnet_v1_50", "resnet_v1_101", "resnet_v1_50_beta", "resnet_v1_101_beta")
# Stride of the stem (conv1 /2 and max pool /2) before block1.
_STEM_STRIDE = 4


@dataclasses.dataclass(frozen=True)
class UnitSpec:
    """One bottleneck unit as placed in the network: its block, depths, stride and atrous rate."""

    block: str
    index: int  # 1-based, as TF-slim's unit_<index> scopes.
    depth: int
    bottleneck_depth: int
    stride: int
    rate: int

    @property
    def name(self):
        return f"{self.block}_unit_{self.index}"


def parse_backbone(name):
    """'resnet_v1_101_beta' -> (101, 'beta'); raises a clear error for an unknown name."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")
    parts = name.split("_")
    return int(parts[2]), ("beta" if name.endswith("_beta") else "standard")


def input_normalization(name):
    """(mean, std) of the inputs `name`'s ImageNet checkpoint was trained on: (x - mean) / std.

    As the original release's `core/feature_extractor.py` preprocesses per network: the plain ResNets
    subtract the ImageNet mean (`_preprocess_subtract_imagenet_mean`), the `_beta` ones map 0..255 to
    [-1, 1] (`_preprocess_zero_mean_unit_range`, 2x / 255 - 1).
    """
    if parse_backbone(name)[1] == "beta":
        return UNIT_RANGE_CENTRE, 127.5
    return MEAN_RGB, 1.0


def pad_value(name):
    """The RGB value that pads training crops and evaluation canvases for backbone `name`: the pixel
    its input normalisation maps to 0 (the release's `feature_extractor.mean_pixel`)."""
    return input_normalization(name)[0]


def max_output_stride(num_cascaded_blocks):
    """32 for the plain network; every cascaded block halves the resolution once more (Table 1)."""
    return 32 * 2 ** num_cascaded_blocks


def unit_specs(depth, *, output_stride=16, multi_grid=None, num_cascaded_blocks=0):
    """Places strides and atrous rates on every unit (section 3.1, Fig. 3).

    Args:
        depth: 50 or 101.
        output_stride: ratio of input to output resolution; a power of 2 from 4 (the paper's
            Cityscapes test-set inference, section 4.3) to `max_output_stride(num_cascaded_blocks)`.
        multi_grid: unit rates (r1, r2, r3) of block4 and the cascaded blocks, or None for (1, 1, 1).
        num_cascaded_blocks: 0-3 replicas of block4 (block5..block7) after block4.

    Returns:
        A list of `UnitSpec`, in order.
    """
    if depth not in _UNITS:
        raise ValueError(f"ResNet depth must be 50 or 101, got {depth}.")
    if not 0 <= num_cascaded_blocks <= 3:
        raise ValueError(f"num_cascaded_blocks must be 0..3 (block5..block7), got {num_cascaded_blocks}.")
    limit = max_output_stride(num_cascaded_blocks)
    valid = [2 ** k for k in range(2, limit.bit_length())]
    if output_stride not in valid:
        raise ValueError(
            f"output_stride={output_stride} is not reachable with {num_cascaded_blocks} cascaded blocks; "
            f"choose one of {valid}.")
    multi_grid = tuple(multi_grid) if multi_grid else (1, 1, 1)
    if len(multi_grid) != 3:
        raise ValueError(f"multi_grid needs one rate per unit of block4 (3 values), got {multi_grid}.")

    # (name, base depth, units, nominal stride, unit rates). Every block but the last one of the
    # network has stride 2; block4 keeps stride 1 unless cascaded blocks follow it.
    blocks = [
        (f"block{i + 1}", base, n, 2, (1,) * n)
        for i, (base, n) in enumerate(zip(_BASE_DEPTHS[:3], _UNITS[depth][:3]))
    ]
    for i in range(1 + num_cascaded_blocks):
        last = i == num_cascaded_blocks
        blocks.append((f"block{4 + i}", _BASE_DEPTHS[3], 3, 1 if last else 2, multi_grid))

    specs, current_stride, rate = [], _STEM_STRIDE, 1
    for block, base, num_units, stride, unit_rates in blocks:
        for index in range(1, num_units + 1):
            unit_stride = stride if index == num_units else 1
            if current_stride == output_stride:
                # Target reached: the stride becomes an atrous rate for everything after this unit.
                specs.append(UnitSpec(block, index, 4 * base, base, 1, rate * unit_rates[index - 1]))
                rate *= unit_stride
            else:
                if unit_stride > 1 and unit_rates[index - 1] > 1:
                    raise ValueError(
                        f"multi_grid={multi_grid} puts rate {unit_rates[index - 1]} on the strided last unit of "
                        f"{block}: lower output_stride so that {block} is atrous, or drop multi_grid.")
                specs.append(UnitSpec(block, index, 4 * base, base, unit_stride, unit_rates[index - 1]))
                current_stride *= unit_stride
    return specs


@keras.saving.register_keras_serializable(package="deeplab_tf")
class BottleneckUnit(keras.layers.Layer):
    """ResNet v1 bottleneck: 1x1 -> 3x3 (stride, rate) -> 1x1, plus the shortcut, then ReLU.

    The shortcut is a 1x1 projection (conv + BN) where the depth changes and otherwise a stride-s
    subsample of the input, as in TF-slim.

    Args:
        depth: output channels (4 x bottleneck_depth).
        bottleneck_depth: channels of the 1x1 and 3x3 convolutions.
        strides, rate: of the 3x3 convolution.
        **conv_kwargs: BN and weight-decay settings passed to every `ConvBN`.
    """

    def __init__(self, depth, bottleneck_depth, *, strides=1, rate=1, bn_momentum=0.9997, bn_epsilon=1e-5,
                 sync_bn=False, weight_decay=0.0, fine_tune_batch_norm=True, fold_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.depth = depth
        self.bottleneck_depth = bottleneck_depth
        self.strides = strides
        self.rate = rate
        self._conv_kwargs = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, sync_bn=sync_bn,
                                 weight_decay=weight_decay, fine_tune_batch_norm=fine_tune_batch_norm,
                                 fold_batch_norm=fold_batch_norm)
        self.conv1 = ConvBN(bottleneck_depth, 1, name="conv1", **self._conv_kwargs)
        self.conv2 = ConvBN(bottleneck_depth, 3, strides=strides, rate=rate, name="conv2", **self._conv_kwargs)
        self.conv3 = ConvBN(depth, 1, activation=False, name="conv3", **self._conv_kwargs)
        self.shortcut = None

    def build(self, input_shape):
        if input_shape[-1] != self.depth:
            self.shortcut = ConvBN(self.depth, 1, strides=self.strides, activation=False, name="shortcut",
                                   **self._conv_kwargs)
            self.shortcut.build(input_shape)
        self.conv1.build(input_shape)
        shape = self.conv1.compute_output_shape(input_shape)
        self.conv2.build(shape)
        self.conv3.build(self.conv2.compute_output_shape(shape))

    def call(self, inputs, training=None):
        if self.shortcut is not None:
            shortcut = self.shortcut(inputs, training=training)
        elif self.strides > 1:
            # TF-slim's subsample, a 1x1 max pool: oneDNN's pooling and its gradient, where a strided
            # slice and its gradient (a full-size scatter) cost 3% of a bfloat16 training step here.
            shortcut = tf.nn.max_pool2d(inputs, 1, self.strides, "VALID")
        else:
            shortcut = inputs
        residual = self.conv1(inputs, training=training)
        residual = self.conv2(residual, training=training)
        residual = self.conv3(residual, training=training)
        return tf.nn.relu(shortcut + residual)

    def compute_output_shape(self, input_shape):
        return self.conv3.compute_output_shape(self.conv2.compute_output_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(depth=self.depth, bottleneck_depth=self.bottleneck_depth, strides=self.strides,
                      rate=self.rate, **self._conv_kwargs)
        return config


def stem_layers(kind, **conv_kwargs):
    """The root block's convolutions, named as TF-slim scopes.

    'standard': one 7x7/2 conv (`conv1`); 'beta' (the original DeepLab release's resnet_v1_*_beta):
    three 3x3 convs 64/2, 64, 128 (`conv1_1`..`conv1_3`). Both are followed by a 3x3/2 max pool.
    """
    if kind == "standard":
        return [ConvBN(64, 7, strides=2, name="conv1", **conv_kwargs)]
    return [
        ConvBN(64, 3, strides=2, name="conv1_1", **conv_kwargs),
        ConvBN(64, 3, name="conv1_2", **conv_kwargs),
        ConvBN(128, 3, name="conv1_3", **conv_kwargs),
    ]


def resnet_v1_backbone(name="resnet_v1_101", *, output_stride=16, multi_grid=None, num_cascaded_blocks=0,
                       bn_momentum=0.9997, bn_epsilon=1e-5, sync_bn=False, weight_decay=0.0,
                       fine_tune_batch_norm=True, fold_batch_norm=False):
    """Builds an atrous ResNet v1 as a Keras model: 0-255 RGB images -> last feature map.

    The model normalises its inputs as its ImageNet checkpoint expects (`input_normalization`).

    Args:
        name: one of `BACKBONES`.
        output_stride: see `unit_specs`.
        multi_grid: unit rates of block4 and the cascaded blocks (section 3.2), e.g. (1, 2, 4).
        num_cascaded_blocks: replicas of block4 appended as block5..block7.
        bn_momentum, bn_epsilon, sync_bn, fine_tune_batch_norm, fold_batch_norm: BatchNormalization
            settings (`ConvBN`).
        weight_decay: L2 coefficient applied to every convolution kernel.

    Example:
        >>> backbone = resnet_v1_backbone("resnet_v1_50", output_stride=8, multi_grid=(1, 2, 4))
        >>> backbone(tf.zeros([1, 513, 513, 3])).shape  # TensorShape([1, 65, 65, 2048])

    Reference: paper sections 3.1-3.2; TF-slim resnet_v1.
    """
    depth, stem = parse_backbone(name)
    conv_kwargs = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, sync_bn=sync_bn,
                       weight_decay=weight_decay, fine_tune_batch_norm=fine_tune_batch_norm,
                       fold_batch_norm=fold_batch_norm)
    inputs = keras.Input(shape=(None, None, 3), name="images")
    mean, std = input_normalization(name)
    x = NormalizeImages(mean, std, name="normalize_images")(inputs)
    for layer in stem_layers(stem, **conv_kwargs):
        x = layer(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for spec in unit_specs(depth, output_stride=output_stride, multi_grid=multi_grid,
                           num_cascaded_blocks=num_cascaded_blocks):
        x = BottleneckUnit(spec.depth, spec.bottleneck_depth, strides=spec.stride, rate=spec.rate,
                           name=spec.name, **conv_kwargs)(x)
    return keras.Model(inputs, x, name=name)
