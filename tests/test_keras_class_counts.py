"""MeanIoU and SegmentationLoss refuse a class count that does not fit the logits, in one line, before
anything is computed: eagerly, and when `fit` traces its step; and labels outside the classes (other than the
ignore label) with a message naming the values, where a negative label dropped out of the mIOU unsaid."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import deeplab_tf

LABELS = np.array([[[0, 1], [5, 255]]], np.int32)  # [1, 2, 2]
LOGITS = np.zeros((1, 2, 2, 6), np.float32)  # six classes
METRIC_MESSAGE = r"^MeanIoU\(num_classes=21\) got logits of 6 classes: give num_classes=6, the model's class count\.$"
LOSS_MESSAGE = r"^SegmentationLoss got {} class_weights for logits of 6 classes: give one weight per class\.$"


def test_mean_iou_refuses_another_class_count_at_the_first_update():
    with pytest.raises(ValueError, match=METRIC_MESSAGE):
        deeplab_tf.MeanIoU(num_classes=21).update_state(LABELS, LOGITS)
    metric = deeplab_tf.MeanIoU(num_classes=6)
    metric.update_state(LABELS, LOGITS)  # every pixel predicted 0: IoU 1/3, 0, 0 for classes 0, 1, 5
    assert float(metric.result()) == pytest.approx(1 / 9)


@pytest.mark.parametrize("count", [5, 7, 21])
def test_segmentation_loss_refuses_too_few_or_too_many_class_weights(count):
    with pytest.raises(ValueError, match=LOSS_MESSAGE.format(count)):
        deeplab_tf.SegmentationLoss(class_weights=[1.0] * count)(LABELS, LOGITS)
    loss = deeplab_tf.SegmentationLoss(class_weights=[1.0] * 6)(LABELS, LOGITS)
    assert float(loss) == pytest.approx(np.log(6), rel=1e-6)  # equal logits: log C per labelled pixel


@pytest.mark.parametrize("metric, loss, message", [
    (deeplab_tf.MeanIoU(num_classes=21), deeplab_tf.SegmentationLoss(), METRIC_MESSAGE),
    (deeplab_tf.MeanIoU(num_classes=6), deeplab_tf.SegmentationLoss(class_weights=[1.0] * 21),
     LOSS_MESSAGE.format(21)),
])
def test_fit_stops_with_the_message_when_it_traces_the_step(metric, loss, message):
    model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Conv2D(6, 1)])
    model.compile(optimizer="sgd", loss=loss, metrics=[metric])
    images = np.zeros((1, 2, 2, 3), np.float32)
    with pytest.raises(ValueError, match=message):
        model.fit(images, LABELS, epochs=1, verbose=0)


def _outside(values, classes=6):
    return (rf"labels hold values outside \[0, {classes}\) other than the ignore label 255 \({values}\); check the "
            r"dataset\\?'s num_classes and its label maps")  # a graph error prints it as dataset\'s


@pytest.mark.parametrize("label, shown", [(-1, r"\[-1\]"), (6, r"\[6\]"), (200, r"\[200\]")])
def test_labels_outside_the_classes_are_refused_naming_the_values(label, shown):
    labels = LABELS.copy()
    labels[0, 1, 0] = label  # the 5 becomes the bad value; 0, 1 and 255 stay
    with pytest.raises(tf.errors.InvalidArgumentError, match=_outside(shown)):
        deeplab_tf.MeanIoU(num_classes=6).update_state(labels, LOGITS)
    with pytest.raises(tf.errors.InvalidArgumentError, match=_outside(shown)):
        deeplab_tf.SegmentationLoss()(labels, LOGITS)
    # Another ignore label: 255 is then a class value outside [0, 6) and is named too.
    with pytest.raises(tf.errors.InvalidArgumentError, match=_outside(r"\[255\]").replace("label 255", "label 6")):
        deeplab_tf.MeanIoU(num_classes=6, ignore_label=6).update_state(LABELS, LOGITS)


def test_fit_on_labels_outside_the_classes_ends_with_the_message():
    """In `fit` the check runs inside Keras' traced step, so TensorFlow's graph error carries it: its last line
    names the values and what to check (no NaN loss on a GPU, no silently dropped pixels in the mIOU)."""
    model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Conv2D(6, 1)])
    model.compile(optimizer="sgd", loss=deeplab_tf.SegmentationLoss(), metrics=[deeplab_tf.MeanIoU(num_classes=6)])
    labels = LABELS.copy()
    labels[0, 0, 1] = 7
    with pytest.raises(tf.errors.InvalidArgumentError, match=_outside(r"\[7\]")):
        model.fit(np.zeros((1, 2, 2, 3), np.float32), labels, epochs=1, verbose=0)
