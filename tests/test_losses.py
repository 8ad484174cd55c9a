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
