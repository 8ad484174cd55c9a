"""Inference on whole images: multi-scale inputs, left-right flips, sliding windows (section 4.2).

`predict` is the one inference path that evaluation, visualisation and export share. It follows the
original release's order of operations: for each scale the image is resized bilinearly, the model
runs (and runs again on the left-right flipped image, whose logits are flipped back), each pass's
logits are resized bilinearly to the input size, turned into probabilities by a softmax, and the
probabilities of all passes are averaged ("we compute as the final result the average probabilities
from each scale and flipped images").

A model is any callable ``model(images, training=False)`` taking float32 RGB images [B, H, W, 3] in
0..255 and returning logits [B, h, w, C] (normally at the input size, h, w = H, W).

With `eval_crop_size` it follows the release's evaluation protocol instead of running the image at its
own size: the image is padded bottom/right to that fixed canvas (513 x 513 on PASCAL VOC, 1025 x 2049
on Cityscapes) with the backbone's pad value, everything above runs on the canvas (so the image-level
pooling and the scaled sizes are those of the canvas, as in the paper's "crop size 513 during both
training and test"), and the prediction is cropped back to the image.
"""

import tensorflow as tf

from deeplab_tf.constants import MEAN_RGB

# Corner-aligned bilinear resizing, as the original release resized images and logits: pixel i of an
# n-pixel axis lands on i * (m - 1) / (n - 1) of an m-pixel one, so with `scaled_size` an image of
# size 32k+1 keeps its pixel centres on the grid at every scale.
from deeplab_tf.modeling.layers import resize_bilinear


def scaled_size(size, scale):
    """Size of an axis of `size` pixels at `scale`: floor((size - 1) * scale + 1), as the release did.

    Scaling the distance between the first and last pixel, rather than the pixel count, keeps sizes of
    the form k * output_stride + 1 (513, 769) in that form for the usual scales (0.5: 513 -> 257,
    0.75: 513 -> 385). Works on Python ints and on int32 tensors (dynamic sizes).
    """
    return tf.cast((tf.cast(size, tf.float32) - 1.0) * scale + 1.0, tf.int32)


def _window_starts(size, window, stride):
    """Offsets of windows covering [0, size): every `stride` pixels, the last flush with the end."""
    extra = tf.maximum(size - window, 0)
    count = (extra + stride - 1) // stride + 1
    return tf.minimum(tf.range(count) * stride, extra)


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def sliding_window_logits(model, images, *, window_size, stride=None):
    """Logits of overlapping window tiles, averaged where tiles overlap, at the input size.

    Bounds the model's memory to one `window_size` tile per image (tiles run one after the other),
    for images larger than that, e.g. full-resolution Cityscapes at output stride 8. An image no
    larger than the window is a single tile, so the result then equals ``model(images)``. Each tile
    is segmented on its own: DeepLabV3's image-level pooling sees the tile, not the whole image, so
    choose the largest window memory allows (of size 32k + 1, e.g. 513 or 769).

    Args:
        model: the segmentation model (logits at its input size).
        images: float32 [B, H, W, 3]; any, also dynamic, size.
        window_size: tile size, an int or (height, width).
        stride: distance between tile origins, an int or (height, width); default two thirds of the
            window (rounded up), i.e. neighbouring tiles overlap by a third.
    """
    images = tf.cast(images, tf.float32)
    window = _pair(window_size)
    stride = _pair(stride) if stride is not None else tuple(-(-2 * w // 3) for w in window)
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    tile_height, tile_width = tf.minimum(window[0], height), tf.minimum(window[1], width)
    rows = _window_starts(height, window[0], stride[0])
    columns = _window_starts(width, window[1], stride[1])
    num_columns = tf.size(columns)

    def tile(index):
        """Logits of tile `index` and its coverage count, zero-padded to the image size."""
        top, left = rows[index // num_columns], columns[index % num_columns]
        logits = model(images[:, top:top + tile_height, left:left + tile_width], training=False)
        padding = [[0, 0], [top, height - top - tile_height], [left, width - left - tile_width], [0, 0]]
        coverage = tf.ones([1, tile_height, tile_width, 1])
        return tf.pad(tf.cast(logits, tf.float32), padding), tf.pad(coverage, padding)

    def accumulate(index, logits_sum, coverage_sum):
        logits, coverage = tile(index)
        return index + 1, logits_sum + logits, coverage_sum + coverage

    # One tile at a time (parallel_iterations=1) is what bounds the memory.
    _, logits_sum, coverage_sum = tf.while_loop(
        lambda index, *_: index < tf.size(rows) * num_columns,
        accumulate,
        (1, *tile(0)),
        parallel_iterations=1,
    )
    logits = logits_sum / coverage_sum
    logits.set_shape(images.shape[:3].concatenate(logits.shape[3:]))
    return logits


def canvas_for(image_size, eval_crop_size, output_stride):
    """The canvas an image is padded to: `eval_crop_size`, each side the image is longer than grown to
    the smallest output_stride * k + 1 that holds it (the form the release's canvases have, so pixel
    centres stay on the feature grid).

    deeplab-vis, `segment` and the served model take this fallback for images larger than the canvas;
    deeplab-eval refuses them (`pad_to_canvas`), as the release's evaluation does.

    Args:
        image_size: (height, width), Python ints or an int32 tensor [2] (traced, dynamic sizes).
        eval_crop_size: (height, width) of the canvas.
        output_stride: the model's output stride.

    Returns:
        int32 tensor [2]: the canvas's (height, width).
    """
    size = tf.cast(image_size, tf.int32)
    crop = tf.constant(eval_crop_size, tf.int32)
    grown = -(-(size - 1) // output_stride) * output_stride + 1  # ceil((side - 1) / output_stride) strides
    return tf.where(size > crop, grown, crop)


def pad_to_canvas(images, canvas_size, pad_value=MEAN_RGB):
    """Pads images [B, H, W, 3] bottom/right to `canvas_size` (H', W') with the RGB `pad_value`.

    Args:
        images: [B, H, W, 3].
        canvas_size: (height, width) ints, or an int32 tensor [2] (`canvas_for`).
        pad_value: RGB value of the padding.

    Raises:
        InvalidArgumentError: an image is larger than a canvas of ints (the release's evaluation fails
            there too); the message names the eval crop size.
    """
    canvas_height, canvas_width = canvas_size[0], canvas_size[1]
    size = tf.shape(images)[1:3]
    if not tf.is_tensor(canvas_size):  # a `canvas_for` canvas holds its image by construction
        check = tf.debugging.assert_less_equal(
            size, tf.constant([canvas_height, canvas_width]),
            message=f"the image is larger than the eval crop size {canvas_height}x{canvas_width} (--eval_crop_size, "
                    "config.dataset.eval_crop_size): use one at least as large as the largest image (the paper's: "
                    "513,513 on PASCAL VOC, 1025,2049 on Cityscapes) or none to evaluate each image at its size")
        with tf.control_dependencies([check]):
            size = tf.identity(size)
    paddings = [[0, 0], [0, canvas_height - size[0]], [0, canvas_width - size[1]]]
    # Channel by channel, so the padding holds the pad value exactly (no x - v + v rounding).
    channels = [tf.pad(images[..., c], paddings, constant_values=value) for c, value in enumerate(pad_value)]
    padded = tf.stack(channels, axis=-1)
    padded.set_shape([images.shape[0], tf.get_static_value(canvas_height), tf.get_static_value(canvas_width),
                      images.shape[3]])
    return padded


def predict(model, images, *, scales=(1.0,), flip=False, output="labels", window_size=None,
            eval_crop_size=None, pad_value=MEAN_RGB):
    """Class labels or probabilities at the input size, averaged over scales and flips.

    With ``scales=(1.0,)`` and no flip this is exactly single-scale inference: the labels are the
    argmax of the model's logits. Runs eagerly or inside `tf.function`, also traced with dynamic
    shapes ([None, None, None, 3]).

    Args:
        model: callable ``model(images, training=False)`` -> logits [B, h, w, C].
        images: [B, H, W, 3] RGB in 0..255 (cast to float32).
        scales: input scales; each is resized to `scaled_size` (paper: 0.5, 0.75, ..., 1.75).
        flip: also run the left-right flipped images and average them in.
        output: "labels" (int32 [B, H, W]) or "probabilities" (float32 [B, H, W, C]).
        window_size: if set, run the model on overlapping tiles of this size
            (`sliding_window_logits`) instead of the whole (scaled) image.
        eval_crop_size: (height, width) of the canvas the images are padded to (`pad_to_canvas`)
            before anything else, the original evaluation protocol; the result is cropped back to the
            input size. Ints, or an int32 tensor [2] (a canvas per image: `canvas_for`). None runs
            the images at their own size.
        pad_value: RGB value of the canvas padding: the model backbone's `resnet.pad_value`.
    """
    if output not in ("labels", "probabilities"):
        raise ValueError(f"output must be 'labels' or 'probabilities', got {output!r}")
    if not scales or any(scale <= 0 for scale in scales):
        raise ValueError(f"scales must be positive numbers, got {scales!r}")
    images = tf.cast(images, tf.float32)
    size = tf.shape(images)[1:3]
    if eval_crop_size is not None:
        if not tf.is_tensor(eval_crop_size) and (len(eval_crop_size) != 2 or min(eval_crop_size) <= 0):
            raise ValueError(f"eval_crop_size must be (height, width) in pixels, got {eval_crop_size!r}")
        on_canvas = predict(model, pad_to_canvas(images, eval_crop_size, pad_value), scales=scales, flip=flip,
                            output=output, window_size=window_size)
        cropped = on_canvas[:, :size[0], :size[1]]
        cropped.set_shape(images.shape[:3].concatenate(on_canvas.shape[3:]))
        return cropped

    def run(inputs):
        if window_size is None:
            return tf.cast(model(inputs, training=False), tf.float32)
        return sliding_window_logits(model, inputs, window_size=window_size)

    passes = []
    for scale in scales:
        scaled = images if scale == 1.0 else resize_bilinear(images, scaled_size(size, scale))
        passes.append(run(scaled))
        if flip:
            passes.append(tf.reverse(run(tf.reverse(scaled, axis=[2])), axis=[2]))
    logits = [resize_bilinear(pass_logits, size) for pass_logits in passes]

    if output == "labels" and len(logits) == 1:
        # Softmax is monotonic; skipping it keeps single-scale labels bit-exact (no rounding ties).
        return tf.argmax(logits[0], axis=-1, output_type=tf.int32)
    probabilities = tf.add_n([tf.nn.softmax(x) for x in logits]) / len(logits)
    if output == "probabilities":
        return probabilities
    return tf.argmax(probabilities, axis=-1, output_type=tf.int32)
