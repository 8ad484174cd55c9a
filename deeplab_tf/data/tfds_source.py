"""tensorflow-datasets' `cityscapes` builder as an alternative input to our TFRecords.

The builder prepares offline from the zips the user put in `manual_dir`
(leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip; gtCoarse.zip + leftImg8bit_trainextra.zip
for the "semantic_segmentation_extra" config), but its labels are raw Cityscapes labelIds: they
are mapped here to the 19 train ids, everything else to the ignore label.
"""

import tensorflow as tf

from deeplab_tf.data import cityscapes_labels

# tfds split names by ours.
_SPLITS = {"train": "train", "val": "validation", "train_extra": "train_extra"}


def label_ids_to_train_ids(label_ids):
    """uint8 Cityscapes labelIds (any shape) -> uint8 train ids, 255 for unevaluated classes."""
    table = tf.constant(cityscapes_labels.label_id_lookup_table(), tf.uint8)
    return tf.gather(table, tf.cast(label_ids, tf.int32))


def _example(features):
    image = features["image_left"]
    return {
        "image": image,
        "label": label_ids_to_train_ids(features["segmentation_label"][:, :, 0]),
        "filename": features["image_id"],
        "height": tf.shape(image, out_type=tf.int64)[0],
        "width": tf.shape(image, out_type=tf.int64)[1],
    }


def cityscapes_tfds(split, *, manual_dir, data_dir, config="semantic_segmentation"):
    """Cityscapes `split` (train, val, or train_extra with config "semantic_segmentation_extra")
    as a dataset in `parse_example`'s format, ready for `train_dataset` / `eval_dataset`.

    Prepares the tfds dataset in `data_dir` on first use (offline, from `manual_dir`).
    """
    import tensorflow_datasets as tfds  # heavy; only this source needs it

    builder = tfds.builder(f"cityscapes/{config}", data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir))
    return builder.as_dataset(split=_SPLITS[split], shuffle_files=False).map(
        _example, num_parallel_calls=tf.data.AUTOTUNE)
