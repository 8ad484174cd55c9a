import json

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.evaluation import metrics

NUM_CLASSES = 5


def numpy_confusion(labels, predictions, num_classes, ignore_label=255):
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for label, prediction in zip(labels.ravel(), predictions.ravel()):
        if label != ignore_label:
            confusion[label, prediction] += 1
    return confusion


def random_maps(seed, shape=(2, 33, 33), num_classes=NUM_CLASSES, ignore_fraction=0.2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, shape).astype(np.int32)
    labels[rng.random(shape) < ignore_fraction] = 255
    predictions = rng.integers(0, num_classes, shape).astype(np.int32)
    return labels, predictions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_equals_numpy_with_ignore_pixels(seed):
    labels, predictions = random_maps(seed)
    confusion = metrics.confusion_matrix(labels, predictions, num_classes=NUM_CLASSES)
    assert confusion.dtype == tf.int64
    np.testing.assert_array_equal(confusion.numpy(), numpy_confusion(labels, predictions, NUM_CLASSES))
    assert confusion.numpy().sum() == np.sum(labels != 255)


def test_confusion_matrix_in_tf_function_with_dynamic_shapes_accumulates():
    spec = tf.TensorSpec([None, None, None], tf.int32)
    compute = tf.function(
        lambda labels, predictions: metrics.confusion_matrix(labels, predictions, num_classes=NUM_CLASSES),
        input_signature=[spec, spec])
    total, expected = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64), 0
    for seed, shape in [(3, (1, 33, 17)), (4, (2, 65, 49))]:
        labels, predictions = random_maps(seed, shape)
        total += compute(labels, predictions).numpy()
        expected = expected + numpy_confusion(labels, predictions, NUM_CLASSES)
    np.testing.assert_array_equal(total, expected)


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        metrics.confusion_matrix(np.array([[0, 7]]), np.array([[0, 1]]), num_classes=NUM_CLASSES)


def numpy_scores(confusion):
    """The textbook definitions, restricted to the classes where they are defined."""
    tp = np.diag(confusion).astype(float)
    gt, pred = confusion.sum(1), confusion.sum(0)
    union = gt + pred - tp
    iou = tp[union > 0] / union[union > 0]
    return {
        "mean_iou": iou.mean(),
        "pixel_accuracy": tp.sum() / confusion.sum(),
        "mean_accuracy": (tp[gt > 0] / gt[gt > 0]).mean(),
        "frequency_weighted_iou": (gt[union > 0] / gt.sum() * iou).sum(),
    }


@pytest.mark.parametrize("seed", [0, 5])
def test_scores_equal_numpy(seed):
    labels, predictions = random_maps(seed)
    result = metrics.segmentation_metrics(numpy_confusion(labels, predictions, NUM_CLASSES))
    for key, value in numpy_scores(numpy_confusion(labels, predictions, NUM_CLASSES)).items():
        assert result[key] == pytest.approx(value, rel=1e-12)
    assert result["num_pixels"] == np.sum(labels != 255)


def test_absent_classes_are_excluded_from_the_means_and_never_nan():
    # Class 0: 3 right + 1 wrong. Class 1: absent from ground truth but predicted once (IoU 0, counted).
    # Class 2: absent from both (undefined, excluded). Class 3: 2 right.
    confusion = np.array([[3, 1, 0, 0],
                          [0, 0, 0, 0],
                          [0, 0, 0, 0],
                          [0, 0, 0, 2]])
    result = metrics.segmentation_metrics(confusion, class_names=["a", "b", "c", "d"])
    ious = [c["iou"] for c in result["per_class"]]
    accuracies = [c["accuracy"] for c in result["per_class"]]
    assert ious == [0.75, 0.0, None, 1.0]
    assert accuracies == [0.75, None, None, 1.0]
    assert result["mean_iou"] == pytest.approx((0.75 + 0.0 + 1.0) / 3)
    assert result["mean_accuracy"] == pytest.approx((0.75 + 1.0) / 2)
    assert result["pixel_accuracy"] == pytest.approx(5 / 6)
    assert result["frequency_weighted_iou"] == pytest.approx(4 / 6 * 0.75 + 2 / 6 * 1.0)
    assert [c["pixels"] for c in result["per_class"]] == [4, 0, 0, 2]
    assert json.loads(metrics.metrics_to_json(result))["per_class"][2]["iou"] is None
    scalars = metrics.summary_scalars(result)
    assert scalars["mean_iou"] == result["mean_iou"] and scalars["iou/b"] == 0.0
    assert "iou/c" not in scalars and "accuracy/b" not in scalars


def test_empty_or_malformed_confusion_is_an_error():
    with pytest.raises(ValueError, match="no labelled pixel"):
        metrics.segmentation_metrics(np.zeros((3, 3), np.int64))
    with pytest.raises(ValueError, match="square"):
        metrics.segmentation_metrics(np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="class names"):
        metrics.segmentation_metrics(np.eye(3, dtype=np.int64), class_names=["a"])


def test_table_and_json():
    confusion = np.array([[3, 1, 0], [0, 0, 0], [1, 0, 5]])
    result = metrics.segmentation_metrics(confusion, class_names=["background", "cat", "person"])
    table = metrics.format_metrics_table(result)
    assert "mIOU" in table and "frequency-weighted IoU" in table
    lines = {line.split()[0]: line for line in table.splitlines()}
    assert "n/a" in lines["cat"] and "0.00" in lines["cat"]  # IoU 0, accuracy undefined
    assert f"{100 * result['mean_iou']:.2f}" in table
    parsed = json.loads(metrics.metrics_to_json(result))
    assert parsed["mean_iou"] == pytest.approx(result["mean_iou"])
    assert [c["name"] for c in parsed["per_class"]] == ["background", "cat", "person"]


# --- the Keras metric --------------------------------------------------------------------------------

def test_keras_mean_iou_streams_the_split_confusion_like_deeplab_eval():
    """Over several batches (one with a class absent from labels and predictions), `MeanIoU` equals
    `segmentation_metrics` of the summed numpy confusion matrix, ignore label and absent class included."""
    from deeplab_tf import MeanIoU

    metric = MeanIoU(num_classes=NUM_CLASSES + 1)  # class 5 never occurs: undefined, left out
    update = tf.function(metric.update_state, reduce_retracing=True)
    confusion = np.zeros((NUM_CLASSES + 1,) * 2, np.int64)
    for seed, shape in ((0, (2, 33, 33)), (1, (1, 21, 17))):
        labels, predictions = random_maps(seed, shape=shape)
        logits = np.eye(NUM_CLASSES + 1, dtype=np.float32)[predictions]  # argmax = predictions
        update(labels[..., np.newaxis], logits)  # Keras' [B, H, W, 1] label layout
        confusion += numpy_confusion(labels, predictions, NUM_CLASSES + 1)
    expected = metrics.segmentation_metrics(confusion)["mean_iou"]
    assert expected == pytest.approx(numpy_scores(confusion)["mean_iou"], rel=1e-12)
    assert float(metric.result()) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(metric.confusion.numpy(), confusion)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_keras_mean_iou_resizes_smaller_logits_to_the_labels():
    from deeplab_tf import MeanIoU
    from deeplab_tf.modeling.layers import resize_bilinear

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, (1, 9, 9)).astype(np.int32)
    logits = rng.normal(size=(1, 3, 3, 3)).astype(np.float32)
    metric = MeanIoU(num_classes=3)
    metric.update_state(labels, logits)
    predictions = np.argmax(resize_bilinear(logits, [9, 9]).numpy(), -1)
    np.testing.assert_array_equal(metric.confusion.numpy(), numpy_confusion(labels, predictions, 3))
    with pytest.raises(ValueError, match="sample weights"):
        metric.update_state(labels, logits, sample_weight=np.ones((1, 9, 9)))
