"""Per-pixel softmax cross-entropy with the ignore label, optional class weights, and top-k hard pixel mining."""

import tensorflow as tf

from deeplab_tf.constants import IGNORE_LABEL
from deeplab_tf.evaluation.metrics import check_label_range


def resize_labels_nearest(labels, size):
    """Nearest-neighbour label resize with corners aligned (Table 8's "downsample the labels")."""
    resized = tf.raw_ops.ResizeNearestNeighbor(images=labels[..., tf.newaxis], size=size, align_corners=True,
                                               half_pixel_centers=False)
    return resized[..., 0]


def pixel_cross_entropy(labels, logits, *, ignore_label=IGNORE_LABEL, class_weights=None):
    """Weighted cross-entropy of every pixel ([N]) and its weight ([N]).

    A pixel's weight is `class_weights[label]` (1 without class weights) and 0 where the label is ignored.

    Args:
        labels: int [B, H, W] class ids or `ignore_label`.
        logits: float [B, H, W, C] at the same resolution as the labels.
        class_weights: None, or C non-negative floats, one per class.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    logits = tf.reshape(tf.cast(logits, tf.float32), [-1, tf.shape(logits)[-1]])
    with tf.control_dependencies([check_label_range(labels, num_classes=tf.shape(logits)[-1],
                                                    ignore_label=ignore_label)]):
        labels = tf.identity(labels)
    valid = tf.not_equal(labels, ignore_label)
    # Ignored pixels get a dummy class 0 and a zero weight, which also zeroes their gradient.
    safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    weights = tf.cast(valid, tf.float32)
    if class_weights is not None:
        weights *= tf.gather(tf.constant(class_weights, tf.float32), safe_labels)
    return losses * weights, weights


def segmentation_loss_terms(labels, logits, *, ignore_label=IGNORE_LABEL, top_k_percent_pixels=1.0,
                            class_weights=None):
    """(sum of the kept pixel losses, the sum of weights it averages over) for one replica's batch.

    The caller divides by the normaliser of the *global* batch, so the loss is the mean over every valid
    pixel whatever the number of replicas. With `top_k_percent_pixels` < 1 only the hardest pixels are
    kept (online hard example mining over the batch), normalised as the original release does
    (research/deeplab/utils/train_utils.py): k = int(fraction x all pixels of the batch, ignored ones
    included, whose loss is 0), and the sum of the k largest losses is divided by the number of non-zero
    losses among them, so ignored pixels never count even when fewer than k pixels are valid.

    With `class_weights` each pixel's loss is multiplied by its class's weight and the normaliser is the
    sum of the kept pixels' weights instead of their number: a weighted mean, so the loss stays a convex
    combination of pixel losses (its scale, hence the learning rate's effect, does not depend on the weights'
    scale), and equal weights give the unweighted loss. Top-k ranks the *weighted* losses.
    """
    if not 0.0 < top_k_percent_pixels <= 1.0:
        raise ValueError(f"top_k_percent_pixels must be in (0, 1], got {top_k_percent_pixels}.")
    losses, weights = pixel_cross_entropy(labels, logits, ignore_label=ignore_label, class_weights=class_weights)
    if top_k_percent_pixels == 1.0:
        return tf.reduce_sum(losses), tf.reduce_sum(weights)
    k = tf.cast(top_k_percent_pixels * tf.cast(tf.size(losses), tf.float32), tf.int32)  # truncates like int()
    hardest, indices = tf.math.top_k(losses, k=k, sorted=False)
    kept_weights = tf.gather(weights, indices) * tf.cast(hardest != 0.0, tf.float32)
    return tf.reduce_sum(hardest), tf.reduce_sum(kept_weights)
