"""Datasets as DeepLab trains on them: TFRecord schema, registry, tf.data pipelines."""

from deeplab_tf.data.pipeline import bootstrap, eval_dataset, train_dataset
from deeplab_tf.data.registry import (
    DatasetInfo,
    dataset_info_from_spec,
    get_dataset_info,
    register_dataset,
)
from deeplab_tf.data.tfrecord import make_example, parse_example
from deeplab_tf.data.validation import DataError

__all__ = [
    "DataError", "DatasetInfo", "bootstrap", "dataset_info_from_spec", "eval_dataset",
    "get_dataset_info", "make_example", "parse_example", "register_dataset", "train_dataset",
]
