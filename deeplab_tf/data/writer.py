"""Sharded TFRecord writing that never leaves a partial split looking complete."""

import os

import tensorflow as tf

# Shards are written in <output_dir>/.incomplete/<split>/ and moved out only when every split of
# the run is complete. A glob for one folder level (`<output_dir>/train-*`) never reaches inside it, so even a
# killed conversion leaves nothing a pipeline would read.
INCOMPLETE_DIR = ".incomplete"


def shard_path(output_dir, split, index, num_shards):
    """`<output_dir>/<split>-%05d-of-%05d.tfrecord`, the layout the pipelines glob."""
    return os.path.join(output_dir, f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord")


def split_pattern(output_dir, split):
    """The glob matching every shard of one split."""
    return os.path.join(output_dir, f"{split}-?????-of-?????.tfrecord")


def incomplete_dir(output_dir, split):
    """Where a split's shards are written before they are complete."""
    return os.path.join(output_dir, INCOMPLETE_DIR, split)


class ShardedWriter:
    """Writes one split round-robin into `num_shards` files, staged until `commit`.

    Shards are written into `incomplete_dir(...)`. When the `with` block exits normally `paths`
    lists where `commit` will put them (shards that stayed empty, with fewer records than shards,
    are dropped: no input pipeline gets an empty file); on an error they are removed. `commit`
    moves them into `output_dir`, replacing the split's shards of an earlier conversion;
    `discard` removes an uncommitted split. If the process is killed the staged files stay in the
    hidden folder (removed by the next run of the split), out of reach of the split's glob.
    Committing several writers one after the other makes a run of several splits all-or-nothing,
    up to the renames themselves.
    """

    def __init__(self, *, output_dir, split, num_shards):
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self._output_dir = output_dir
        self._split = split
        self._num_shards = num_shards
        self._temporary_dir = incomplete_dir(output_dir, split)
        self._writers = []
        self.num_records = 0
        self.paths = []

    def _temporary(self, index, num_shards):
        return shard_path(self._temporary_dir, self._split, index, num_shards)

    def __enter__(self):
        if tf.io.gfile.exists(self._temporary_dir):  # left by a killed run
            tf.io.gfile.rmtree(self._temporary_dir)
        tf.io.gfile.makedirs(self._temporary_dir)
        self._writers = [tf.io.TFRecordWriter(self._temporary(i, self._num_shards))
                         for i in range(self._num_shards)]
        return self

    def write(self, serialized):
        self._writers[self.num_records % len(self._writers)].write(serialized)
        self.num_records += 1

    def __exit__(self, exc_type, exc, tb):
        for writer in self._writers:
            writer.close()
        num_used = 0 if exc_type else min(self.num_records, self._num_shards)
        if not num_used:
            self.discard()
            return False
        self.paths = [shard_path(self._output_dir, self._split, i, num_used)
                      for i in range(num_used)]
        return False

    def commit(self):
        """Moves the staged shards to `paths`, then removes the split's other (stale) shards."""
        for i, path in enumerate(self.paths):
            tf.io.gfile.rename(self._temporary(i, self._num_shards), path, overwrite=True)
        for stale in tf.io.gfile.glob(split_pattern(self._output_dir, self._split)):
            if stale not in self.paths:
                tf.io.gfile.remove(stale)
        self.discard()

    def discard(self):
        """Removes what is left of the split's staging folder (all of it, unless committed)."""
        if tf.io.gfile.exists(self._temporary_dir):
            tf.io.gfile.rmtree(self._temporary_dir)
        try:  # the shared parent, unless another split is being written into it
            os.rmdir(os.path.dirname(self._temporary_dir))
        except OSError:
            pass
