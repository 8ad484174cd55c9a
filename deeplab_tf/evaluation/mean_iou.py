"""`MeanIoU`: the streaming mIOU of deeplab-eval as a Keras metric, for `model.compile(metrics=...)`."""

import keras
import tensorflow as tf

from deeplab_tf.constants import IGNORE_LABEL
from deeplab_tf.evaluation import metrics
from deeplab_tf.modeling.layers import resize_bilinear


def labels_and_logits(y_true, y_pred):
    """int32 labels [B, H, W] (a trailing channel of 1 dropped) and float32 logits [B, h, w, C]."""
    labels = tf.cast(y_true, tf.int32)
    if labels.shape.rank == 4:
        labels = labels[..., 0]
    return labels, tf.cast(y_pred, tf.float32)


def check_class_count(logits, count, message):
    """ValueError(`message` formatted with the logits' `classes`) when they are not `count`.

    Checked on the static shape, so a mismatch stops the first call or trace with one line instead of a
    silently wrong score or an op error deep inside the graph.
    """
    classes = logits.shape[-1]
    if classes is not None and classes != count:
        raise ValueError(message.format(classes=classes))


@keras.saving.register_keras_serializable(package="deeplab_tf")
class MeanIoU(keras.metrics.Metric):
    """Mean intersection-over-union over everything seen since the last reset, as deeplab-eval scores it.

    One confusion matrix is summed over all batches (and replicas) before the score is computed, so
    the value is the split's mIOU, not a mean of per-batch ones; pixels labelled `ignore_label` are
    left out and classes absent from both labels and predictions are left out of the mean
    (`deeplab_tf.evaluation.metrics`). Logits of another size than the labels (a model returning
    logits at the output stride) are first resized bilinearly to the labels, as inference does.

    Args:
        num_classes: number of classes C of the logits (another count is refused at the first update).
        ignore_label: label value excluded from the counts.

    Example:
        >>> model.compile(optimizer="sgd", loss=SegmentationLoss(), metrics=[MeanIoU(num_classes=21)])
        >>> model.evaluate(image_label_pairs(eval_dataset("voc/val-*")))  # {"mean_iou": ...}
    """

    def __init__(self, num_classes, *, ignore_label=IGNORE_LABEL, name="mean_iou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.confusion = self.add_variable(shape=(num_classes, num_classes), initializer="zeros", dtype="int64",
                                           aggregation="sum", name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("MeanIoU does not take sample weights: label pixels to skip with the ignore label.")
        labels, logits = labels_and_logits(y_true, y_pred)
        check_class_count(logits, self.num_classes, f"MeanIoU(num_classes={self.num_classes}) got logits of "
                          "{classes} classes: give num_classes={classes}, the model's class count.")
        predictions = tf.argmax(resize_bilinear(logits, tf.shape(labels)[1:3]), axis=-1)
        self.confusion.assign_add(metrics.confusion_matrix(
            labels, predictions, num_classes=self.num_classes, ignore_label=self.ignore_label))

    def result(self):
        return metrics.mean_iou(self.confusion)

    def reset_state(self):
        self.confusion.assign(tf.zeros_like(self.confusion))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "ignore_label": self.ignore_label}
