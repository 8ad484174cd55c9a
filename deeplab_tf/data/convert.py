"""The conversion loop shared by every dataset: validate each (image, mask), write sharded records.

A dataset source only lists `Sample`s; this module reads, checks and encodes them, writes the
shards, shows progress, and returns a summary with the per-class pixel histogram.

TensorFlow is imported only when records are written, so that the converters answer `--help` and
flag mistakes at once.
"""

import collections
import concurrent.futures
import dataclasses
import os
import time
from typing import Callable, Optional

import numpy as np
from absl import logging
from PIL import Image

from deeplab_tf.constants import IGNORE_LABEL
from deeplab_tf.data import image_io, validation

_PROGRESS_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Sample:
    """One training pair as a source lists it; nothing is read until conversion."""

    name: str  # stored as image/filename, e.g. "2007_000032"
    image_path: str
    mask_path: str  # the file named in error messages
    read_mask: Callable[[], np.ndarray]  # -> uint8 class ids [H, W]; raises DataError
    problem: Optional[str] = None  # found while listing: the sample is bad (DataError message)


@dataclasses.dataclass
class SplitSummary:
    """What one split's conversion wrote, and what it skipped (sample name, reason)."""

    split: str
    records: int
    shards: list
    histogram: np.ndarray  # pixels per label value, 256 entries
    skipped: list = dataclasses.field(default_factory=list)
    unlabelled: list = dataclasses.field(default_factory=list)  # names of images whose every pixel is ignored


@dataclasses.dataclass
class ConversionSummary:
    """Per-split results of one converter run."""

    splits: dict

    @property
    def records(self):
        return {name: s.records for name, s in self.splits.items()}

    def format(self, *, class_names, ignore_label=IGNORE_LABEL):
        """A report for the terminal: first, splits with images that have no labelled pixel (they train on
        nothing: masks saved inverted, a wrong value map); then records, skipped files and the per-class pixel
        histogram."""
        lines = [f"warning: {s.split}: {len(s.unlabelled)} of {s.records} images have no labelled pixel (every mask "
                 f"pixel is the ignore label {ignore_label}), e.g. {', '.join(s.unlabelled[:3])}: masks saved "
                 f"inverted, a wrong value map or a wrong ignore label? deeplab-train refuses records with nothing "
                 f"labelled in its first batches." for s in self.splits.values() if s.unlabelled]
        for s in self.splits.values():
            lines.append(f"{s.split}: {s.records} records in {len(s.shards)} shards "
                         f"({os.path.dirname(s.shards[0])}), {len(s.skipped)} skipped")
            lines += [f"  skipped {name}: {reason}" for name, reason in s.skipped]
            lines += _format_histogram(s.histogram, class_names=class_names,
                                       ignore_label=ignore_label)
        return "\n".join(lines)


def _format_histogram(histogram, *, class_names, ignore_label):
    total = max(int(histogram.sum()), 1)
    rows = [(i, name) for i, name in enumerate(class_names)] + [(ignore_label, "(ignore)")]
    lines = [f"  {'id':>4} {'class':<16} {'pixels':>14} {'%':>7}"]
    for i, name in rows:
        lines.append(f"  {i:>4} {name:<16} {int(histogram[i]):>14} "
                     f"{100.0 * histogram[i] / total:>7.3f}")
    absent = [name for i, name in rows[:-1] if histogram[i] == 0]
    if absent:
        lines.append(f"  classes with no pixels: {', '.join(absent)}")
    return lines


def encode_sample(sample, *, num_classes, ignore_label=IGNORE_LABEL, binary_check=True):
    """Reads and validates one sample -> (serialized tf.train.Example, label histogram [256])."""
    from deeplab_tf.data import tfrecord  # pylint: disable=import-outside-toplevel
    if sample.problem:
        raise validation.DataError(sample.problem)
    image, image_format, size = validation.read_image(sample.image_path)
    mask = sample.read_mask()
    validation.check_mask(mask, path=sample.mask_path, image_size=size, num_classes=num_classes,
                          ignore_label=ignore_label, binary_check=binary_check)
    example = tfrecord.make_example(image=image, image_format=image_format,
                                    label=image_io.encode_png(Image.fromarray(mask)),
                                    filename=sample.name, height=size[0], width=size[1])
    return example.SerializeToString(), np.bincount(mask.ravel(), minlength=256)


def _ordered_results(fn, items, num_threads):
    """fn over items on a thread pool, as futures in input order, with bounded look-ahead."""
    pool = concurrent.futures.ThreadPoolExecutor(num_threads)
    pending = collections.deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= 4 * num_threads:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _write_split(samples, out, *, split, num_classes, ignore_label, skip_bad, binary_check,
                 num_threads):
    """Encodes `samples` into the ShardedWriter `out`; returns (histogram, skipped, unlabelled)."""
    histogram = np.zeros(256, np.int64)
    skipped, unlabelled = [], []
    encode = lambda s: encode_sample(s, num_classes=num_classes, ignore_label=ignore_label,
                                     binary_check=binary_check)
    start = last_report = time.monotonic()
    for done, (sample, future) in enumerate(_ordered_results(encode, samples, num_threads), 1):
        try:
            serialized, counts = future.result()
        except validation.DataError as e:
            if not skip_bad:
                raise validation.DataError(
                    f"{e} (Or pass --skip_bad to leave such files out and list them.)") from None
            skipped.append((sample.name, str(e)))
            logging.warning("skipping %s", e)
        else:
            out.write(serialized)
            histogram += counts
            if counts[ignore_label] == counts.sum():
                unlabelled.append(sample.name)
        now = time.monotonic()
        if now - last_report > _PROGRESS_SECONDS or done == len(samples):
            last_report = now
            logging.info("%s: %d/%d images (%.0f%%), %.1f images/s", split, done,
                         len(samples), 100.0 * done / len(samples), done / (now - start))
    if out.num_records == 0:
        raise validation.DataError(
            f"split '{split}': all {len(samples)} images were bad and skipped; nothing "
            "written. Fix the files listed above.")
    return histogram, skipped, unlabelled


def convert_splits(samples_by_split, *, output_dir, num_classes, num_shards,
                   ignore_label=IGNORE_LABEL, skip_bad=False, binary_check=True, num_threads=None):
    """Writes each split's samples as `<output_dir>/<split>-*.tfrecord`; returns a
    `ConversionSummary`.

    All or nothing: every split is written under `<output_dir>/.incomplete/` and the shards move
    into `output_dir` only once all splits are complete, so a bad sample in any split (a
    DataError) leaves `output_dir` as it was. With `skip_bad` a bad sample is listed in the
    summary and left out instead. Shards are capped at the number of samples so none is empty.
    """
    samples_by_split = {split: list(samples) for split, samples in samples_by_split.items()}
    for split, samples in samples_by_split.items():
        if not samples:
            raise validation.DataError(
                f"split '{split}' has no images: check the split list / folder paths.")
    from deeplab_tf.data import writer  # pylint: disable=import-outside-toplevel

    num_threads = num_threads or min(8, os.cpu_count() or 1)
    staged, summaries = [], {}
    try:
        for split, samples in samples_by_split.items():
            out = writer.ShardedWriter(output_dir=output_dir, split=split,
                                       num_shards=max(1, min(num_shards, len(samples))))
            with out:
                histogram, skipped, unlabelled = _write_split(
                    samples, out, split=split, num_classes=num_classes, ignore_label=ignore_label,
                    skip_bad=skip_bad, binary_check=binary_check, num_threads=num_threads)
            staged.append(out)
            summaries[split] = SplitSummary(split=split, records=out.num_records, shards=out.paths,
                                            histogram=histogram, skipped=skipped, unlabelled=unlabelled)
        for out in staged:
            out.commit()
    finally:
        for out in staged:  # after commit() this only tidies up
            out.discard()
    return ConversionSummary(splits=summaries)


def convert_split(samples, *, split, **kwargs):
    """`convert_splits` for one split; returns its `SplitSummary`."""
    return convert_splits({split: samples}, **kwargs).splits[split]
