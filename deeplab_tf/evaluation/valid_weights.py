"""How many weights of an atrous filter see the feature map rather than padding (paper Fig. 4).

As the atrous rate approaches the feature map size, a 3 x 3 filter applied with 'same' zero padding
has fewer and fewer taps on valid pixels, until only its centre is left and it degenerates to a 1 x 1
filter (section 3.3). This is why ASPP adds image-level features.
"""

import numpy as np


def valid_taps(*, feature_size, kernel_size, rate):
    """Per position of one axis of the feature map, how many of the kernel's taps fall inside it.

    Taps sit at offsets (t - (kernel_size - 1) / 2) * rate, t = 0..kernel_size - 1, around the
    position (symmetric 'same' padding, which an odd kernel size makes exact).
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd for symmetric 'same' padding, got {kernel_size}")
    if rate < 1:
        raise ValueError(f"atrous rates must be >= 1, got {rate}")
    offsets = (np.arange(kernel_size) - (kernel_size - 1) // 2) * rate
    taps = np.arange(feature_size)[:, None] + offsets
    return np.sum((taps >= 0) & (taps < feature_size), axis=1)


def valid_weight_counts(*, feature_size=65, kernel_size=3, rates=None):
    """Normalised counts of valid weights of a square atrous filter on a square feature map.

    A 2-D tap is valid when both its row and its column are, so a position's number of valid weights
    is the product of its row's and its column's `valid_taps`.

    Args:
        feature_size: side of the feature map (65 in Fig. 4: a 513 input at output stride 8).
        kernel_size: side of the filter (odd).
        rates: atrous rates; default 1..feature_size (at rate >= feature_size only the centre is left).

    Returns:
        float64 [len(rates), kernel_size**2 + 1]: entry [i, v] is the fraction of the output positions
        where exactly v weights are valid at rates[i]; each row sums to 1.
    """
    rates = range(1, feature_size + 1) if rates is None else rates
    counts = []
    for rate in rates:
        per_axis = valid_taps(feature_size=feature_size, kernel_size=kernel_size, rate=rate)
        per_position = np.outer(per_axis, per_axis)
        counts.append(np.bincount(per_position.ravel(), minlength=kernel_size ** 2 + 1) / per_position.size)
    return np.array(counts)
