"""`SegmentationLoss`: the training step's per-pixel cross-entropy as a Keras loss, for `model.compile`."""

import keras
import tensorflow as tf

from deeplab_tf.constants import IGNORE_LABEL
from deeplab_tf.evaluation.mean_iou import check_class_count, labels_and_logits
from deeplab_tf.modeling.layers import resize_bilinear
from deeplab_tf.training.class_weights import check_class_weights
from deeplab_tf.training.losses import resize_labels_nearest, segmentation_loss_terms


@keras.saving.register_keras_serializable(package="deeplab_tf")
class SegmentationLoss(keras.losses.Loss):
    """Softmax cross-entropy averaged over the labelled pixels of the batch, as deeplab-train computes it.

    Pixels labelled `ignore_label` add nothing to the loss or its gradient. Logits of another size than
    the labels are compared as the paper's Table 8 does: `upsample_logits=True` resizes the logits
    bilinearly to the labels (the paper's choice), False resizes the labels (nearest neighbour) to the
    logits, e.g. with a model returning logits at the output stride:
    ``keras.Model(model.inputs, model.get_layer("logits").output)``. A `DeepLabV3` already returns logits
    at its input size, so both are the same there. With `top_k_percent_pixels` < 1 only the hardest
    pixels count, and `class_weights` weights each pixel by its class, the loss becoming a weighted mean
    (`deeplab_tf.training.losses.segmentation_loss_terms`). Weight decay is not part of
    it: the model carries it in `model.losses`, which `fit` adds.

    Under a multi-replica strategy Keras averages the replicas' losses, which equals deeplab-train's
    mean over the global batch only when every replica has as many labelled pixels.

    Args:
        ignore_label: label value left out.
        top_k_percent_pixels: fraction of pixels kept by hard pixel mining (1.0 keeps all).
        upsample_logits: see above.
        class_weights: None (unweighted, as the paper) or one non-negative float per class of the logits
            (another count is refused at the first call), e.g. the `weights` of a workdir's class_weights.json.

    Example:
        >>> model = DeepLabV3(num_classes=21, backbone="resnet_v1_50", weight_decay=1e-4)
        >>> model.compile(optimizer=keras.optimizers.SGD(PolyLearningRate(0.007, 30000), momentum=0.9),
        ...               loss=SegmentationLoss(), metrics=[MeanIoU(num_classes=21)])
    """

    def __init__(self, *, ignore_label=IGNORE_LABEL, top_k_percent_pixels=1.0, upsample_logits=True,
                 class_weights=None, name="segmentation_loss", **kwargs):
        if not 0.0 < top_k_percent_pixels <= 1.0:
            raise ValueError(f"top_k_percent_pixels must be in (0, 1], got {top_k_percent_pixels}.")
        if class_weights is not None:
            class_weights = check_class_weights(class_weights, "class_weights")
        super().__init__(name=name, **kwargs)
        self.ignore_label = ignore_label
        self.top_k_percent_pixels = top_k_percent_pixels
        self.upsample_logits = upsample_logits
        self.class_weights = class_weights

    def call(self, y_true, y_pred):
        labels, logits = labels_and_logits(y_true, y_pred)
        if self.class_weights is not None:
            check_class_count(logits, len(self.class_weights), f"SegmentationLoss got {len(self.class_weights)} "
                              "class_weights for logits of {classes} classes: give one weight per class.")
        # Resizing to the same size with corners aligned is the identity, so no branch on the sizes.
        if self.upsample_logits:
            logits = resize_bilinear(logits, tf.shape(labels)[1:3])
        else:
            labels = resize_labels_nearest(labels, tf.shape(logits)[1:3])
        loss_sum, num_pixels = segmentation_loss_terms(labels, logits, ignore_label=self.ignore_label,
                                                       top_k_percent_pixels=self.top_k_percent_pixels,
                                                       class_weights=self.class_weights)
        # A scalar: Keras' reduction of one value leaves it as it is.
        return loss_sum / tf.maximum(num_pixels, 1.0)

    def get_config(self):
        return {**super().get_config(), "ignore_label": self.ignore_label,
                "top_k_percent_pixels": self.top_k_percent_pixels, "upsample_logits": self.upsample_logits,
                "class_weights": None if self.class_weights is None else list(self.class_weights)}
