"""Datasets as DeepLab trains on them: TFRecord schema, registry, tf.data pipelines.

The names below load their module on first use, so that code needing only the registry or the
converters' flags (`datasets/build_*_data.py --help`) does not wait for TensorFlow to import.
"""

import importlib

_EXPORTS = {
    "bootstrap": "pipeline", "eval_dataset": "pipeline", "train_dataset": "pipeline",
    "DatasetInfo": "registry", "dataset_info_from_spec": "registry",
    "get_dataset_info": "registry", "register_dataset": "registry",
    "make_example": "tfrecord", "parse_example": "tfrecord",
    "DataError": "validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
