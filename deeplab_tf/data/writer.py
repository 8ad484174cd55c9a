"""Sharded TFRecord writing that never leaves a partial split looking complete."""

import os

import tensorflow as tf


def shard_path(output_dir, split, index, num_shards):
    """`<output_dir>/<split>-%05d-of-%05d.tfrecord`, the layout the pipelines glob."""
    return os.path.join(output_dir, f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord")


def split_pattern(output_dir, split):
    """The glob matching every shard of one split."""
    return os.path.join(output_dir, f"{split}-?????-of-?????.tfrecord")


class ShardedWriter:
    """Writes one split round-robin into `num_shards` files, atomically.

    Shards are written under temporary names and renamed only when the `with` block exits
    normally; shards of an earlier conversion of the same split are then replaced. On any error
    the temporaries are removed, so a glob over the split never sees half a conversion. Shards
    that stayed empty (fewer records than shards) are dropped: no input pipeline gets an empty
    file. `paths` lists the final shards.
    """

    def __init__(self, *, output_dir, split, num_shards):
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self._temporaries = [shard_path(output_dir, split, i, num_shards) + ".incomplete"
                             for i in range(num_shards)]
        self._output_dir = output_dir
        self._split = split
        self._writers = []
        self.num_records = 0
        self.paths = []

    def __enter__(self):
        tf.io.gfile.makedirs(self._output_dir)
        self._writers = [tf.io.TFRecordWriter(path) for path in self._temporaries]
        return self

    def write(self, serialized):
        self._writers[self.num_records % len(self._writers)].write(serialized)
        self.num_records += 1

    def __exit__(self, exc_type, exc, tb):
        for writer in self._writers:
            writer.close()
        num_used = 0 if exc_type else min(self.num_records, len(self._temporaries))
        for path in self._temporaries[num_used:]:
            if tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)
        if num_used == 0:
            return False
        self.paths = [shard_path(self._output_dir, self._split, i, num_used)
                      for i in range(num_used)]
        for stale in tf.io.gfile.glob(split_pattern(self._output_dir, self._split)):
            if stale not in self.paths:
                tf.io.gfile.remove(stale)
        for temporary, path in zip(self._temporaries, self.paths):
            tf.io.gfile.rename(temporary, path, overwrite=True)
        return False
