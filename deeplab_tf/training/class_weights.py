"""Class weights for the training cross-entropy (`config.train.class_weights`).

Empty (the paper: unweighted), one weight per class, or "inverse_frequency": weights from the pixel counts
of the training records, computed once and stored in `<workdir>/class_weights.json` (counts, formula and
weights), which a resumed run reuses. The formula is scikit-learn's "balanced" class weight per pixel:

    w_c = N / (K * n_c)  for a class with n_c > 0 labelled pixels, 0 for a class absent from the records,

with N the labelled pixels of the records (the ignore label excluded) and K the number of classes present,
so the mean weight of a labelled training pixel is 1. Counts are taken over the records as stored (before
cropping, scaling and bootstrapping).
"""

import json
import math
import os

import numpy as np
import tensorflow as tf

from deeplab_tf.data import faults, tfrecord
from deeplab_tf.data.errors import DataError
from deeplab_tf.data.pipeline import list_files

INVERSE_FREQUENCY = "inverse_frequency"
FILENAME = "class_weights.json"
FORMULA = "w_c = N / (K * n_c) for n_c > 0 (N: labelled pixels, K: classes present), 0 for absent classes"


def check_class_weights(weights, name, num_classes=None):
    """`weights` as a tuple of floats, or ValueError naming `name` when they cannot weight a loss.

    Args:
        weights: a sequence of numbers, one per class.
        name: how the user gave them (a config field or a file), for the message.
        num_classes: the expected length, if known.
    """
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={weights!r}: give one number per class or {INVERSE_FREQUENCY!r}.") from None
    if num_classes is not None and len(values) != num_classes:
        raise ValueError(f"{name} has {len(values)} values for {num_classes} classes: give one weight per class "
                         f"or {INVERSE_FREQUENCY!r}.")
    bad = [i for i, w in enumerate(values) if not (math.isfinite(w) and w >= 0)]
    if bad:
        raise ValueError(f"{name}[{bad[0]}]={values[bad[0]]} is not a finite weight >= 0: fix it (0 leaves the "
                         f"class out of the loss).")
    if not any(values):
        raise ValueError(f"{name} are all 0, so no pixel would count in the loss: give positive weights.")
    return values


def requested_weights(value, num_classes):
    """What `config.train.class_weights` asks for: None (unweighted), INVERSE_FREQUENCY, or a tuple of weights.

    The command line's `--config.train.class_weights=inverse_frequency` arrives as a one-string tuple.
    """
    if isinstance(value, str):
        value = (value,)
    value = tuple(value or ())
    if not value:
        return None
    if any(isinstance(v, str) for v in value):
        if value != (INVERSE_FREQUENCY,):
            raise ValueError(f"config.train.class_weights={value!r}: give one number per class, "
                             f"{INVERSE_FREQUENCY!r}, or nothing for an unweighted loss.")
        return INVERSE_FREQUENCY
    return check_class_weights(value, "config.train.class_weights", num_classes)


def count_class_pixels(file_pattern, *, num_classes, ignore_label):
    """Labelled pixels of each class ([num_classes] int64) over every record of `file_pattern`.

    Raises:
        DataError: a label holds a value outside [0, num_classes) other than `ignore_label` (naming the shard).
    """
    def histogram(serialized):
        label = tf.cast(tfrecord.parse_label(serialized), tf.int32)
        return tf.math.bincount(label, minlength=256, maxlength=256, dtype=tf.int64)  # labels are uint8

    dataset = tf.data.TFRecordDataset(list_files(file_pattern)).map(histogram, num_parallel_calls=tf.data.AUTOTUNE)
    counts = dataset.reduce(tf.zeros([256], tf.int64), lambda total, h: total + h).numpy()
    if 0 <= ignore_label < 256:
        counts[ignore_label] = 0
    if counts[num_classes:].any():
        message = faults.find_faulty_record(file_pattern, num_classes=num_classes, ignore_label=ignore_label)
        raise DataError(message or f"{file_pattern}: labels hold values >= {num_classes} other than the ignore "
                                   f"label {ignore_label}; fix the masks or config.dataset.num_classes.")
    return counts[:num_classes]


def inverse_frequency(counts):
    """The module's inverse-frequency weights (float64 [C]) from per-class pixel counts."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    if not present.any():
        raise DataError("the training records hold no labelled pixel: class weights cannot be computed.")
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def _load(path, num_classes):
    """(weights, the stored dict) of a class_weights.json, or one ValueError naming the file and the fix."""
    try:
        with tf.io.gfile.GFile(path) as f:
            stored = json.load(f)
        return check_class_weights(stored["weights"], "its weights", num_classes), stored
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} cannot be used ({type(error).__name__}: {error}); delete it to recompute the "
                         f"class weights.") from None


def resolve_class_weights(config, workdir, *, num_classes, log=print):
    """The class weights training uses (None: unweighted) for `config`.

    For "inverse_frequency", reuses `<workdir>/class_weights.json` when it exists (a resumed run keeps the
    weights it started with); otherwise counts the pixels of config.dataset.train_pattern and writes it.
    """
    requested = requested_weights(config.train.class_weights, num_classes)
    if requested != INVERSE_FREQUENCY:
        return requested
    path = os.path.join(workdir, FILENAME)
    if tf.io.gfile.exists(path):
        weights, stored = _load(path, num_classes)
        if stored.get("train_pattern") != config.dataset.train_pattern:
            log(f"Note: {path} was computed from {stored.get('train_pattern')!r}, not "
                f"{config.dataset.train_pattern!r}; delete it to recompute.")
        log(f"Class weights (inverse frequency) from {path}.")
        return weights
    log(f"Counting the pixels of each class in {config.dataset.train_pattern} for inverse-frequency weights.")
    patterns = config.dataset.train_pattern.split(",")
    counts = count_class_pixels(patterns, num_classes=num_classes, ignore_label=config.dataset.ignore_label)
    weights = inverse_frequency(counts)
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        json.dump({"method": INVERSE_FREQUENCY, "formula": FORMULA, "train_pattern": config.dataset.train_pattern,
                   "ignore_label": config.dataset.ignore_label, "pixel_counts": counts.tolist(),
                   "labelled_pixels": int(counts.sum()), "weights": weights.tolist()}, f, indent=2)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)  # never a half-written file to reuse
    log(f"Class weights (inverse frequency) written to {path}.")
    return tuple(weights.tolist())
