"""Naming the record behind an input-pipeline error.

Training, evaluation and deeplab-vis read shards through tf.data (training several at once, shuffled),
and TensorFlow's errors (`DataLossError: truncated record`, a decode failure, a label outside the classes in
the loss) do not say which file they came from. After such an error `find_faulty_record` reads the matched
shards again one by one and checks each record as the pipeline uses it, so the user learns which shard and
what to do; `naming_faulty_records` does that around a block that reads them.
"""

import contextlib
import re

import tensorflow as tf

from deeplab_tf.data import tfrecord
from deeplab_tf.data.errors import DataError
from deeplab_tf.data.pipeline import MAX_PARALLEL_FILES, list_files

_SHOWN_VALUES = 10


def op_error_summary(error):
    """The part of a TensorFlow op error a user can act on: an assertion's own message, else the
    first line of the message that is not graph traceback."""
    assertion = re.search(r"assertion failed: \[(.*?)\](?: \[|\s*$|\n)", error.message, re.DOTALL)
    if assertion:
        return assertion.group(1).replace("\\'", "'")
    lines = [line for line in error.message.splitlines() if line.strip() and not line.startswith(
        ("Graph execution error", "Detected at node", " ", "\t"))]
    # Without the traced function's internal name before the message and the op's name after it.
    line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", lines[0] if lines else error.message)
    return re.sub(r"\s*\[Op:\w+\]( name: \S*)?\s*$", "", line)


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
        try:
            name = tfrecord.parse_filename(serialized).numpy().decode("utf-8", "replace") or None
        except tf.errors.OpError:  # not even an Example
            name = None
        return f"cannot be decoded ({op_error_summary(error)}): convert the dataset again", name
    name = filename.decode("utf-8", "replace")
    bad = sorted(int(v) for v in values if num_classes is not None and v >= num_classes and v != ignore_label)
    if bad:
        shown = ", ".join(map(str, bad[:_SHOWN_VALUES])) + (", ..." if len(bad) > _SHOWN_VALUES else "")
        return (f"has label values {{{shown}}} outside [0, {num_classes}) other than the ignore label "
                f"{ignore_label}: set config.dataset.num_classes (or config.dataset.name) to the dataset the "
                f"records were converted for, or fix the masks' label maps and convert again"), name
    if tuple(image_size) != tuple(label_size):
        return (f"has an image of {tuple(image_size)} but a label of {tuple(label_size)}: convert the dataset "
                f"again (the converters check sizes)"), name
    return None, name


def find_faulty_record(file_pattern, *, num_classes=None, ignore_label=None):
    """Reads every TFRecord file matching `file_pattern` (a glob or list of globs) alone and checks each
    record: readable, decodable, labels in [0, num_classes) or `ignore_label` (unless `num_classes` is
    None: labels that are not used), image and label sizes equal.

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


def _shown(file_pattern):
    """A glob or list of globs as the user gives it (commas join globs)."""
    return file_pattern if isinstance(file_pattern, str) else ",".join(file_pattern)


def unlabelled_start(file_pattern, *, ignore_label, num_records):
    """None, or a one-line message when the first `num_records` records of `file_pattern` (a glob or list of globs),
    taken in turn from its first shards as training's interleave starts, hold no labelled pixel: every label pixel
    is `ignore_label`. Only labels are decoded, so the check stays cheap."""
    files = list_files(file_pattern)
    shards = files[:MAX_PARALLEL_FILES]
    labels = tf.data.Dataset.from_tensor_slices(shards).interleave(
        tf.data.TFRecordDataset, cycle_length=len(shards)).take(num_records).map(tfrecord.parse_label)
    read, labelled = (int(n) for n in labels.reduce(
        (tf.constant(0, tf.int64), tf.constant(0, tf.int64)), lambda counts, label: (counts[0] + 1, counts[1] + (
            tf.math.count_nonzero(tf.cast(label, tf.int32) != ignore_label, dtype=tf.int64)))))
    if labelled:
        return None
    return (f"the first {read} records of {', '.join(shards)} ({len(shards)} of the {len(files)} shards matching "
            f"{_shown(file_pattern)}) have no labelled pixel: every label pixel is the ignore label {ignore_label}. Masks "
            f"saved inverted, converted with a wrong value map, or an ignore label the masks do not use "
            f"(config.dataset.ignore_label) do this: fix the masks and convert again")


@contextlib.contextmanager
def naming_faulty_records(file_pattern, *, num_classes=None, ignore_label=None, log=None):
    """Runs a block that reads the records of `file_pattern`; an input-pipeline error in it (a truncated
    shard, an undecodable record, a label outside the classes) becomes a `DataError` naming the shard, the
    record and the fix (`find_faulty_record`), or is re-raised as it was if every record is sound."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        if log:
            log(f"{type(error).__name__} from the input pipeline; checking {_shown(file_pattern)} shard by shard "
                f"for the faulty record.")
        message = find_faulty_record(file_pattern, num_classes=num_classes, ignore_label=ignore_label)
        if message is None:
            raise
        raise DataError(message) from None
