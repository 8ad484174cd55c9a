"""Atrous Spatial Pyramid Pooling with image-level features (paper section 3.3, Fig. 5)."""

import keras
import tensorflow as tf

from deeplab_tf.modeling.layers import ConvBN

# ASPP rates of the paper at output stride 16; they scale with 16 / output_stride.
RATES_AT_OUTPUT_STRIDE_16 = (6, 12, 18)
# The paper does not say; the original release builds ASPP with TF-slim's conv2d and no initializer in its
# arg scope, so slim's default (Xavier/Glorot uniform) initialises every ASPP convolution.
KERNEL_INITIALIZER = "glorot_uniform"


def default_atrous_rates(output_stride, rates_at_16=RATES_AT_OUTPUT_STRIDE_16):
    """(6, 12, 18) at output stride 16, doubled at 8, halved at 32 (section 3.3)."""
    scaled = [r * 16 / output_stride for r in rates_at_16]
    if any(r < 1 or r != int(r) for r in scaled):
        raise ValueError(
            f"ASPP rates {rates_at_16} at output stride 16 do not scale to integers at output_stride="
            f"{output_stride}; give atrous_rates explicitly.")
    return tuple(int(r) for r in scaled)


@keras.saving.register_keras_serializable(package="deeplab_tf")
class ASPP(keras.layers.Layer):
    """ASPP: one 1x1 conv, one 3x3 atrous conv per rate, and image pooling, concatenated and projected.

    Every branch has `filters` channels with BN and ReLU; the image-level branch is global average
    pooling -> 1x1 conv -> BN -> ReLU, upsampled to the feature map (a 1x1 map upsampled bilinearly is
    a broadcast, so it is broadcast). The concatenation goes through a 1x1 conv + BN + ReLU
    (`projection`) and dropout during training, as in the original release.

    Args:
        atrous_rates: rates of the 3x3 branches, e.g. (6, 12, 18) at output stride 16, or
            (6, 12, 18, 24) for Table 5's extra branch.
        filters: channels of every branch and of the projection (256).
        image_pooling: add the image-level features branch.
        dropout_rate: dropout after the projection during training (0.1 in the original release).
        bn_momentum, bn_epsilon, sync_bn, weight_decay, fine_tune_batch_norm, fold_batch_norm: see
            `ConvBN`.

    Reference: paper section 3.3.
    """

    def __init__(self, atrous_rates=RATES_AT_OUTPUT_STRIDE_16, *, filters=256, image_pooling=True,
                 dropout_rate=0.1, bn_momentum=0.9997, bn_epsilon=1e-5, sync_bn=False, weight_decay=0.0,
                 fine_tune_batch_norm=True, fold_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.atrous_rates = tuple(atrous_rates)
        self.filters = filters
        self.image_pooling = image_pooling
        self.dropout_rate = dropout_rate
        self._conv_kwargs = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, sync_bn=sync_bn,
                                 weight_decay=weight_decay, fine_tune_batch_norm=fine_tune_batch_norm,
                                 fold_batch_norm=fold_batch_norm)
        conv_kwargs = dict(self._conv_kwargs, kernel_initializer=KERNEL_INITIALIZER)
        # One attribute per branch: TF checkpoints track attributes, not Keras' tracked lists.
        for i, rate in enumerate((1,) + self.atrous_rates):
            setattr(self, f"aspp{i}", ConvBN(filters, 1 if i == 0 else 3, rate=rate, name=f"aspp{i}", **conv_kwargs))
        self.pooling_conv = ConvBN(filters, 1, name="image_pooling", **conv_kwargs) if image_pooling else None
        self.projection = ConvBN(filters, 1, name="projection", **conv_kwargs)
        self.dropout = keras.layers.Dropout(dropout_rate, name="dropout")

    @property
    def branches(self):
        """The 1x1 branch and the atrous 3x3 branches, in order."""
        return [getattr(self, f"aspp{i}") for i in range(len(self.atrous_rates) + 1)]

    def build(self, input_shape):
        for branch in self.branches:
            branch.build(input_shape)
        if self.pooling_conv is not None:
            self.pooling_conv.build((input_shape[0], 1, 1, input_shape[-1]))
        num_branches = len(self.branches) + (1 if self.image_pooling else 0)
        self.projection.build(input_shape[:-1] + (num_branches * self.filters,))

    def call(self, features, training=None):
        outputs = [branch(features, training=training) for branch in self.branches]
        if self.pooling_conv is not None:
            pooled = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
            pooled = self.pooling_conv(pooled, training=training)
            outputs.append(tf.broadcast_to(pooled, tf.shape(outputs[0])))
        projected = self.projection(tf.concat(outputs, axis=-1), training=training)
        return self.dropout(projected, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape[:-1] + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(atrous_rates=self.atrous_rates, filters=self.filters, image_pooling=self.image_pooling,
                      dropout_rate=self.dropout_rate, **self._conv_kwargs)
        return config
