"""DeepLabv3 ("Rethinking Atrous Convolution for Semantic Image Segmentation") in Keras 3."""

import os

# TensorFlow's C++ start-up logging drowns the messages users need; callers may override it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
