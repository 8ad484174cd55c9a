"""Flags and the exit path shared by the dataset converters (thin absl programs)."""

import sys

from absl import app, flags

from deeplab_tf.cli import tensorflow_start  # noqa: F401  (before TensorFlow loads)
from deeplab_tf.data import registry
from deeplab_tf.data.errors import check_output_dir
from deeplab_tf.data.validation import DataError


def define_output_flags(*, num_shards):
    """--output_dir, --num_shards and --skip_bad, the same for every converter."""
    flags.DEFINE_string("output_dir", None,
                        "Folder for the <split>-%05d-of-%05d.tfrecord shards.", required=True)
    flags.DEFINE_integer("num_shards", num_shards,
                         "Shards per split (capped at the number of images).", lower_bound=1)
    flags.DEFINE_boolean("skip_bad", False,
                         "Skip bad images/masks and list them in the report instead of stopping.")


def run_conversion(convert, *, info):
    """Checks --output_dir, runs `convert()` and prints its summary for dataset `info`; a data
    problem ends the program with its one-line message (exit status 1), not a traceback."""
    try:
        check_output_dir(flags.FLAGS.output_dir)
        summary = convert()
    except DataError as e:
        sys.exit(f"error: {e}")
    print(summary.format(class_names=info.class_names, ignore_label=info.ignore_label))


def converter_main(convert, *, dataset):
    """The main(argv) of the converter of registered `dataset`: `convert()` (which reads the flags) under
    `run_conversion`."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        run_conversion(convert, info=registry.get_dataset_info(dataset))

    return main
