"""Training augmentation of one (image, label) pair, as DeepLab trains: random scale, pad with the
backbone's pad value / ignore label, random crop, random left-right flip (section 4.1, "Crop size").

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


def crop_offset(size, *, crop_size, seed):
    """Top-left corner [2] of a uniformly random `crop_size` window of an image of `size` [2]
    once padded bottom/right to at least `crop_size`."""
    limit = tf.maximum(size - tf.constant(crop_size), 0) + 1
    return tf.cast(tf.random.stateless_uniform([2], seed) * tf.cast(limit, tf.float32), tf.int32)


def _nearest_indices(start, count, *, source_size, size):
    """Source indices of resized pixels start..start+count-1, as tf.image.resize's nearest
    neighbour picks them (half-pixel centres)."""
    scale = tf.cast(source_size, tf.float32) / tf.cast(size, tf.float32)
    positions = (tf.cast(tf.range(start, start + count), tf.float32) + 0.5) * scale
    return tf.minimum(tf.cast(tf.floor(positions), tf.int32), source_size - 1)


def scaled_crop(image, label, *, size, offset, crop_size, flip=False, ignore_label=IGNORE_LABEL,
                pad_value=MEAN_RGB):
    """The `crop_size` window at `offset` of (image, label) resized to `size`, padded bottom/right
    with `pad_value` (RGB) / the ignore label, mirrored left-right if `flip`.

    Equals tf.image.resize (bilinear for the image, nearest neighbour for the label so no new
    class ids appear) -> pad -> slice -> reverse, the image up to float rounding, but computes
    only the window: the image via crop_and_resize at the resized pixels' positions (a mirrored
    box mirrors), the label by gathering the source pixels nearest to them. At scale 2 this is
    ~3x faster than resizing the whole image.
    """
    source_size = tf.shape(label)
    crop = tf.constant(crop_size)
    window = tf.minimum(crop, size - offset)  # the part of the crop that is not padding
    flip = tf.convert_to_tensor(flip, tf.bool)

    rows = _nearest_indices(offset[0], window[0], source_size=source_size[0], size=size[0])
    cols = _nearest_indices(offset[1], window[1], source_size=source_size[1], size=size[1])
    cols = tf.where(flip, tf.reverse(cols, [0]), cols)
    label = tf.cast(tf.gather(tf.gather(label, rows), cols, axis=1), tf.int32)

    # Half-pixel centres: resized pixel i sits at source coordinate (i + 0.5) * step - 0.5.
    step = tf.cast(source_size, tf.float32) / tf.cast(size, tf.float32)
    first = (tf.cast(offset, tf.float32) + 0.5) * step - 0.5
    last = (tf.cast(offset + window, tf.float32) - 0.5) * step - 0.5
    # Sample a copy with a 1-pixel replicated border (crop_and_resize extrapolates where
    # tf.image.resize clamps); box corners are normalised by that copy's size - 1.
    bordered = tf.cast(source_size + 1, tf.float32)
    first, last = (first + 1) / bordered, (last + 1) / bordered
    left, right = tf.where(flip, last[1], first[1]), tf.where(flip, first[1], last[1])
    boxes = tf.stack([first[0], left, last[0], right])[None]
    image = tf.pad(tf.cast(image, tf.float32), [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    image = tf.image.crop_and_resize(image[None], boxes, [0], window)[0]

    pad_bottom, pad_side = crop[0] - window[0], crop[1] - window[1]
    pad_left = tf.where(flip, pad_side, 0)
    pad_right = pad_side - pad_left
    label = tf.pad(label, [[0, pad_bottom], [pad_left, pad_right]],
                   constant_values=ignore_label)
    pad_pixel = tf.constant(pad_value, tf.float32)

    def pad_image():
        fill = lambda height, width: tf.broadcast_to(pad_pixel, [height, width, 3])
        padded = tf.concat([fill(window[0], pad_left), image, fill(window[0], pad_right)], 1)
        return tf.concat([padded, fill(pad_bottom, crop[1])], 0)

    image = tf.cond(tf.reduce_any(window < crop), pad_image, lambda: image)
    return image, label


def preprocess_for_train(image, label, *, seed, crop_size=(513, 513), min_scale=0.5,
                         max_scale=2.0, scale_step=0.25, flip=True, ignore_label=IGNORE_LABEL,
                         pad_value=MEAN_RGB):
    """uint8 image [H, W, 3] + label [H, W] -> float32 [crop_h, crop_w, 3] in 0..255 and int32
    [crop_h, crop_w]: random scale, pad, random crop, random left-right flip (probability 1/2).
    `seed` is a stateless seed of shape [2]; `pad_value` is the backbone's (`resnet.pad_value`)."""
    scale_seed, crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    scale = scale_factor(scale_seed, min_scale=min_scale, max_scale=max_scale,
                         scale_step=scale_step)
    size = tf.cast(tf.round(tf.cast(tf.shape(label), tf.float32) * scale), tf.int32)
    offset = crop_offset(size, crop_size=crop_size, seed=crop_seed)
    mirror = tf.logical_and(flip, tf.random.stateless_uniform([], flip_seed) < 0.5)
    image, label = scaled_crop(image, label, size=size, offset=offset, crop_size=crop_size,
                               flip=mirror, ignore_label=ignore_label, pad_value=pad_value)
    return (tf.ensure_shape(image, [crop_size[0], crop_size[1], 3]),
            tf.ensure_shape(label, [crop_size[0], crop_size[1]]))


def _round_up_to_factor(size, factor):
    """The smallest factor * k + 1 >= size (sizes of this form keep pixel centres aligned)."""
    return size + (factor - (size - 1) % factor) % factor


def resize_to_range_size(height, width, *, min_size, max_size=None, factor=None):
    """The (height, width) int32 [2] `resize_to_range` resizes a height x width image to.

    The original release's rule, in float32 as it computes: scale so the shorter side is `min_size`;
    if the longer side would then exceed `max_size`, scale so the longer side is `max_size` instead
    (sides rounded up). With `factor`, both sides are then rounded up to factor * k + 1, and
    `max_size` is first lowered to the largest factor * k + 1 below it so the result stays within it
    (min = max = 513 with factor 16 gives a longer side of 497).
    """
    size = tf.cast(tf.stack([height, width]), tf.float32)
    new_size = tf.cast(tf.math.ceil(size * (float(min_size) / tf.reduce_min(size))), tf.int32)
    if max_size:
        limit = float(max_size)
        if factor:
            limit = float(_round_up_to_factor(max_size, factor) - factor)
        capped = tf.cast(tf.math.ceil(size * (limit / tf.reduce_max(size))), tf.int32)
        new_size = tf.where(tf.cast(tf.reduce_max(new_size), tf.float32) > limit, capped, new_size)
    if factor:
        new_size = _round_up_to_factor(new_size, factor)
    return new_size


def resize_to_range(image, label, *, min_size, max_size=None, factor=None):
    """Resizes image [H, W, 3] and label [H, W] so their sides fall in [min_size, max_size], as the
    original release does to every ADE20K image before augmentation (its min_resize_value,
    max_resize_value, resize_factor); sizes from `resize_to_range_size`.

    The image is resized bilinearly, the label by nearest neighbour (no new class ids), both with
    aligned corners as the release does. Returns (float32 image, int32 label).
    """
    if not min_size or min_size < 0 or (max_size or 0) < 0 or (factor or 0) < 0:
        raise ValueError(f"resize to range needs a positive min_size (and max_size, factor >= 0), got "
                         f"min_size={min_size}, max_size={max_size}, factor={factor}")
    shape = tf.shape(label)
    size = resize_to_range_size(shape[0], shape[1], min_size=min_size, max_size=max_size, factor=factor)
    # tf.image.resize has no aligned corners: the raw ops with half_pixel_centers=False do.
    image = tf.raw_ops.ResizeBilinear(images=tf.cast(image, tf.float32)[None], size=size, align_corners=True)[0]
    label = tf.raw_ops.ResizeNearestNeighbor(images=tf.cast(label, tf.int32)[None, ..., None], size=size,
                                             align_corners=True)[0, ..., 0]
    return image, label
