"""Small layers the DeepLabv3 network is built from."""

import keras
import tensorflow as tf

from deeplab_tf.constants import MEAN_RGB


def same_padding(kernel_size, rate):
    """Symmetric explicit padding of TF-slim's `conv2d_same` for a kernel dilated by `rate`.

    Padding (k_eff - 1) // 2 before and the rest after, independently of the input size, is what makes
    a strided convolution sample the same pixel centres as the dense one: the OS-16 feature map's
    every 2nd pixel then equals the OS-32 map (paper section 3.1).
    """
    effective = kernel_size + (kernel_size - 1) * (rate - 1)
    total = effective - 1
    return total // 2, total - total // 2


def atrous_conv2d(inputs, kernel, rate):
    """Stride-1 convolution dilated by `rate` with `conv2d_same` padding; output size = input size.

    The forward pass is one direct Conv2D op with dilations. TF's CPU kernels cannot back-propagate a
    dilated Conv2D, and the space-to-batch form they fall back to is very slow when the rate nears
    the feature size (ASPP on small crops), so the gradient is written out:
    - input: the same dilated convolution of dy with the flipped, transposed kernel (padding is
      symmetric at stride 1, so the transpose needs no other padding);
    - kernel: for each tap, the shifted window of the padded input times dy (one matmul per tap).
    Both cost about one forward pass. At stride 1 "SAME" is the symmetric `conv2d_same` padding.
    """
    size = kernel.shape[0]
    begin, end = same_padding(size, rate)

    @tf.custom_gradient
    def convolve(x, k):
        y = tf.nn.conv2d(x, k, strides=1, padding="SAME", dilations=rate)

        def gradient(dy):
            flipped = tf.transpose(tf.reverse(k, axis=[0, 1]), [0, 1, 3, 2])
            dx = tf.nn.conv2d(dy, flipped, strides=1, padding="SAME", dilations=rate)
            padded = tf.pad(x, [[0, 0], [begin, end], [begin, end], [0, 0]])
            height, width = tf.shape(x)[1], tf.shape(x)[2]
            taps = [
                tf.einsum("bhwc,bhwf->cf",
                          padded[:, i * rate:i * rate + height, j * rate:j * rate + width, :], dy)
                for i in range(size) for j in range(size)
            ]
            return dx, tf.reshape(tf.stack(taps), tf.shape(k))

        return y, gradient

    return convolve(inputs, kernel)


@keras.saving.register_keras_serializable(package="deeplab_tf")
class AtrousConv2D(keras.layers.Layer):
    """2-D convolution with stride or atrous rate, on the direct `tf.nn.conv2d(dilations=r)` path.

    Keras' `Conv2D(dilation_rate=r)` lowers to SpaceToBatch -> Conv2D -> BatchToSpace, which computes
    padded tiles and was up to 8x slower on CPU for the ASPP shapes; TF's Conv2D kernel takes the
    dilation directly. Padding is explicit and symmetric as in TF-slim's `conv2d_same`.

    Args:
        filters: output channels.
        kernel_size: square kernel size.
        strides: spatial stride (only used with `rate == 1`).
        rate: atrous rate (dilation), paper eq. (1).
        use_bias: add a bias (only the logits layer does; the others are followed by BN).
        kernel_initializer, kernel_regularizer: as in `keras.layers.Conv2D`.
    """

    def __init__(self, filters, kernel_size, *, strides=1, rate=1, use_bias=False,
                 kernel_initializer="he_normal", kernel_regularizer=None, **kwargs):
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

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, input_shape[-1], self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    def call(self, inputs):
        kernel = tf.cast(self.kernel, inputs.dtype)
        if self.rate > 1:
            outputs = atrous_conv2d(inputs, kernel, self.rate)
        elif self.strides == 1:
            outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding="SAME")
        else:
            # conv2d_same: pad explicitly, then VALID. Conv2D's own EXPLICIT padding would do the same
            # but its gradients leave oneDNN's kernels (100x slower in bfloat16 here).
            begin, end = same_padding(self.kernel_size, 1)
            if end:
                inputs = tf.pad(inputs, [[0, 0], [begin, end], [begin, end], [0, 0]])
            outputs = tf.nn.conv2d(inputs, kernel, strides=self.strides, padding="VALID")
        if self.bias is not None:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        return outputs

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
    """

    def __init__(self, filters, kernel_size, *, strides=1, rate=1, activation=True, bn_momentum=0.9997,
                 bn_epsilon=1e-5, sync_bn=False, weight_decay=0.0, fine_tune_batch_norm=True, **kwargs):
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
        self.conv = AtrousConv2D(
            filters, kernel_size, strides=strides, rate=rate, name="conv",
            kernel_regularizer=keras.regularizers.L2(weight_decay / 2) if weight_decay else None,
        )
        self.bn = keras.layers.BatchNormalization(
            momentum=bn_momentum, epsilon=bn_epsilon, synchronized=sync_bn, name="bn")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        outputs = self.conv(inputs)
        if training and self.fine_tune_batch_norm and self.bn.trainable:
            outputs = self.bn(outputs, training=True)
        else:
            # Inference (or frozen statistics): one FusedBatchNorm op with the moving statistics, which
            # Grappler fuses with the convolution and the ReLU on CPU.
            bn = self.bn
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=outputs, scale=bn.gamma, offset=bn.beta, mean=bn.moving_mean,
                variance=bn.moving_variance, epsilon=bn.epsilon, is_training=False)
        return tf.nn.relu(outputs) if self.activation else outputs

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, kernel_size=self.kernel_size, strides=self.strides, rate=self.rate,
            activation=self.activation, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
            sync_bn=self.sync_bn, weight_decay=self.weight_decay, fine_tune_batch_norm=self.fine_tune_batch_norm,
        )
        return config


@keras.saving.register_keras_serializable(package="deeplab_tf")
class SubtractMean(keras.layers.Layer):
    """Images in 0..255 RGB -> minus the ImageNet mean the ResNet checkpoints were trained with."""

    def call(self, images):
        return images - tf.constant(MEAN_RGB, dtype=images.dtype)


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
