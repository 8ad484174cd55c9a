"""The TFRecord schema (research/deeplab's feature keys): write one example, parse one back."""

import tensorflow as tf

IMAGE_ENCODED = "image/encoded"
IMAGE_FILENAME = "image/filename"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
LABEL_ENCODED = "image/segmentation/class/encoded"
LABEL_FORMAT = "image/segmentation/class/format"

_FEATURES = {
    IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
    IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
    IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64, default_value=0),
    IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64, default_value=0),
    LABEL_ENCODED: tf.io.FixedLenFeature((), tf.string),
    LABEL_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="png"),
}


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(*, image, image_format, label, filename, height, width, label_format="png"):
    """A `tf.train.Example` for one image and its class-index mask, both already encoded.

    `label` must be a single-channel PNG of class indices (not a palette PNG: TF decodes palettes
    to colours).
    """
    return tf.train.Example(features=tf.train.Features(feature={
        IMAGE_ENCODED: _bytes(image),
        IMAGE_FILENAME: _bytes(filename.encode("utf-8")),
        IMAGE_FORMAT: _bytes(image_format.encode("utf-8")),
        IMAGE_HEIGHT: _int64(height),
        IMAGE_WIDTH: _int64(width),
        LABEL_ENCODED: _bytes(label),
        LABEL_FORMAT: _bytes(label_format.encode("utf-8")),
    }))


def decode_image(encoded):
    """JPEG/PNG/BMP/GIF bytes -> uint8 RGB [H, W, 3]; greyscale is replicated, alpha dropped."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def decode_label(encoded):
    """Single-channel PNG bytes -> uint8 class indices [H, W]."""
    return tf.io.decode_png(encoded, channels=1)[:, :, 0]


def parse_label(serialized):
    """Only the label of a serialized example (cheap: used to decide bootstrapping)."""
    features = tf.io.parse_single_example(serialized, {LABEL_ENCODED: _FEATURES[LABEL_ENCODED]})
    return decode_label(features[LABEL_ENCODED])


def parse_filename(serialized):
    """Only the image's file name of a serialized example ("" if it has none): names a record that fails to decode."""
    return tf.io.parse_single_example(serialized, {IMAGE_FILENAME: _FEATURES[IMAGE_FILENAME]})[IMAGE_FILENAME]


def parse_example(serialized):
    """A serialized example -> {"image": uint8 [H, W, 3], "label": uint8 [H, W], "filename",
    "height", "width"}."""
    features = tf.io.parse_single_example(serialized, _FEATURES)
    return {
        "image": decode_image(features[IMAGE_ENCODED]),
        "label": decode_label(features[LABEL_ENCODED]),
        "filename": features[IMAGE_FILENAME],
        "height": features[IMAGE_HEIGHT],
        "width": features[IMAGE_WIDTH],
    }
