"""The segmentation loss: the training step's terms and the Keras `SegmentationLoss`, against numpy."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.training import losses


def _numpy_pixel_losses(labels, logits, ignore_label=255):
    """Cross-entropy of every pixel in float64, 0 where the label is ignored."""
    labels = labels.reshape(-1)
    logits = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    valid = labels != ignore_label
    picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[:, None], -1)[:, 0]
    return np.where(valid, -picked, 0.0)


def _release_top_k_loss(labels, logits, fraction):
    """The original release's hard pixel mining: k = int(fraction * all pixels), sum of the k largest
    losses over the number of non-zero ones among them (0 when there is none)."""
    pixel_losses = _numpy_pixel_losses(labels, logits)
    k = int(fraction * pixel_losses.size)
    hardest = np.sort(pixel_losses)[::-1][:k]
    present = np.count_nonzero(hardest)
    return hardest.sum() / present if present else 0.0


@pytest.mark.parametrize("fraction, ignored_rows", [(0.25, 1), (0.5, 0), (0.7, 4), (0.05, 5)])
def test_top_k_matches_release_normaliser(fraction, ignored_rows):
    rng = np.random.default_rng(ignored_rows)
    labels = rng.integers(0, 5, (2, 5, 6)).astype(np.int32)
    labels[:, :ignored_rows] = 255  # with 4 of 5 rows ignored, fewer than k pixels are valid at 0.7
    logits = rng.normal(size=(2, 5, 6, 5)).astype(np.float32) * 3
    loss_sum, count = losses.segmentation_loss_terms(labels, logits, top_k_percent_pixels=fraction)
    loss = float(loss_sum) / max(float(count), 1.0)  # the training step's normalisation
    assert loss == pytest.approx(_release_top_k_loss(labels, logits, fraction), rel=1e-5, abs=1e-7)


def test_top_k_with_no_valid_pixel_is_zero_not_nan():
    labels = np.full((1, 4, 4), 255, np.int32)
    logits = np.random.default_rng(0).normal(size=(1, 4, 4, 3)).astype(np.float32)
    loss_sum, count = losses.segmentation_loss_terms(labels, logits, top_k_percent_pixels=0.5)
    assert float(loss_sum) == 0.0 and float(count) == 0.0


# --- the Keras loss ----------------------------------------------------------------------------------

def _mean_valid_loss(labels, logits):
    pixel_losses = _numpy_pixel_losses(labels, logits)
    return pixel_losses.sum() / np.count_nonzero(labels != 255)


@pytest.mark.parametrize("label_layout", ["bhw", "bhw1"])
def test_keras_loss_is_the_mean_over_labelled_pixels(label_layout):
    from deeplab_tf import SegmentationLoss

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (2, 7, 9)).astype(np.int32)
    labels[0, :3] = 255
    logits = rng.normal(size=(2, 7, 9, 4)).astype(np.float32) * 2
    y_true = labels[..., np.newaxis] if label_layout == "bhw1" else labels
    loss = SegmentationLoss()(y_true, logits)
    assert float(loss) == pytest.approx(_mean_valid_loss(labels, logits), rel=1e-6)
    top_k = SegmentationLoss(top_k_percent_pixels=0.3)(y_true, logits)
    assert float(top_k) == pytest.approx(_release_top_k_loss(labels, logits, 0.3), rel=1e-6)


def test_keras_loss_upsamples_logits_or_downsamples_labels_as_table_8():
    from deeplab_tf import SegmentationLoss
    from deeplab_tf.modeling.layers import resize_bilinear

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, (1, 9, 9)).astype(np.int32)
    labels[0, 0] = 255
    logits = rng.normal(size=(1, 3, 3, 3)).astype(np.float32)
    upsampled = resize_bilinear(logits, [9, 9]).numpy()
    assert float(SegmentationLoss()(labels, logits)) == pytest.approx(_mean_valid_loss(labels, upsampled), rel=1e-6)
    downsampled = labels[:, ::4, ::4]  # nearest with corners aligned: rows/columns 0, 4, 8 of 9
    assert float(SegmentationLoss(upsample_logits=False)(labels, logits)) == pytest.approx(
        _mean_valid_loss(downsampled, logits), rel=1e-6)


def test_keras_loss_ignored_pixels_get_no_gradient_and_config_round_trips():
    import keras

    from deeplab_tf import SegmentationLoss

    labels = np.array([[[0, 1], [255, 2]]], np.int32)
    logits = tf.Variable(np.random.default_rng(0).normal(size=(1, 2, 2, 3)).astype(np.float32))
    loss_fn = SegmentationLoss(top_k_percent_pixels=0.5, upsample_logits=False)
    with tf.GradientTape() as tape:
        loss = loss_fn(labels, logits)
    gradient = tape.gradient(loss, logits).numpy()
    assert np.all(gradient[0, 1, 0] == 0) and np.any(gradient != 0)
    restored = keras.losses.deserialize(keras.losses.serialize(loss_fn))
    assert isinstance(restored, SegmentationLoss) and restored.get_config() == loss_fn.get_config()
    with pytest.raises(ValueError, match="top_k_percent_pixels"):
        SegmentationLoss(top_k_percent_pixels=0.0)
