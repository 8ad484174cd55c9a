"""The DeepLabv3 network: parameter counts, output strides, atrous rates and section 3.1's equivalence."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.modeling import DeepLabV3, resnet_v1_backbone, unit_specs
from deeplab_tf.modeling.aspp import ASPP, default_atrous_rates
from deeplab_tf.modeling.precision import dtype_policy
from deeplab_tf.modeling.resnet import BottleneckUnit


def _trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def test_parameter_count_matches_reference_implementations():
    # 58,040,661: TF Model Garden's and torchvision's count for R101 + ASPP(256) + 21-class logits.
    model = DeepLabV3(num_classes=21, backbone="resnet_v1_101", output_stride=16)
    assert _trainable_count(model) == 58_040_661
    # The beta stem (3x3 convs 64/2, 64, 128) adds 123,776: its convs and BN minus the 7x7 stem's,
    # plus block1/unit_1 reading 128 instead of 64 channels (conv1 + shortcut).
    beta = DeepLabV3(num_classes=21, backbone="resnet_v1_101_beta", output_stride=16)
    assert _trainable_count(beta) == 58_164_437


@pytest.mark.parametrize("output_stride,size", [(32, 17), (16, 33), (8, 65)])
def test_feature_map_size_at_513(output_stride, size):
    backbone = resnet_v1_backbone("resnet_v1_50", output_stride=output_stride)
    assert backbone(tf.zeros([1, 513, 513, 3])).shape == (1, size, size, 2048)


def test_logits_at_input_size_for_any_size():
    model = DeepLabV3(num_classes=21, backbone="resnet_v1_50", output_stride=16)
    assert model(tf.zeros([1, 513, 513, 3])).shape == (1, 513, 513, 21)
    assert model(tf.zeros([2, 375, 500, 3])).shape == (2, 375, 500, 21)
    assert model(tf.zeros([1, 65, 47, 3])).dtype == tf.float32


def _rates(specs, block):
    return [(s.stride, s.rate) for s in specs if s.block == block]


def test_rates_at_output_stride_16_and_8():
    os16 = unit_specs(101, output_stride=16)
    assert _rates(os16, "block2")[-1] == (2, 1)
    assert _rates(os16, "block3") == [(1, 1)] * 23  # Its stride became the rate of what follows.
    assert _rates(os16, "block4") == [(1, 2)] * 3
    os8 = unit_specs(101, output_stride=8)
    assert _rates(os8, "block1")[-1] == (2, 1)
    assert _rates(os8, "block2") == [(1, 1)] * 4
    assert _rates(os8, "block3") == [(1, 2)] * 23
    assert _rates(os8, "block4") == [(1, 4)] * 3
    os4 = unit_specs(101, output_stride=4)  # Section 4.3, Cityscapes test: every block atrous.
    assert {s.stride for s in os4} == {1}
    assert [_rates(os4, block)[0][1] for block in ("block1", "block2", "block3", "block4")] == [1, 2, 4, 8]
    os32 = unit_specs(50, output_stride=32)
    assert [s.stride for s in os32] == [1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert {s.rate for s in os32} == {1}


def test_rates_with_multi_grid():
    # Section 3.2: output stride 16 and multi-grid (1, 2, 4) give rates 2 * (1, 2, 4) in block4.
    assert _rates(unit_specs(50, output_stride=16, multi_grid=(1, 2, 4)), "block4") == [(1, 2), (1, 4), (1, 8)]
    assert _rates(unit_specs(50, output_stride=8, multi_grid=(1, 2, 4)), "block4") == [(1, 4), (1, 8), (1, 16)]
    assert _rates(unit_specs(50, output_stride=32, multi_grid=(1, 2, 1)), "block4") == [(1, 1), (1, 2), (1, 1)]


def test_rates_with_cascaded_blocks():
    specs = unit_specs(50, output_stride=16, multi_grid=(1, 2, 1), num_cascaded_blocks=3)
    assert [s.block for s in specs[-12:]] == ["block4"] * 3 + ["block5"] * 3 + ["block6"] * 3 + ["block7"] * 3
    # block4's stride (its last unit) now doubles the rate of block5, and so on (Fig. 3(b)).
    assert _rates(specs, "block4") == [(1, 2), (1, 4), (1, 2)]
    assert _rates(specs, "block5") == [(1, 4), (1, 8), (1, 4)]
    assert _rates(specs, "block6") == [(1, 8), (1, 16), (1, 8)]
    assert _rates(specs, "block7") == [(1, 16), (1, 32), (1, 16)]
    # Without atrous convolution the cascade reaches output stride 256 (Table 1), block7 has stride 1.
    plain = unit_specs(50, output_stride=256, num_cascaded_blocks=3)
    assert [s.stride for s in plain[-12:]] == [1, 1, 2] * 3 + [1, 1, 1]
    assert {s.rate for s in plain} == {1}


def test_model_layers_carry_the_specified_rates():
    model = DeepLabV3(num_classes=5, backbone="resnet_v1_50", output_stride=8, multi_grid=(1, 2, 4),
                      num_cascaded_blocks=1)
    units = {layer.name: layer for layer in model.backbone.layers if isinstance(layer, BottleneckUnit)}
    for spec in unit_specs(50, output_stride=8, multi_grid=(1, 2, 4), num_cascaded_blocks=1):
        conv2 = units[spec.name].conv2.conv
        assert (conv2.strides, conv2.rate) == (spec.stride, spec.rate), spec.name
    aspp = model.get_layer("aspp")
    assert [b.conv.rate for b in aspp.branches] == [1, 12, 24, 36]
    assert model.backbone(tf.zeros([1, 65, 65, 3])).shape == (1, 9, 9, 2048)


def test_aspp_rates_follow_output_stride():
    assert default_atrous_rates(16) == (6, 12, 18)
    assert default_atrous_rates(8) == (12, 24, 36)
    assert default_atrous_rates(16, (6, 12, 18, 24)) == (6, 12, 18, 24)
    with pytest.raises(ValueError, match="atrous_rates"):
        default_atrous_rates(64)
    aspp = ASPP((6, 12, 18, 24))  # Table 5's extra rate-24 branch.
    features = tf.random.normal([1, 9, 9, 32])
    assert aspp(features).shape == (1, 9, 9, 256)
    assert len(aspp.branches) == 5


def test_invalid_configurations_are_clear_errors():
    with pytest.raises(ValueError, match="output_stride=64"):
        unit_specs(50, output_stride=64)
    with pytest.raises(ValueError, match="Unknown backbone"):
        DeepLabV3(num_classes=2, backbone="resnet_v2_50")
    with pytest.raises(ValueError, match="Unknown head"):
        DeepLabV3(num_classes=2, backbone="resnet_v1_50", head="psp")
    with pytest.raises(ValueError, match="multi_grid"):
        unit_specs(50, output_stride=256, num_cascaded_blocks=3, multi_grid=(1, 2, 4))


def test_no_space_to_batch_in_the_traced_os8_graph():
    model = DeepLabV3(num_classes=21, backbone="resnet_v1_50", output_stride=8, multi_grid=(1, 2, 4))
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, None, None, 3], tf.float32))
    ops = set()
    for function in [concrete.graph] + [f.graph for f in concrete.graph._functions.values() if hasattr(f, "graph")]:
        ops.update(op.type for op in function.get_operations())
    assert "Conv2D" in ops
    assert not {"SpaceToBatchND", "BatchToSpaceND"} & ops


def _randomize_batch_norm(model, seed=0):
    """Random BN statistics so that inference mode is a real test, not an identity."""
    rng = np.random.default_rng(seed)
    for variable in model.non_trainable_variables:
        if "moving_mean" in variable.path:
            variable.assign(rng.normal(0, 0.1, variable.shape).astype(np.float32))
        elif "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype(np.float32))


@pytest.mark.parametrize("multi_grid", [None, (1, 2, 4)])
def test_atrous_equivalence_with_output_stride_32(multi_grid):
    """Section 3.1: atrous convolution computes the OS-32 responses densely, exactly."""
    images = tf.random.uniform([1, 513, 513, 3], 0, 255, seed=1)
    reference = resnet_v1_backbone("resnet_v1_50", output_stride=32, multi_grid=multi_grid)
    _randomize_batch_norm(reference)
    coarse = reference(images, training=False).numpy()
    scale = np.abs(coarse).max()
    for output_stride in (16, 8):
        dense_model = resnet_v1_backbone("resnet_v1_50", output_stride=output_stride, multi_grid=multi_grid)
        dense_model.set_weights(reference.get_weights())
        dense = dense_model(images, training=False).numpy()
        step = 32 // output_stride
        assert dense.shape[1] == (coarse.shape[1] - 1) * step + 1
        np.testing.assert_allclose(dense[:, ::step, ::step], coarse, atol=1e-4 * scale)


def test_weights_trained_at_os16_load_at_os8(tmp_path):
    trained = DeepLabV3(num_classes=3, backbone="resnet_v1_50", output_stride=16)
    _randomize_batch_norm(trained)
    path = tf.train.Checkpoint(model=trained).save(str(tmp_path / "ckpt"))
    evaluated = DeepLabV3(num_classes=3, backbone="resnet_v1_50", output_stride=8)
    tf.train.Checkpoint(model=evaluated).restore(path).assert_existing_objects_matched()
    for a, b in zip(trained.weights, evaluated.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert evaluated.get_layer("aspp").atrous_rates == (12, 24, 36)


def test_config_round_trip_and_cascade_head():
    model = DeepLabV3(num_classes=4, backbone="resnet_v1_50_beta", output_stride=64, num_cascaded_blocks=2,
                      head="cascade", multi_grid=(1, 2, 1), weight_decay=1e-4)
    clone = DeepLabV3.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert len(clone.weights) == len(model.weights)
    assert model(tf.zeros([1, 97, 97, 3])).shape == (1, 97, 97, 4)
    # One L2 term per convolution kernel (backbone + logits), TF-slim's wd * sum(w^2) / 2.
    kernels = [v for v in model.trainable_weights if v.path.endswith("kernel")]
    assert len(model.losses) == len(kernels)
    expected = sum(1e-4 * float(tf.reduce_sum(k ** 2)) / 2 for k in kernels)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-4)


def assert_same_convolution(ours, reference, x, k, dy, dynamic=False):
    """ours(x, k) equals reference(x, k) in value and in both gradients (for output gradient dy), also
    traced with the batch and spatial size unknown until run time when `dynamic`."""

    def values_and_gradients(x, k, dy):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, k])
            outputs = [ours(x, k), reference(x, k)]
        return outputs, [tape.gradient(y, [x, k], output_gradients=dy) for y in outputs]

    if dynamic:
        values_and_gradients = tf.function(values_and_gradients, input_signature=[
            tf.TensorSpec([None, None, None, x.shape[-1]]), tf.TensorSpec(k.shape),
            tf.TensorSpec([None, None, None, dy.shape[-1]])])
    (value, expected), (gradients, expected_gradients) = values_and_gradients(x, k, dy)
    np.testing.assert_allclose(value, expected, atol=1e-5)
    for a, b in zip(gradients, expected_gradients):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("shape,rate", [((9, 9), 2), ((10, 7), 3), ((13, 13), 6), ((5, 6), 4), ((5, 6), 6),
                                        ((4, 9), 5)])
def test_atrous_conv_values_and_gradients_match_tensorflow(shape, rate, dynamic):
    """The sum-of-taps dilated conv and its written-out gradient equal tf.nn.convolution's, also when
    taps read only padding (rate >= size) and when the spatial size is only known at run time."""
    from deeplab_tf.modeling.layers import atrous_conv2d

    x = tf.random.normal([2, *shape, 3], seed=1)
    k = tf.random.normal([3, 3, 3, 4], seed=2)
    dy = tf.random.normal([2, *shape, 4], seed=3)

    assert_same_convolution(lambda x, k: atrous_conv2d(x, k, rate),
                            lambda x, k: tf.nn.convolution(x, k, padding="SAME", dilations=rate), x, k, dy, dynamic)


@pytest.mark.parametrize("mode", ["taps", "direct", "auto"])
def test_atrous_forward_implementations_agree(monkeypatch, mode):
    """Both forward implementations (and the timed choice between them) give tf.nn.convolution's
    values and gradients (the input gradient is a forward pass too), ASPP-like rates included; "auto"
    records its choice once per shape, also for one known only at run time."""
    from deeplab_tf.modeling import layers

    monkeypatch.setattr(layers, "ATROUS_FORWARD", mode)
    monkeypatch.setattr(layers, "AUTOTUNE_MIN_GFLOP", 0.0)
    monkeypatch.setattr(layers, "_FORWARD_CHOICE", {})
    # The mode is read when atrous_conv2d traces, and its traces are kept: start from none.
    monkeypatch.setattr(layers, "atrous_conv2d", tf.function(layers.atrous_conv2d.python_function, autograph=False))
    for shape, rate in (((9, 9), 2), ((13, 11), 6), ((5, 6), 6)):
        x = tf.random.normal([2, *shape, 8], seed=1)
        k = tf.random.normal([3, 3, 8, 4], seed=2)
        assert_same_convolution(lambda x, k: layers.atrous_conv2d(x, k, rate),
                                lambda x, k: tf.nn.convolution(x, k, padding="SAME", dilations=rate),
                                x, k, tf.random.normal([2, *shape, 4], seed=4))
    k = tf.random.normal([3, 3, 8, 4], seed=2)
    dynamic = tf.function(lambda x: layers.atrous_forward(x, k, 2),
                          input_signature=[tf.TensorSpec([None, None, None, 8])])
    x = tf.random.normal([1, 7, 7, 8], seed=3)
    np.testing.assert_allclose(dynamic(x), tf.nn.convolution(x, k, padding="SAME", dilations=2), atol=1e-5)
    if mode == "auto":
        assert sorted(layers._FORWARD_CHOICE, key=str) == sorted([
            ("float32", (2, *shape, channels), (3, 3, channels, filters), rate)
            for shape, rate in (((9, 9), 2), ((13, 11), 6), ((5, 6), 6)) for channels, filters in ((8, 4), (4, 8))
        ] + [("float32", (None, None, None, 8), (3, 3, 8, 4), 2)], key=str)
        assert set(layers._FORWARD_CHOICE.values()) <= {"taps", "direct"}
    else:
        assert not layers._FORWARD_CHOICE


def test_atrous_forward_setting_is_checked():
    """A wrong DEEPLAB_TF_ATROUS_FORWARD stops the import with one line naming the variable."""
    result = subprocess.run([sys.executable, "-c", "import deeplab_tf.modeling.layers"], capture_output=True, text=True,
                            env=dict(os.environ, DEEPLAB_TF_ATROUS_FORWARD="fast"))
    assert result.returncode != 0
    assert "DEEPLAB_TF_ATROUS_FORWARD='fast': use auto, taps or direct" in result.stderr


@pytest.mark.parametrize("dynamic", [False, True])
def test_pointwise_conv_gradients_match_tensorflow(dynamic):
    """The 1x1 convolution's matmul gradients (training's path) equal tf.nn.conv2d's own, also when the
    batch and spatial size are only known at run time; AtrousConv2D takes that path only in training."""
    from deeplab_tf.modeling.layers import AtrousConv2D, pointwise_conv2d

    x = tf.random.normal([2, 7, 5, 6], seed=1)
    k = tf.random.normal([1, 1, 6, 4], seed=2)
    dy = tf.random.normal([2, 7, 5, 4], seed=3)

    assert_same_convolution(pointwise_conv2d, lambda x, k: tf.nn.conv2d(x, k, strides=1, padding="SAME"),
                            x, k, dy, dynamic)

    layer = AtrousConv2D(4, 1)
    layer.build(x.shape)
    for training in (True, False):
        graph = tf.function(lambda x: layer(x, training=training)).get_concrete_function(x).graph.as_graph_def()
        # custom_gradient's op, in the function of its own that pointwise_conv2d is
        nodes = [node for function in graph.library.function for node in function.node_def]
        assert any(node.op == "IdentityN" for node in nodes) == training


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_conv_bn_fused_training_matches_keras_batch_norm(precision):
    """ConvBN's fused training path normalises as keras BatchNormalization does and moves the averages
    by the momentum, with the unbiased batch variance (TF-slim's fused batch norm)."""
    from deeplab_tf.modeling.layers import ConvBN

    with dtype_policy(precision):
        layer = ConvBN(8, 3, rate=2, bn_momentum=0.9)
    x = tf.random.normal([2, 9, 9, 4], seed=4)
    layer.build(x.shape)
    layer.bn.gamma.assign(tf.random.uniform([8], 0.5, 1.5, seed=5))
    layer.bn.beta.assign(tf.random.normal([8], seed=6))
    features = tf.cast(layer.conv(x), tf.float32).numpy()
    reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype="float32")
    reference.build(features.shape)
    reference.set_weights(layer.bn.get_weights())
    expected = np.maximum(reference(features, training=True).numpy(), 0)
    with tf.GradientTape() as tape:
        outputs = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(outputs, tf.float32))
    tolerance = 1e-4 if precision == "float32" else 5e-2
    np.testing.assert_allclose(tf.cast(outputs, tf.float32), expected, atol=tolerance)
    n = 2 * 9 * 9
    np.testing.assert_allclose(layer.bn.moving_mean, 0.1 * features.mean(axis=(0, 1, 2)), atol=tolerance)
    np.testing.assert_allclose(layer.bn.moving_variance, 0.9 + 0.1 * features.var(axis=(0, 1, 2)) * n / (n - 1),
                               rtol=tolerance)
    assert all(g is not None for g in tape.gradient(loss, layer.trainable_variables))


@pytest.mark.parametrize("precision, tolerance", [("float32", 1e-5), ("mixed_bfloat16", 3e-2)])
def test_folded_batch_norm_gives_the_inference_logits(precision, tolerance):
    """fold_batch_norm's copy computes model(x, training=False) of the float32 model, up to the
    precision's rounding, with no batch norm left."""
    from deeplab_tf.modeling.folding import fold_batch_norm

    keras.utils.set_random_seed(3)
    reference = DeepLabV3(num_classes=5, backbone="resnet_v1_50_beta", output_stride=8, multi_grid=(1, 2, 4))
    for variable in reference.variables:  # statistics far from the initial ones, so the fold matters
        if variable.path.endswith(("gamma", "beta", "moving_mean", "moving_variance")):
            variable.assign(tf.random.uniform(variable.shape, 0.5, 1.5))
    with dtype_policy(precision):
        model = DeepLabV3.from_config(reference.get_config())
    model.set_weights(reference.get_weights())
    folded = fold_batch_norm(model)
    images = tf.random.uniform([2, 49, 57, 3], 0, 255, seed=7)
    expected = reference(images, training=False).numpy()
    np.testing.assert_allclose(folded(images).numpy(), expected, atol=tolerance * np.abs(expected).max())
    assert folded.get_config() == {**model.get_config(), "fold_batch_norm": True}
    stored = "bfloat16" if precision == "mixed_bfloat16" else "float32"  # no float32 master weights
    assert folded.dtype_policy.name == stored and folded.get_layer("logits").variable_dtype == "float32"
    assert {v.dtype for v in folded.trainable_variables if "logits" not in v.path} == {stored}
    assert not [v.path for v in folded.variables if "moving" in v.path or v.path.endswith(("gamma", "beta"))]
    assert folded.count_params() == model.count_params() - sum(
        v.numpy().size for v in model.variables if v.path.endswith(("moving_mean", "moving_variance", "gamma")))
    assert fold_batch_norm(folded) is folded


def test_tracing_another_model_registers_no_gradient_function():
    """Each trace of a `tf.custom_gradient` registers its gradient function for the life of the process, holding
    the graph it was traced in. Traced inline, that kept every traced model's weights alive (~150 MB per training
    or inference function of R50 after model and function were deleted); as functions of their own, the custom
    gradients register once per input signature, and a second model's traces register none."""
    from tensorflow.python.framework import ops

    def trace(model):
        def train_step(images):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(images, training=True))
            return tape.gradient(loss, model.trainable_variables)

        tf.function(train_step).get_concrete_function(tf.TensorSpec([2, 33, 33, 3]))
        tf.function(lambda images: model(images, training=False)).get_concrete_function(tf.TensorSpec([1, 33, 33, 3]))

    trace(DeepLabV3(num_classes=3, backbone="resnet_v1_50", output_stride=16))
    registered = len(ops._gradient_registry.list())
    trace(DeepLabV3(num_classes=3, backbone="resnet_v1_50", output_stride=16))
    assert len(ops._gradient_registry.list()) == registered
