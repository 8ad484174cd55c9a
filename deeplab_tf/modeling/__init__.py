"""Keras 3 layers and models of DeepLabv3."""

from deeplab_tf.modeling.aspp import ASPP, default_atrous_rates
from deeplab_tf.modeling.deeplab import DeepLabV3
from deeplab_tf.modeling.layers import AtrousConv2D, ConvBN
from deeplab_tf.modeling.resnet import BACKBONES, BottleneckUnit, resnet_v1_backbone, unit_specs

__all__ = [
    "ASPP", "AtrousConv2D", "BACKBONES", "BottleneckUnit", "ConvBN", "DeepLabV3", "default_atrous_rates",
    "resnet_v1_backbone", "unit_specs",
]
