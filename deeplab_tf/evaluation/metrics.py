"""Segmentation metrics from a streaming confusion matrix (mIOU as the paper reports it).

The confusion matrix is computed per batch (and per replica) in TensorFlow, summed over the whole
split, and only then turned into scores in numpy: mIOU over a split is *not* the mean of per-image
mIOUs.

Rule for classes that never occur: a class absent from both the ground truth and the predictions of
the whole split has an undefined IoU (0 / 0). Its IoU is reported as ``None`` and it is left out of
the mIOU, exactly as `tf.metrics.mean_iou` (used by the original release) does. A class predicted
but absent from the ground truth has IoU 0 and counts. Per-class accuracy (recall) is undefined for
a class absent from the ground truth and likewise left out of the mean accuracy. The means are
therefore never NaN; an evaluation with no labelled pixel at all is an error.
"""

import json

import numpy as np
import tensorflow as tf

from deeplab_tf.constants import IGNORE_LABEL


def check_label_range(labels, *, num_classes, ignore_label=IGNORE_LABEL):
    """An op that fails, naming a few of the values, when `labels` hold a value outside [0, num_classes) other
    than `ignore_label`.

    Without it a negative label silently drops out of the confusion matrix (a negative segment id) and the loss
    on a GPU turns NaN; on a CPU the loss fails with an error that names neither the ignore label nor the fix.
    """
    labels = tf.reshape(labels, [-1])
    outside = tf.logical_and(tf.not_equal(labels, tf.cast(ignore_label, labels.dtype)),
                             tf.logical_or(labels < 0, labels >= tf.cast(num_classes, labels.dtype)))
    message = tf.strings.format(
        f"labels hold values outside [0, {{}}) other than the ignore label {ignore_label} ({{}}); check the "
        "dataset's num_classes and its label maps", (num_classes, tf.unique(tf.boolean_mask(labels, outside))[0]),
        summarize=10)
    return tf.debugging.Assert(tf.logical_not(tf.reduce_any(outside)), [message])


def confusion_matrix(labels, predictions, *, num_classes, ignore_label=IGNORE_LABEL):
    """Counts of (ground truth, prediction) pairs over the labelled pixels: int64 [C, C].

    Rows are ground-truth classes, columns predicted classes. Pixels labelled `ignore_label` are
    skipped. Static shapes only (no boolean masking), so it runs inside `tf.function`, per replica
    and under XLA.

    Args:
        labels: int tensor of any shape, values in [0, num_classes) or `ignore_label`.
        predictions: int tensor of the same shape, values in [0, num_classes).
        num_classes: number of classes C.
        ignore_label: label value excluded from the counts.
    """
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
    valid = tf.not_equal(labels, ignore_label)
    with tf.control_dependencies([check_label_range(labels, num_classes=num_classes, ignore_label=ignore_label)]):
        pairs = tf.where(valid, labels * num_classes + predictions, 0)
    counts = tf.math.unsorted_segment_sum(tf.cast(valid, tf.int64), pairs, num_classes * num_classes)
    return tf.reshape(counts, [num_classes, num_classes])


def _ratio(numerator, denominator):
    """Element-wise numerator / denominator as floats, None where the denominator is 0."""
    return [float(n) / float(d) if d > 0 else None for n, d in zip(numerator, denominator)]


def _mean(values):
    defined = [v for v in values if v is not None]
    return float(np.mean(defined))


def segmentation_metrics(confusion, *, class_names=None):
    """mIOU, pixel accuracy, mean accuracy, frequency-weighted IoU and per-class IoU and accuracy.

    Args:
        confusion: [C, C] counts, rows ground truth, columns prediction (e.g. the sum over a split
            of `confusion_matrix`).
        class_names: optional C names for the per-class entries (default "class_<i>").

    Returns:
        A JSON-safe dict: ``mean_iou``, ``pixel_accuracy``, ``mean_accuracy``,
        ``frequency_weighted_iou`` (floats in [0, 1]), ``num_pixels`` and ``per_class``, a list of
        ``{"name", "iou", "accuracy", "pixels"}`` with ``None`` for undefined values (see the module
        docstring for the rule).

    Raises:
        ValueError: the matrix is not square, `class_names` has the wrong length, or it counts no
            pixel at all.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion matrix must be square [C, C], got shape {confusion.shape}")
    num_classes = confusion.shape[0]
    if class_names is None:
        class_names = [f"class_{i}" for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
    total = int(confusion.sum())
    if total == 0:
        raise ValueError("the confusion matrix is empty: no labelled pixel was evaluated "
                         "(is every label the ignore label, or the split empty?)")

    true_positives = np.diag(confusion)
    ground_truth = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    iou = _ratio(true_positives, ground_truth + predicted - true_positives)
    accuracy = _ratio(true_positives, ground_truth)
    frequency_weighted_iou = sum(float(n) / total * v for n, v in zip(ground_truth, iou) if n > 0)
    return {
        "mean_iou": _mean(iou),
        "pixel_accuracy": float(true_positives.sum()) / total,
        "mean_accuracy": _mean(accuracy),
        "frequency_weighted_iou": frequency_weighted_iou,
        "num_pixels": total,
        "per_class": [
            {"name": str(name), "iou": class_iou, "accuracy": class_accuracy, "pixels": int(pixels)}
            for name, class_iou, class_accuracy, pixels in zip(class_names, iou, accuracy, ground_truth)
        ],
    }


def mean_iou(confusion):
    """`segmentation_metrics(confusion)["mean_iou"]` as a float64 TensorFlow scalar, same rule for
    absent classes, computable inside `tf.function` (the Keras `MeanIoU` metric's result); 0 for an
    empty matrix instead of an error, since Keras reads results before the first update."""
    confusion = tf.cast(confusion, tf.float64)
    true_positives = tf.linalg.diag_part(confusion)
    union = tf.reduce_sum(confusion, axis=0) + tf.reduce_sum(confusion, axis=1) - true_positives
    defined = tf.cast(union > 0, tf.float64)
    return tf.math.divide_no_nan(tf.reduce_sum(tf.math.divide_no_nan(true_positives, union)),
                                 tf.reduce_sum(defined))


def format_metrics_table(metrics):
    """A per-class table (IoU, accuracy, ground-truth pixels) and the summary scores, in percent."""

    def percent(value):
        return "     n/a" if value is None else f"{100.0 * value:8.2f}"

    width = max([len("class")] + [len(c["name"]) for c in metrics["per_class"]])
    lines = [f"{'class':<{width}}  {'IoU':>8}  {'accuracy':>8}  {'pixels':>12}"]
    lines.append("-" * len(lines[0]))
    for entry in metrics["per_class"]:
        lines.append(f"{entry['name']:<{width}}  {percent(entry['iou'])}  "
                     f"{percent(entry['accuracy'])}  {entry['pixels']:>12d}")
    lines.append("-" * len(lines[0]))
    for key, title in (("mean_iou", "mIOU"), ("pixel_accuracy", "pixel accuracy"),
                       ("mean_accuracy", "mean accuracy"),
                       ("frequency_weighted_iou", "frequency-weighted IoU")):
        lines.append(f"{title:<24}{percent(metrics[key])}")
    return "\n".join(lines)


def summary_scalars(metrics):
    """Flat {tag: value} for TensorBoard: the four scores and each defined per-class IoU/accuracy."""
    scalars = {key: metrics[key] for key in
               ("mean_iou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou")}
    for entry in metrics["per_class"]:
        for key in ("iou", "accuracy"):
            if entry[key] is not None:
                scalars[f"{key}/{entry['name']}"] = entry[key]
    return scalars


def metrics_to_json(metrics, *, indent=2):
    """The metrics as strict JSON text (undefined per-class values become null, never NaN)."""
    return json.dumps(metrics, indent=indent, allow_nan=False)
