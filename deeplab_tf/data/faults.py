"""Naming the record behind an input-pipeline error.

Training reads several shards at once, shuffled, and TensorFlow's errors (`DataLossError: truncated
record`, a decode failure, a label outside the classes in the loss) do not say which file they came from.
After such an error `find_faulty_record` reads the matched shards again one by one and checks each record
as the pipeline uses it, so the user learns which shard and what to do.
"""

import re

import tensorflow as tf

from deeplab_tf.data import tfrecord
from deeplab_tf.data.pipeline import list_files

_SHOWN_VALUES = 10


def op_error_summary(error):
    """The part of a TensorFlow op error a user can act on: an assertion's own message, else the
    first line of the message that is not graph traceback."""
    assertion = re.search(r"assertion failed: \[(.*?)\] \[", error.message, re.DOTALL)
    if assertion:
        return assertion.group(1).replace("\\'", "'")
    lines = [line for line in error.message.splitlines() if line.strip() and not line.startswith(
        ("Graph execution error", "Detected at node", " ", "\t"))]
    return lines[0] if lines else error.message


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _decoded(serialized):
    """(filename, image [H, W], label [H, W], the label's distinct values) of one serialized record."""
    example = tfrecord.parse_example(serialized)
    values, _ = tf.unique(tf.reshape(example["label"], [-1]))
    return example["filename"], tf.shape(example["image"])[:2], tf.shape(example["label"]), values


def _record_fault(serialized, *, num_classes, ignore_label):
    """What is wrong with one record as training uses it, or None."""
    try:
        filename, image_size, label_size, values = (t.numpy() for t in _decoded(serialized))
    except tf.errors.OpError as error:
        return f"cannot be decoded ({op_error_summary(error)}): convert the dataset again", None
    name = filename.decode("utf-8", "replace")
    bad = sorted(int(v) for v in values if v >= num_classes and v != ignore_label)
    if bad:
        shown = ", ".join(map(str, bad[:_SHOWN_VALUES])) + (", ..." if len(bad) > _SHOWN_VALUES else "")
        return (f"has label values {{{shown}}} outside [0, {num_classes}) other than the ignore label "
                f"{ignore_label}: set config.dataset.num_classes (or config.dataset.name) to the dataset the "
                f"records were converted for, or fix the masks' label maps and convert again"), name
    if tuple(image_size) != tuple(label_size):
        return (f"has an image of {tuple(image_size)} but a label of {tuple(label_size)}: convert the dataset "
                f"again (the converters check sizes)"), name
    return None, name


def find_faulty_record(file_pattern, *, num_classes, ignore_label):
    """Reads every TFRecord file matching `file_pattern` (a glob or list of globs) alone and checks each
    record: readable, decodable, labels in [0, num_classes) or `ignore_label`, image and label sizes equal.

    Returns:
        A one-line message naming the first faulty shard, record and fix, or None if all are sound.
    """
    for path in list_files(file_pattern):
        index = 0
        try:
            for serialized in tf.data.TFRecordDataset(path):
                fault, name = _record_fault(serialized, num_classes=num_classes, ignore_label=ignore_label)
                if fault:
                    return f"{path}: record {index}{f' ({name})' if name else ''} {fault}."
                index += 1
        except tf.errors.OpError as error:
            return (f"{path}: record {index} cannot be read ({op_error_summary(error)}); the shard is truncated "
                    f"or corrupt (a copy or conversion that did not finish): copy or convert it again.")
    return None
