"""Datasets as DeepLab trains on them: TFRecord schema, registry, tf.data pipelines.

The names below load their module on first use, so that code needing only the registry or the
converters' flags (`datasets/build_*_data.py --help`) does not wait for TensorFlow to import.
"""

from deeplab_tf._lazy import lazy_exports

_EXPORTS = {
    "bootstrap": "pipeline", "eval_dataset": "pipeline", "train_dataset": "pipeline",
    "DatasetInfo": "registry", "dataset_info_from_spec": "registry",
    "get_dataset_info": "registry", "register_dataset": "registry", "dataset_info_for": "registry",
    "make_example": "tfrecord", "parse_example": "tfrecord",
    "DataError": "validation",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
