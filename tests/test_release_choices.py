"""Where the paper is silent the original release decides: initialisers and the bias gradient multiplier."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.modeling import DeepLabV3
from deeplab_tf.training.losses import segmentation_loss_terms
from deeplab_tf.training.step import make_train_step


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return DeepLabV3(num_classes=3, backbone="resnet_v1_50", output_stride=32, dropout_rate=0.0)


def _initializer(conv_bn):
    return keras.initializers.serialize(conv_bn.conv.kernel_initializer)


def test_aspp_is_glorot_uniform_logits_truncated_normal_backbone_he_normal(model):
    aspp = model.get_layer("aspp")
    for layer in aspp.branches + [aspp.pooling_conv, aspp.projection]:
        assert _initializer(layer)["class_name"] == "GlorotUniform", layer.name
        # Serialised with the layer, so a saved model rebuilds with the same initialiser.
        assert layer.get_config()["kernel_initializer"]["class_name"] == "GlorotUniform"
    logits = model.get_layer("logits")
    assert keras.initializers.serialize(logits.kernel_initializer)["class_name"] == "TruncatedNormal"
    assert logits.kernel_initializer.stddev == 0.01
    np.testing.assert_array_equal(logits.bias.numpy(), 0.0)
    assert _initializer(model.backbone.get_layer("block1_unit_1").conv2)["class_name"] == "HeNormal"
    # Glorot uniform's bound sqrt(6 / (fan_in + fan_out)) holds, and the draw is not He's wider normal.
    kernel = aspp.aspp1.conv.kernel.numpy()
    bound = np.sqrt(6.0 / (9 * 2048 + 9 * 256))
    assert np.abs(kernel).max() <= bound
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3.0), rtol=0.02)


def test_sgd_step_doubles_the_bias_gradient_only(model):
    """The logits bias moves by 2x its plain gradient (the loss's gradient with respect to the logits
    layer's output, summed over pixels); the logits kernel and a batch-norm beta move by 1x. The model
    carries the multiplier, so deeplab-train's step and Keras fit both apply it."""
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (2, 33, 33, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 3, (2, 33, 33)), tf.int32)
    before = {v.path: v.numpy() for v in model.trainable_variables}
    with_logits = keras.Model(model.inputs, [model.outputs[0], model.get_layer("logits").output])
    with tf.GradientTape() as tape:
        outputs, logits = with_logits(images, training=True)
        loss_sum, num_pixels = segmentation_loss_terms(labels, outputs)
        loss = loss_sum / num_pixels
    gradients = tape.gradient(loss, model.trainable_variables + [logits])
    plain = {v.path: g.numpy() for v, g in zip(model.trainable_variables, gradients)}
    plain_bias = tf.reduce_sum(gradients[-1], axis=[0, 1, 2]).numpy()

    learning_rate = 0.5
    optimizer = keras.optimizers.SGD(learning_rate)
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, global_step=tf.Variable(0, dtype=tf.int64))
    step(images, labels)
    applied = {v.path: (before[v.path] - v.numpy()) / learning_rate for v in model.trainable_variables}

    bias, kernel, beta = "logits/bias", "logits/kernel", "aspp/projection/bn/beta"
    assert np.abs(plain_bias).max() > 1e-3
    np.testing.assert_allclose(plain[bias], 2.0 * plain_bias, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(applied[bias], 2.0 * plain_bias, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(applied[kernel], plain[kernel], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(applied[beta], plain[beta], rtol=1e-4, atol=1e-7)
    assert [p for p in plain if p.endswith("/bias")] == [bias]
