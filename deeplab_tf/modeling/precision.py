"""The Keras dtype policy layers are built under."""

import contextlib

import keras

from deeplab_tf.constants import PRECISIONS  # noqa: F401  (re-exported: the policies we offer)


@contextlib.contextmanager
def dtype_policy(name):
    """Builds layers in the block under the Keras dtype policy `name`, then restores the global one.

    Layers keep the policy they were constructed with, so a model built here computes in `name`
    ("mixed_bfloat16": bfloat16 convolutions on float32 weights) after the block has ended.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
