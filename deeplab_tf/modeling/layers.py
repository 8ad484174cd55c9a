"""Small layers the DeepLabv3 network is built from."""

import math
import os
import time

import keras
import tensorflow as tf


def same_padding(kernel_size, rate):
    """Symmetric explicit padding of TF-slim's `conv2d_same` for a kernel dilated by `rate`.

    Padding (k_eff - 1) // 2 before and the rest after, independently of the input size, is what makes
    a strided convolution sample the same pixel centres as the dense one: the OS-16 feature map's
    every 2nd pixel then equals the OS-32 map (paper section 3.1).
    """
    effective = kernel_size + (kernel_size - 1) * (rate - 1)
    total = effective - 1
    return total // 2, total - total // 2


def _tap_window(length, offset):
    """Where a kernel tap shifted by `offset` reads and writes along one axis of a 'SAME' convolution.

    Returns (input start, window length, output start), or None when the tap reads only padding.
    Works on Python ints (static shapes) and on scalar tensors (dynamic shapes).
    """
    if isinstance(length, int):
        if abs(offset) >= length:
            return None
        return max(offset, 0), length - abs(offset), max(-offset, 0)
    return (tf.minimum(max(offset, 0), length), tf.maximum(length - abs(offset), 0),
            tf.minimum(max(-offset, 0), length))


def _taps(inputs, size, rate):
    """(i, j, input window, output window, paddings) of each tap of a k x k kernel dilated by `rate`.

    With stride 1 and symmetric `conv2d_same` padding, tap (i, j) multiplies the input shifted by
    ((i - c) * rate, (j - c) * rate), c the centre; its window is the part of the output that shift
    keeps inside the input; the paddings place that window in the full output.
    """
    height, width = (inputs.shape[a] if inputs.shape[a] is not None else tf.shape(inputs)[a] for a in (1, 2))
    centre = (size - 1) // 2
    for i in range(size):
        rows = _tap_window(height, (i - centre) * rate)
        for j in range(size):
            cols = _tap_window(width, (j - centre) * rate)
            if rows is None or cols is None:
                continue
            source = (slice(None), slice(rows[0], rows[0] + rows[1]), slice(cols[0], cols[0] + cols[1]))
            target = (slice(None), slice(rows[2], rows[2] + rows[1]), slice(cols[2], cols[2] + cols[1]))
            target_padding = [[0, 0], [rows[2], height - rows[1] - rows[2]],
                              [cols[2], width - cols[1] - cols[2]], [0, 0]]
            source_padding = [[0, 0], [rows[0], height - rows[1] - rows[0]],
                              [cols[0], width - cols[1] - cols[0]], [0, 0]]
            yield i, j, source, target, source_padding, target_padding


def _pointwise(inputs, matrix):
    """1x1 convolution as a matmul (oneDNN's Conv2D returns a wrong shape on an empty window)."""
    return tf.einsum("bhwc,cf->bhwf", inputs, matrix)


def _taps_forward(x, k, rate):
    """The dilated convolution as the sum of its valid taps' 1x1 products, each placed in the output."""
    return tf.add_n([tf.pad(_pointwise(x[source], k[i, j]), target_padding)
                     for i, j, source, _, _, target_padding in _taps(x, k.shape[0], rate)])


def _direct_forward(x, k, rate):
    """TF's own dilated convolution (oneDNN on CPU; 'SAME' is conv2d_same's symmetric padding here)."""
    return tf.nn.conv2d(x, k, strides=1, padding="SAME", dilations=rate)


# Forward implementation per (dtype, input shape, kernel shape, rate), chosen by timing both once.
_FORWARD_CHOICE = {}
# Below this much work per call the choice is not timed (taps): tests and small images stay deterministic.
AUTOTUNE_MIN_GFLOP = 0.5
# The taps are kept only when timed this much faster: their many small ops lose more than the one
# convolution when the network runs them beside other branches (ASPP's). Here, taps timed 16% faster
# alone (float32, 33x33x512, rate 2) still made R101 steps 2-3% slower in place.
TAPS_ADVANTAGE = 0.75
# "auto" (time both on first use), "taps" or "direct": every atrous forward pass of the process.
ATROUS_FORWARD = os.environ.get("DEEPLAB_TF_ATROUS_FORWARD", "auto")
if ATROUS_FORWARD not in ("auto", "taps", "direct"):
    raise ValueError(f"DEEPLAB_TF_ATROUS_FORWARD={ATROUS_FORWARD!r}: use auto, taps or direct (or unset it).")


def median_seconds(function, *args, repeats=3):
    """Median wall time of `function(*args)` (a tensor result) over `repeats` calls after one warm-up."""
    function(*args).numpy()  # tracing and oneDNN's first-call set-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args).numpy()
        seconds.append(time.perf_counter() - start)
    return sorted(seconds)[repeats // 2]


def atrous_forward(x, k, rate):
    """The faster of `_taps_forward` and `_direct_forward` for this shape, dtype and machine.

    Which one wins depends on the CPU: here (AVX512-BF16, no AMX) oneDNN's dilated kernel was 1.1-2.2x
    faster in bfloat16 and either way in float32, while on a CPU with AMX it was up to 5x slower in
    bfloat16 (ASPP rates). So, as cuDNN's benchmark mode does, each static shape of enough work is timed
    once per process, on the CPU, and the faster kept, the taps only if clearly faster (`TAPS_ADVANTAGE`;
    both compute the same convolution and differ in rounding). DEEPLAB_TF_ATROUS_FORWARD=taps or =direct
    fixes the choice.
    """
    mode = ATROUS_FORWARD
    if mode == "auto":
        # Sizes known only at run time (a serving signature, images at their own size) are timed as
        # one image's feature map at a 513x513 input and output stride 16.
        shape = [1 if x.shape[0] is None else x.shape[0], *(33 if n is None else n for n in x.shape[1:3]), x.shape[3]]
        if (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")
                or 2 * math.prod(shape) * k.shape.num_elements() / k.shape[-2] / 1e9 < AUTOTUNE_MIN_GFLOP):
            mode = "taps"
        else:
            key = (x.dtype.name, tuple(x.shape), tuple(k.shape), rate)
            if key not in _FORWARD_CHOICE:
                with tf.init_scope():  # time eagerly, also when called while a tf.function traces
                    inputs = (tf.random.uniform(shape, dtype=tf.float32), tf.random.uniform(k.shape, -0.1, 0.1))
                    inputs = [tf.cast(t, x.dtype) for t in inputs]
                    seconds = {name: median_seconds(tf.function(lambda a, b, f=f: f(a, b, rate)), *inputs)
                               for name, f in (("taps", _taps_forward), ("direct", _direct_forward))}
                _FORWARD_CHOICE[key] = "taps" if seconds["taps"] < TAPS_ADVANTAGE * seconds["direct"] else "direct"
            mode = _FORWARD_CHOICE[key]
    return (_direct_forward if mode == "direct" else _taps_forward)(x, k, rate)


def _function_of_its_own(custom_gradient_op):
    """`custom_gradient_op` as a `tf.function` of its own, traced once per input signature.

    Each trace of a `tf.custom_gradient` registers its gradient function in TensorFlow for the life of the
    process. Traced inline in a model's function, that registration held the model's whole traced graph and,
    through it, the weights: every training or inference function traced over a model kept ~150 MB after
    both were deleted (R50, 39M weights). In a function of its own it holds this op's small graph only.
    """
    return tf.function(custom_gradient_op, autograph=False)


@_function_of_its_own
def atrous_conv2d(inputs, kernel, rate):
    """Stride-1 convolution dilated by `rate` with `conv2d_same` padding; output size = input size.

    The forward pass is `atrous_forward`'s faster implementation. The gradient is written out, as TF's
    CPU gradients of a dilated Conv2D computed the padding too (2-4x slower here at ASPP rates):
    - input: `atrous_forward` of the output gradient with the kernel turned by 180 degrees and its
      channels swapped (exact for symmetric padding);
    - kernel: for each tap that reads pixels, input window times output-gradient window (one matmul).
    """
    size = kernel.shape[0]

    @tf.custom_gradient
    def convolve(x, k):
        taps = list(_taps(x, size, rate))

        def gradient(dy):
            # With symmetric padding the input gradient is the same dilated convolution of dy with the
            # kernel turned by 180 degrees and its channels swapped.
            dx = atrous_forward(dy, tf.transpose(tf.reverse(k, [0, 1]), [0, 1, 3, 2]), rate)
            dk = [[tf.zeros_like(k[0, 0])] * size for _ in range(size)]
            for i, j, source, target, _, _ in taps:
                dk[i][j] = tf.einsum("bhwc,bhwf->cf", x[source], dy[target])
            return dx, tf.stack([tf.stack(row) for row in dk])

        return atrous_forward(x, k, rate), gradient

    return convolve(inputs, kernel)


@_function_of_its_own
def pointwise_conv2d(inputs, kernel):
    """1x1 stride-1 convolution whose two gradients are plain matmuls over the pixels.

    Input gradient: output gradient x kernel^T; kernel gradient: inputs^T x output gradient. oneDNN's
    convolution backward passes ran these at 0.5-0.9x a matmul's rate here; as matmuls the bfloat16
    R101 training step was 6% faster (float32 unchanged). ResNet's 1x1s carry half of its work.
    """

    @tf.custom_gradient
    def convolve(x, k):
        def gradient(dy):
            channels, filters = k.shape[2], k.shape[3]
            pixels_dy = tf.reshape(dy, [-1, filters])
            dx = tf.reshape(tf.matmul(pixels_dy, k[0, 0], transpose_b=True), tf.shape(x))
            dk = tf.matmul(tf.reshape(x, [-1, channels]), pixels_dy, transpose_a=True)
            return dx, tf.reshape(dk, k.shape)

        return tf.nn.conv2d(x, k, strides=1, padding="VALID"), gradient

    return convolve(inputs, kernel)


@_function_of_its_own
def scale_gradient(x, factor):
    """`x` (a tensor) unchanged in the forward pass; its gradient multiplied by `factor` in the backward pass."""

    @tf.custom_gradient
    def identity(value):
        return tf.identity(value), lambda upstream: upstream * factor

    return identity(x)


@keras.saving.register_keras_serializable(package="deeplab_tf")
class AtrousConv2D(keras.layers.Layer):
    """2-D convolution with stride or atrous rate, without Keras' space-to-batch lowering.

    Keras' `Conv2D(dilation_rate=r)` lowers to SpaceToBatch -> Conv2D -> BatchToSpace, which computes
    padded tiles and was up to 8x slower on CPU for the ASPP shapes; atrous layers here run
    `atrous_conv2d` (per-tap matmuls or TF's dilated kernel, whichever is faster, with a written-out
    gradient) and, in training, 1x1 layers `pointwise_conv2d`. Padding is symmetric as in TF-slim's
    `conv2d_same`.

    Args:
        filters: output channels.
        kernel_size: square kernel size.
        strides: spatial stride (only used with `rate == 1`).
        rate: atrous rate (dilation), paper eq. (1).
        use_bias: add a bias (only the logits layer does; the others are followed by BN).
        kernel_initializer, kernel_regularizer: as in `keras.layers.Conv2D`.
        bias_gradient_multiplier: the bias's gradient is multiplied by this (the bias trains at that
            multiple of the learning rate, in deeplab-train and in Keras `fit` alike); the forward pass
            is unchanged.
    """

    def __init__(self, filters, kernel_size, *, strides=1, rate=1, use_bias=False,
                 kernel_initializer="he_normal", kernel_regularizer=None, bias_gradient_multiplier=1.0,
                 **kwargs):
        super().__init__(**kwargs)
        if strides > 1 and rate > 1:
            raise ValueError("AtrousConv2D: use either a stride or an atrous rate, not both.")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.rate = rate
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_gradient_multiplier = bias_gradient_multiplier

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, input_shape[-1], self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    def call(self, inputs, training=None):
        outputs = self.convolve(inputs, self.kernel, training=training)
        if self.bias is not None:
            bias = self.bias
            if self.bias_gradient_multiplier != 1.0 and training:
                bias = scale_gradient(tf.convert_to_tensor(bias), self.bias_gradient_multiplier)
            outputs = tf.nn.bias_add(outputs, tf.cast(bias, outputs.dtype))
        return outputs

    def convolve(self, inputs, kernel, training=None):
        """This layer's convolution (stride, rate, padding) with `kernel` in place of its own.

        In training, 1x1 convolutions take `pointwise_conv2d`'s faster gradients and atrous ones
        `atrous_conv2d`'s; in inference the forward ops alone (TensorFlow differentiates them too, slower),
        which TensorFlow fuses with the bias and ReLU that follow them.
        """
        kernel = tf.cast(kernel, inputs.dtype)
        if self.rate > 1:
            return atrous_conv2d(inputs, kernel, self.rate) if training else atrous_forward(inputs, kernel, self.rate)
        if self.strides == 1 and self.kernel_size == 1 and training:
            return pointwise_conv2d(inputs, kernel)
        if self.strides == 1:
            return tf.nn.conv2d(inputs, kernel, strides=1, padding="SAME")
        # conv2d_same: pad explicitly, then VALID. Conv2D's own EXPLICIT padding would do the same
        # but its gradients leave oneDNN's kernels (100x slower in bfloat16 here).
        begin, end = same_padding(self.kernel_size, 1)
        if end:
            inputs = tf.pad(inputs, [[0, 0], [begin, end], [begin, end], [0, 0]])
        return tf.nn.conv2d(inputs, kernel, strides=self.strides, padding="VALID")

    def compute_output_shape(self, input_shape):
        def size(n):
            return None if n is None else (n - 1) // self.strides + 1

        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            rate=self.rate,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_gradient_multiplier=self.bias_gradient_multiplier,
        )
        return config


@keras.saving.register_keras_serializable(package="deeplab_tf")
class ConvBN(keras.layers.Layer):
    """AtrousConv2D (no bias) -> BatchNormalization -> optional ReLU: the unit of ResNet and ASPP.

    Sub-layers are named `conv` and `bn` so a TF-slim scope `<name>/weights`, `<name>/BatchNorm/*`
    maps onto them one to one.

    Args:
        filters, kernel_size, strides, rate: of the convolution.
        activation: apply ReLU after BN.
        bn_momentum: moving-average decay of BN (0.9997 in the paper's setup).
        bn_epsilon: BN epsilon (TF-slim ResNet: 1e-5).
        sync_bn: cross-replica BN under a multi-device strategy.
        weight_decay: L2 coefficient of TF-slim's `l2_regularizer` (wd * sum(w^2) / 2).
        fine_tune_batch_norm: in training, normalise with batch statistics and update the moving
            averages; False keeps the moving statistics fixed (the paper's second stage) while gamma
            and beta still train, as the original release's `fine_tune_batch_norm=False` did.
        fold_batch_norm: inference only: no batch norm, a convolution with bias that holds it folded
            (see `deeplab_tf.modeling.folding.fold_batch_norm`).
        kernel_initializer: of the convolution (he_normal as TF-slim's ResNet arg scope; the ASPP head
            passes glorot_uniform, slim's conv2d default the original release left it at).
    """

    def __init__(self, filters, kernel_size, *, strides=1, rate=1, activation=True, bn_momentum=0.9997,
                 bn_epsilon=1e-5, sync_bn=False, weight_decay=0.0, fine_tune_batch_norm=True,
                 fold_batch_norm=False, kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.rate = rate
        self.activation = activation
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.sync_bn = sync_bn
        self.weight_decay = weight_decay
        self.fine_tune_batch_norm = fine_tune_batch_norm
        self.fold_batch_norm = fold_batch_norm
        self.conv = AtrousConv2D(
            filters, kernel_size, strides=strides, rate=rate, use_bias=fold_batch_norm, name="conv",
            kernel_initializer=kernel_initializer,
            kernel_regularizer=keras.regularizers.L2(weight_decay / 2) if weight_decay else None,
        )
        self.bn = None if fold_batch_norm else keras.layers.BatchNormalization(
            momentum=bn_momentum, epsilon=bn_epsilon, synchronized=sync_bn, name="bn")

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.bn is not None:
            self.bn.build(self.conv.compute_output_shape(input_shape))

    def folded_weights(self):
        """(kernel, bias) of the convolution with the batch norm's moving statistics folded in."""
        bn = self.bn
        scale = bn.gamma * tf.math.rsqrt(bn.moving_variance + bn.epsilon)
        return self.conv.kernel * scale, bn.beta - bn.moving_mean * scale

    def call(self, inputs, training=None):
        bn = self.bn
        if bn is None:  # folded: the convolution holds the batch norm already
            outputs = self.conv(inputs)
        elif not training:
            # Inference: batch norm folded into the convolution (kernel * gamma / sigma, plus a bias),
            # which oneDNN fuses with the ReLU; 10% faster in float32 and 25% in bfloat16 than a
            # separate batch-norm op (R101 OS16 here).
            kernel, bias = self.folded_weights()
            outputs = tf.nn.bias_add(self.conv.convolve(inputs, kernel), tf.cast(bias, inputs.dtype))
        elif not (self.fine_tune_batch_norm and bn.trainable):
            # Training with frozen statistics (the paper's second stage): the moving ones.
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=self.conv(inputs), scale=bn.gamma, offset=bn.beta, mean=bn.moving_mean,
                variance=bn.moving_variance, epsilon=bn.epsilon, is_training=False)
        elif self.sync_bn:
            outputs = bn(self.conv(inputs), training=True)
        else:
            # One FusedBatchNorm op and its fused gradient instead of Keras' moments and arithmetic
            # (R101 OS16 training step 5.9 -> 5.4 s in float32, 4.1 -> 2.9 s in bfloat16 here). Like
            # TF-slim's fused batch norm, the moving variance takes the unbiased batch variance.
            empty = tf.constant([], tf.float32)
            outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=self.conv(inputs), scale=bn.gamma, offset=bn.beta, mean=empty, variance=empty,
                epsilon=bn.epsilon, is_training=True)
            bn.moving_mean.assign(bn.moving_mean * bn.momentum + mean * (1.0 - bn.momentum))
            bn.moving_variance.assign(bn.moving_variance * bn.momentum + variance * (1.0 - bn.momentum))
        return tf.nn.relu(outputs) if self.activation else outputs

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, kernel_size=self.kernel_size, strides=self.strides, rate=self.rate,
            activation=self.activation, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
            sync_bn=self.sync_bn, weight_decay=self.weight_decay, fine_tune_batch_norm=self.fine_tune_batch_norm,
            fold_batch_norm=self.fold_batch_norm,
            kernel_initializer=keras.initializers.serialize(self.conv.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="deeplab_tf")
class NormalizeImages(keras.layers.Layer):
    """Images in 0..255 RGB -> (images - mean) / std, the input scaling a backbone's checkpoint expects.

    The pixel `mean` maps to exactly 0, which is why crops and evaluation canvases are padded with it.

    Args:
        mean: per-channel value subtracted (RGB).
        std: divisor applied after the subtraction.
    """

    def __init__(self, mean, std=1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = float(std)

    def call(self, images):
        centred = images - tf.constant(self.mean, dtype=images.dtype)
        return centred if self.std == 1.0 else centred / tf.constant(self.std, dtype=images.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(mean=self.mean, std=self.std)
        return config


def resize_bilinear(images, size):
    """Bilinear resize with corners aligned, as the original release resized logits and features.

    With inputs of size k * output_stride + 1 (513, 769, ...) the feature pixel i then sits exactly on
    input pixel i * output_stride.
    """
    return tf.raw_ops.ResizeBilinear(images=images, size=size, align_corners=True, half_pixel_centers=False)


@keras.saving.register_keras_serializable(package="deeplab_tf")
class ResizeLike(keras.layers.Layer):
    """Bilinearly resizes `inputs` to the spatial size of `reference` (float32 result)."""

    def call(self, inputs, reference):
        return resize_bilinear(tf.cast(inputs, tf.float32), tf.shape(reference)[1:3])

    def compute_output_shape(self, inputs_shape, reference_shape):
        return (inputs_shape[0], reference_shape[1], reference_shape[2], inputs_shape[3])
