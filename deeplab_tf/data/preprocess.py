"""Training augmentation of one (image, label) pair, as DeepLab trains: random scale, pad with the
mean pixel / ignore label, random crop, random left-right flip.

Every random choice is a stateless op on an explicit seed, so a pipeline seed reproduces the same
augmentations however many threads run the map.
"""

import tensorflow as tf

from deeplab_tf.constants import IGNORE_LABEL, MEAN_RGB


def scale_factor(seed, *, min_scale=0.5, max_scale=2.0, scale_step=0.25):
    """A random scale, uniform over min_scale, min_scale + step, ..., max_scale (the original
    release's grid); `scale_step=0` draws from the continuous [min_scale, max_scale]."""
    if min_scale == max_scale:
        return tf.constant(min_scale, tf.float32)
    if scale_step > 0:
        num_scales = int(round((max_scale - min_scale) / scale_step)) + 1
        index = tf.random.stateless_uniform([], seed, 0, num_scales, dtype=tf.int32)
        return min_scale + tf.cast(index, tf.float32) * scale_step
    return tf.random.stateless_uniform([], seed, min_scale, max_scale)


def resize(image, label, scale):
    """Scales both by `scale`: bilinear for the image, nearest neighbour for the label (so no new
    class ids appear at borders)."""
    size = tf.cast(tf.round(tf.cast(tf.shape(label), tf.float32) * scale), tf.int32)
    image = tf.image.resize(image, size, method="bilinear")
    label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
    return image, label


def pad_to_crop(image, label, *, crop_size, ignore_label=IGNORE_LABEL, mean_pixel=MEAN_RGB):
    """Pads bottom/right up to `crop_size`: the image with the mean pixel (0 after the model's
    mean subtraction), the label with the ignore label (no loss on padding)."""
    shape = tf.shape(label)
    paddings = [[0, tf.maximum(crop_size[0] - shape[0], 0)],
                [0, tf.maximum(crop_size[1] - shape[1], 0)]]
    mean_pixel = tf.constant(mean_pixel, image.dtype)
    image = tf.pad(image - mean_pixel, paddings + [[0, 0]]) + mean_pixel
    label = tf.pad(label, paddings, constant_values=tf.cast(ignore_label, label.dtype))
    return image, label


def random_crop(image, label, *, crop_size, seed):
    """The same random `crop_size` window of both (they must be at least that large)."""
    limit = tf.shape(label) - tf.constant(crop_size) + 1
    offset = tf.random.stateless_uniform([2], seed) * tf.cast(limit, tf.float32)
    top, left = tf.unstack(tf.cast(offset, tf.int32))
    image = image[top:top + crop_size[0], left:left + crop_size[1]]
    label = label[top:top + crop_size[0], left:left + crop_size[1]]
    return image, label


def random_flip_left_right(image, label, *, seed):
    """Mirrors both together with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return (tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image),
            tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label))


def preprocess_for_train(image, label, *, seed, crop_size=(513, 513), min_scale=0.5,
                         max_scale=2.0, scale_step=0.25, flip=True, ignore_label=IGNORE_LABEL):
    """uint8 image [H, W, 3] + label [H, W] -> float32 [crop_h, crop_w, 3] in 0..255 and int32
    [crop_h, crop_w]; `seed` is a stateless seed of shape [2]."""
    scale_seed, crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    image = tf.cast(image, tf.float32)
    scale = scale_factor(scale_seed, min_scale=min_scale, max_scale=max_scale,
                         scale_step=scale_step)
    image, label = resize(image, label, scale)
    image, label = pad_to_crop(image, label, crop_size=crop_size, ignore_label=ignore_label)
    image, label = random_crop(image, label, crop_size=crop_size, seed=crop_seed)
    if flip:
        image, label = random_flip_left_right(image, label, seed=flip_seed)
    image = tf.ensure_shape(image, [crop_size[0], crop_size[1], 3])
    label = tf.ensure_shape(tf.cast(label, tf.int32), [crop_size[0], crop_size[1]])
    return image, label
