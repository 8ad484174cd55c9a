import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_tf.evaluation.valid_weights import valid_weight_counts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("feature_size,kernel_size,rates",
                         [(65, 3, (1, 6, 12, 24, 33, 64, 65, 70)), (17, 5, (1, 3, 9))])
def test_counts_equal_a_dilated_convolution_of_ones(feature_size, kernel_size, rates):
    """Convolving an all-ones map with an all-ones kernel ('SAME' zero padding) counts the valid taps."""
    counts = valid_weight_counts(feature_size=feature_size, kernel_size=kernel_size, rates=rates)
    ones = tf.ones([1, feature_size, feature_size, 1])
    for rate, row in zip(rates, counts):
        valid = tf.nn.conv2d(ones, tf.ones([kernel_size, kernel_size, 1, 1]), 1, "SAME", dilations=rate)
        histogram = np.bincount(np.round(valid.numpy()).astype(int).ravel(), minlength=kernel_size ** 2 + 1)
        np.testing.assert_allclose(row, histogram / feature_size ** 2)


def test_fig4_claims():
    counts = valid_weight_counts()  # 3 x 3 filter on 65 x 65, rates 1..65
    assert counts.shape == (65, 10)
    np.testing.assert_allclose(counts.sum(axis=1), 1.0)
    assert counts[0, 9] == pytest.approx((63 / 65) ** 2)  # rate 1: all 9 weights valid almost everywhere
    assert np.all(np.diff(counts[:33, 9]) < 0) and not counts[32:, 9].any()  # falls to 0 past rate 32
    assert np.all(np.diff(counts[32:, 1]) > 0)  # then only the centre weight survives more and more
    assert counts[64, 1] == 1.0  # rate 65: the 3 x 3 filter is a 1 x 1 filter
    assert counts[:, 4].argmax() + 1 in (32, 33)  # 4 valid (corners of the map) peaks half-way


def test_rejects_even_kernels():
    with pytest.raises(ValueError, match="odd"):
        valid_weight_counts(kernel_size=2)


def test_fig4_program_prints_the_table_and_draws_the_plot(tmp_path):
    output = tmp_path / "fig4.png"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.fig4_valid_weights", f"--output={output}", "--max_rate=70"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["rate", "1", "valid", "2", "valid", "4", "valid", "6", "valid", "9", "valid"]
    assert lines[65].split() == ["65", "1.0000", "0.0000", "0.0000", "0.0000", "0.0000"]
    with Image.open(output) as image:
        assert image.size == (900, 540) and image.mode == "RGB"
        assert len(image.getcolors(maxcolors=1 << 16)) > 3  # curves and text, not a blank canvas
