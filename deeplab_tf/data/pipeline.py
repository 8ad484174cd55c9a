"""tf.data input pipelines: training crops (section 4.1) with hard-image bootstrapping (section
4.3), and whole-image evaluation.

A source is a TFRecord file pattern (a glob or a list of globs) or a tf.data.Dataset already in
`parse_example`'s format (e.g. `tfds_source.cityscapes_tfds`).
"""

import tensorflow as tf

from deeplab_tf.constants import IGNORE_LABEL, MEAN_RGB
from deeplab_tf.data import preprocess, tfrecord

MAX_PARALLEL_FILES = 8  # shards a training pipeline reads at once


def list_files(file_pattern):
    """The files matching a glob (or list of globs), sorted. Directories are skipped: `dir/*` also matches
    a converter's hidden staging folder `dir/.incomplete`, which TFRecordDataset cannot read."""
    patterns = [file_pattern] if isinstance(file_pattern, (str, bytes)) else list(file_pattern)
    matches = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    files = [f for f in matches if not tf.io.gfile.isdir(f)]
    if not files:
        only = f" (only directories: {', '.join(matches)})" if matches else ""
        raise ValueError(f"no TFRecord files match {file_pattern!r}{only}; convert the dataset first "
                         "(datasets/build_*_data.py) or check the pattern.")
    return files


def _examples(source, *, input_context, training, seed):
    """(dataset of one input pipeline's examples, their parse function, their label function).

    Files are split among input pipelines (workers) when there are enough of them; otherwise
    every pipeline reads all files and keeps every n-th record. Training reads files in a shuffled
    order, several at once; evaluation reads them one after the other.
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    if isinstance(source, tf.data.Dataset):
        identity = lambda example: example
        return source.shard(num_pipelines, pipeline_id), identity, lambda e: e["label"]
    files = list_files(source)
    shard_records = len(files) < num_pipelines
    if not shard_records:
        files = files[pipeline_id::num_pipelines]
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed).interleave(
            tf.data.TFRecordDataset, cycle_length=min(len(files), MAX_PARALLEL_FILES),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.flat_map(tf.data.TFRecordDataset)
    if shard_records:
        dataset = dataset.shard(num_pipelines, pipeline_id)
    # Bootstrapping needs only the label: decode it alone, not the image.
    return dataset, tfrecord.parse_example, tfrecord.parse_label


def bootstrap(dataset, *, classes, factor, label_fn):
    """Section 4.3's bootstrapping on hard images: every example whose label (`label_fn(example)`)
    contains one of `classes` appears `factor` times, the others once."""
    classes = tf.constant(classes, tf.int32)

    def count(example):
        label = tf.reshape(tf.cast(label_fn(example), tf.int32), [-1])
        histogram = tf.math.bincount(label, minlength=256, maxlength=256)
        hard = tf.reduce_any(tf.gather(histogram, classes) > 0)
        return example, tf.where(hard, tf.constant(factor, tf.int64), tf.constant(1, tf.int64))

    return (dataset.map(count, num_parallel_calls=tf.data.AUTOTUNE)
            .flat_map(lambda example, n: tf.data.Dataset.from_tensors(example).repeat(n)))


def _resize_fn(min_resize_value, max_resize_value, resize_factor):
    """(image, label) -> (image, label): `preprocess.resize_to_range` when `min_resize_value` is set
    (the original release's ADE20K setting: 513, 513, 16), else unchanged. 0 or None means off."""
    if not (min_resize_value or max_resize_value):
        return lambda image, label: (image, label)
    return lambda image, label: preprocess.resize_to_range(
        image, label, min_size=min_resize_value, max_size=max_resize_value, factor=resize_factor)


def _pair(crop_size):
    return (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)


def train_dataset(file_pattern, *, batch_size, crop_size=(513, 513), min_scale=0.5,
                  max_scale=2.0, scale_step=0.25, flip=True, ignore_label=IGNORE_LABEL,
                  bootstrap_classes=(), bootstrap_factor=1, shuffle_buffer=1000, seed=None,
                  input_context=None, repeat=True, pad_value=MEAN_RGB, min_resize_value=None,
                  max_resize_value=None, resize_factor=None):
    """(images float32 [b, crop_h, crop_w, 3] in 0..255, labels int32 [b, crop_h, crop_w]).

    `batch_size` is global: with a tf.distribute `input_context` each replica gets
    `input_context.get_per_replica_batch_size(batch_size)` and each input pipeline its own
    files. Batches drop the remainder. `seed` fixes file order, shuffling and augmentation.
    `pad_value` fills crops larger than the scaled image: the backbone's `resnet.pad_value`.
    `min_resize_value`, `max_resize_value`, `resize_factor`: resize every image to that range
    (`preprocess.resize_to_range`) before the random scale, as the release trains ADE20K.
    """
    crop_size = _pair(crop_size)
    resize = _resize_fn(min_resize_value, max_resize_value, resize_factor)
    if input_context:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    dataset, parse, label_of = _examples(file_pattern, input_context=input_context,
                                         training=True, seed=seed)
    if bootstrap_classes and bootstrap_factor > 1:
        dataset = bootstrap(dataset, classes=bootstrap_classes, factor=bootstrap_factor,
                            label_fn=label_of)
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # One stateless seed per example, distinct per input pipeline.
    seeds = tf.data.Dataset.random(seed=seed).map(
        lambda s: tf.stack([s, tf.constant(pipeline_id, tf.int64)]))

    def augment(example, example_seed):
        example = parse(example)
        image, label = resize(example["image"], example["label"])
        return preprocess.preprocess_for_train(
            image, label, seed=example_seed, crop_size=crop_size,
            min_scale=min_scale, max_scale=max_scale, scale_step=scale_step, flip=flip,
            ignore_label=ignore_label, pad_value=pad_value)

    return (tf.data.Dataset.zip(dataset, seeds)
            .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))


def eval_dataset(file_pattern, *, input_context=None, min_resize_value=None, max_resize_value=None,
                 resize_factor=None):
    """Batches of one whole image at its original size, in file order, not augmented:
    {"image": float32 [1, H, W, 3] in 0..255, "label": int32 [1, H, W], "filename": [1]}.

    With `min_resize_value` (and `max_resize_value`, `resize_factor`) image and label are first
    resized to that range as in `train_dataset`, so a metric is computed at the resized size, as
    the original release evaluates ADE20K."""
    dataset, parse, _ = _examples(file_pattern, input_context=input_context, training=False,
                                  seed=None)
    resize = _resize_fn(min_resize_value, max_resize_value, resize_factor)

    def whole_image(example):
        example = parse(example)
        image, label = resize(example["image"], example["label"])
        return {"image": tf.cast(image, tf.float32), "label": tf.cast(label, tf.int32),
                "filename": example["filename"]}

    dataset = dataset.map(whole_image, num_parallel_calls=tf.data.AUTOTUNE).batch(1)
    if input_context is None and not isinstance(file_pattern, tf.data.Dataset):
        # A known length (the records counted, not decoded): Keras' fit then ends each validation pass without
        # warning "Your input ran out of data; interrupting training".
        records = tf.data.TFRecordDataset(list_files(file_pattern))
        count = records.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
    return dataset.prefetch(tf.data.AUTOTUNE)
