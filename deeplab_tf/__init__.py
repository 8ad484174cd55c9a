"""DeepLabv3 ("Rethinking Atrous Convolution for Semantic Image Segmentation") in Keras 3.

The public API (docs/api.md): build or load a model, train it with Keras' `compile`/`fit`, predict,
evaluate. Names load their module on first use, so `import deeplab_tf` stays cheap (no TensorFlow)
for the command-line tools that only need to parse flags.

Example:
    >>> import deeplab_tf
    >>> model = deeplab_tf.load_model("runs/voc_os16")
    >>> labels = deeplab_tf.segment(model, "photo.jpg")  # [H, W] class ids
"""

import os

from deeplab_tf._keras_registration import register_pending, register_when_keras_loads
from deeplab_tf._lazy import lazy_exports

# TensorFlow's C++ start-up logging drowns the messages users need; callers may override it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_EXPORTS = {
    "DeepLabV3": "modeling.deeplab",
    "load_model": "saving",
    "fold_batch_norm": "modeling.folding",
    "SegmentationLoss": "training.keras_losses",
    "MeanIoU": "evaluation.mean_iou",
    "PolyLearningRate": "training.schedules",
    "MomentumSGD": "training.optimizers",
    "ReleaseMomentum": "training.optimizers",
    "train_dataset": "data.pipeline",
    "eval_dataset": "data.pipeline",
    "image_label_pairs": "data.keras_inputs",
    "predict": "evaluation.inference",
    "segment": "evaluation.segment",
    "evaluate": "evaluation.evaluator",
}

__all__ = sorted(_EXPORTS)

_lazy_getattr, __dir__ = lazy_exports(__name__, _EXPORTS, quiet_tensorflow=True)


def __getattr__(name):
    value = _lazy_getattr(name)
    register_pending()
    return value


# keras.saving.load_model finds our classes once Keras loads (not before: --help stays free of TensorFlow).
register_when_keras_loads()
