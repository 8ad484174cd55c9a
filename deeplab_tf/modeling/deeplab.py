"""The DeepLabv3 model: atrous ResNet + (ASPP | cascaded blocks) + logits, upsampled to the input."""

import keras

from deeplab_tf.modeling.aspp import ASPP, default_atrous_rates
from deeplab_tf.modeling.layers import AtrousConv2D, ResizeLike
from deeplab_tf.modeling.resnet import resnet_v1_backbone

HEADS = ("aspp", "cascade")
BIAS_GRADIENT_MULTIPLIER = 2.0


@keras.saving.register_keras_serializable(package="deeplab_tf")
class DeepLabV3(keras.Model):
    """DeepLabv3 for semantic segmentation.

    Takes float RGB images in 0..255 of any size ([batch, H, W, 3]; normalised inside as the backbone's
    checkpoint expects) and returns float32 logits [batch, H, W, num_classes], upsampled bilinearly from the
    `output_stride` feature map. The variables do not depend on `output_stride`, `multi_grid` rates or
    `atrous_rates`, so weights trained at one output stride load into the model built at another
    (train at 16, evaluate at 8: the paper's protocol).

    Args:
        num_classes: number of output classes (21 for PASCAL VOC, 19 for Cityscapes).
        backbone: "resnet_v1_50", "resnet_v1_101" or their "_beta" variants.
        output_stride: input / feature resolution ratio (8, 16, 32; up to 256 with cascaded blocks).
        multi_grid: unit rates of block4 and the cascaded blocks, e.g. (1, 2, 4) (section 3.2).
        num_cascaded_blocks: 0-3 replicas of block4 (block5..block7, section 3.2).
        head: "aspp" (section 3.3) or "cascade" (logits right on the last block, section 3.2).
        atrous_rates: ASPP rates; None derives (6, 12, 18) x 16 / output_stride.
        image_pooling: add ASPP's image-level branch.
        aspp_filters: channels of every ASPP branch (256).
        dropout_rate: dropout after the ASPP projection while training.
        bn_momentum, bn_epsilon: BatchNormalization settings (the paper's decay is 0.9997).
        sync_bn: cross-replica BatchNormalization under a multi-device strategy.
        fine_tune_batch_norm: train with batch statistics and update BN's moving averages; False
            freezes them (the paper's second stage, section 4.3) while gamma/beta still train.
        fold_batch_norm: build the inference form, with no batch norm and a bias per convolution
            (`deeplab_tf.modeling.folding.fold_batch_norm` makes it from a trained model).
        weight_decay: L2 coefficient (TF-slim convention, wd * sum(w^2) / 2) on every kernel; the
            terms are in `model.losses`.

    Example:
        >>> model = DeepLabV3(num_classes=21, backbone="resnet_v1_101", output_stride=16,
        ...                   multi_grid=(1, 2, 4))
        >>> model(tf.zeros([1, 513, 513, 3])).shape  # TensorShape([1, 513, 513, 21])

    Reference: Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017.
    """

    def __init__(self, num_classes, *, backbone="resnet_v1_101", output_stride=16, multi_grid=None,
                 num_cascaded_blocks=0, head="aspp", atrous_rates=None, image_pooling=True, aspp_filters=256,
                 dropout_rate=0.1, bn_momentum=0.9997, bn_epsilon=1e-5, sync_bn=False, weight_decay=0.0,
                 fine_tune_batch_norm=True, fold_batch_norm=False, **kwargs):
        if head not in HEADS:
            raise ValueError(f"Unknown head {head!r}; choose one of {', '.join(HEADS)}.")
        bn_kwargs = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, sync_bn=sync_bn,
                         fine_tune_batch_norm=fine_tune_batch_norm, fold_batch_norm=fold_batch_norm)
        backbone_model = resnet_v1_backbone(
            backbone, output_stride=output_stride, multi_grid=multi_grid,
            num_cascaded_blocks=num_cascaded_blocks, weight_decay=weight_decay, **bn_kwargs)
        images = keras.Input(shape=(None, None, 3), name="images")
        features = backbone_model(images)
        resolved_rates = None
        if head == "aspp":
            resolved_rates = tuple(atrous_rates) if atrous_rates else default_atrous_rates(output_stride)
            features = ASPP(resolved_rates, filters=aspp_filters, image_pooling=image_pooling,
                            dropout_rate=dropout_rate, weight_decay=weight_decay, name="aspp",
                            **bn_kwargs)(features)
        # Logits and the upsampled output stay float32 under mixed precision. The paper does not give the
        # initialisers; the release's: truncated normal (stddev 0.01) kernel, zero bias (AtrousConv2D's).
        # The release also doubles the gradient of every `biases` variable (utils/train_utils.py,
        # get_model_gradient_multipliers); only this layer has one (batch norm's beta is not one).
        logits = AtrousConv2D(
            num_classes, 1, use_bias=True, name="logits", dtype="float32",
            bias_gradient_multiplier=BIAS_GRADIENT_MULTIPLIER,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
            kernel_regularizer=keras.regularizers.L2(weight_decay / 2) if weight_decay else None,
        )(features)
        outputs = ResizeLike(name="upsample", dtype="float32")(logits, images)
        super().__init__(inputs=images, outputs=outputs, name=kwargs.pop("name", "deeplab_v3"), **kwargs)

        self.backbone = backbone_model
        self.num_classes = num_classes
        self.backbone_name = backbone
        self.output_stride = output_stride
        self.multi_grid = tuple(multi_grid) if multi_grid else None
        self.num_cascaded_blocks = num_cascaded_blocks
        self.head = head
        self.atrous_rates = tuple(atrous_rates) if atrous_rates else None
        self.resolved_atrous_rates = resolved_rates
        self.image_pooling = image_pooling
        self.aspp_filters = aspp_filters
        self.dropout_rate = dropout_rate
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.sync_bn = sync_bn
        self.weight_decay = weight_decay
        self.fine_tune_batch_norm = fine_tune_batch_norm
        self.fold_batch_norm = fold_batch_norm

    def get_config(self):
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            "output_stride": self.output_stride,
            "multi_grid": self.multi_grid,
            "num_cascaded_blocks": self.num_cascaded_blocks,
            "head": self.head,
            "atrous_rates": self.atrous_rates,
            "image_pooling": self.image_pooling,
            "aspp_filters": self.aspp_filters,
            "dropout_rate": self.dropout_rate,
            "bn_momentum": self.bn_momentum,
            "bn_epsilon": self.bn_epsilon,
            "sync_bn": self.sync_bn,
            "weight_decay": self.weight_decay,
            "fine_tune_batch_norm": self.fine_tune_batch_norm,
            "fold_batch_norm": self.fold_batch_norm,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
