"""Our backbone against TF-slim's own resnet_v1 code: a checkpoint slim writes loads with no unused or missing
variable, and the block4 features match slim's at output stride 32, 16 and 8, for the plain and the `_beta`
stems, with multi-grid, under non-trivial batch-norm statistics.

Slim runs in tf.compat.v1 graph mode. tf-slim 1.1 under TF 2.21 needs `ops.Tensor` aliased to `tf.Tensor`
before import, and `updates_collections=None` on batch norm to stay on its own fused path.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import ops

if not hasattr(ops, "Tensor"):
    ops.Tensor = tf.Tensor
import tf_slim as slim  # noqa: E402
from tf_slim.nets import resnet_utils, resnet_v1  # noqa: E402

from deeplab_tf.modeling.checkpoints import load_slim_backbone  # noqa: E402
from deeplab_tf.modeling.resnet import resnet_v1_backbone  # noqa: E402

SIZE = 65  # 32k + 1: pixel centres stay aligned at every output stride.
SCOPE = "resnet_v1_50"


@slim.add_arg_scope
def _multi_grid_bottleneck(inputs, depth, depth_bottleneck, stride, unit_rate=1, rate=1, outputs_collections=None):
    """Slim's own bottleneck with the unit's multi-grid rate applied, as the release's resnet_v1_beta does."""
    return resnet_v1.bottleneck(inputs, depth, depth_bottleneck, stride, rate=rate * unit_rate,
                                outputs_collections=outputs_collections)


def _blocks(multi_grid):
    """resnet_v1_50's blocks from slim's own helpers; block4's three units carry the multi-grid rates."""
    blocks = [resnet_v1.resnet_v1_block(f"block{i + 1}", base_depth=base, num_units=units, stride=2)
              for i, (base, units) in enumerate([(64, 3), (128, 4), (256, 6)])]
    units = [dict(depth=2048, depth_bottleneck=512, stride=1, unit_rate=rate) for rate in multi_grid]
    return blocks + [resnet_utils.Block("block4", _multi_grid_bottleneck, units)]


def _beta_root_block(net):
    """The release's resnet_v1_*_beta root: three 3x3 convs (64/2, 64, 128) named conv1_1..conv1_3, max pool."""
    net = resnet_utils.conv2d_same(net, 64, 3, stride=2, scope="conv1_1")
    net = resnet_utils.conv2d_same(net, 64, 3, stride=1, scope="conv1_2")
    net = resnet_utils.conv2d_same(net, 128, 3, stride=1, scope="conv1_3")
    return slim.max_pool2d(net, 3, stride=2, padding="SAME", scope="pool1")


def _slim_resnet_v1_50(inputs, *, beta, output_stride, multi_grid):
    """Slim's block4 features: its resnet_v1_50 itself for the plain stem without multi-grid, else slim's
    resnet_v1 generator on the blocks above (after the beta root block, as the release builds it)."""
    # Slim's ResNet arg scope, its batch norm in inference mode (the beta root block is outside resnet_v1's
    # is_training scope) and moved off the Keras-layer path (which imports tf_keras).
    batch_norm = dict(decay=0.997, epsilon=1e-5, scale=True, updates_collections=None, is_training=False)
    with slim.arg_scope(resnet_utils.resnet_arg_scope()), slim.arg_scope([slim.conv2d], normalizer_params=batch_norm):
        if not beta and multi_grid is None:
            return resnet_v1.resnet_v1_50(inputs, is_training=False, global_pool=False,
                                          output_stride=output_stride, scope=SCOPE)[0]
        blocks = _blocks(multi_grid or (1, 1, 1))
        if not beta:
            return resnet_v1.resnet_v1(inputs, blocks, is_training=False, global_pool=False,
                                       output_stride=output_stride, scope=SCOPE)[0]
        with tf.compat.v1.variable_scope(SCOPE):
            net = _beta_root_block(inputs)
        return resnet_v1.resnet_v1(net, blocks, is_training=False, global_pool=False, include_root_block=False,
                                   output_stride=output_stride // 4, scope=SCOPE)[0]


def _randomise_batch_norm(session, seed):
    """Moving statistics, gamma and beta away from their initial 0/1 so a mis-mapped one shows."""
    rng = np.random.default_rng(seed)
    draws = {"moving_mean": lambda n: rng.normal(0, 0.2, n), "moving_variance": lambda n: rng.uniform(0.5, 2.0, n),
             "gamma": lambda n: rng.uniform(0.5, 1.5, n), "beta": lambda n: rng.normal(0, 0.2, n)}
    for variable in tf.compat.v1.global_variables():
        kind = variable.op.name.rsplit("/", 1)[-1]
        if "/BatchNorm/" in variable.op.name and kind in draws:
            variable.load(draws[kind](variable.shape[0]).astype(np.float32), session)


def _run_slim(normalized, checkpoint, *, beta, output_stride, multi_grid):
    """Slim's features for `normalized` images; writes `checkpoint` (random weights and BN) if it is new."""
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(0)
        inputs = tf.compat.v1.placeholder(tf.float32, [None, SIZE, SIZE, 3])
        features = _slim_resnet_v1_50(inputs, beta=beta, output_stride=output_stride, multi_grid=multi_grid)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            if tf.io.gfile.exists(checkpoint + ".index"):
                saver.restore(session, checkpoint)
            else:
                session.run(tf.compat.v1.global_variables_initializer())
                _randomise_batch_norm(session, seed=int(beta))
                saver.save(session, checkpoint, write_meta_graph=False, write_state=False)
            return session.run(features, {inputs: normalized})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tmp_path_factory.mktemp("slim")


CASES = [(beta, output_stride, None) for beta in (False, True) for output_stride in (32, 16, 8)]
CASES += [(beta, output_stride, (1, 2, 4)) for beta in (False, True) for output_stride in (16, 8)]


@pytest.mark.parametrize("beta,output_stride,multi_grid", CASES)
def test_block4_features_equal_tf_slim(checkpoints, beta, output_stride, multi_grid):
    backbone = resnet_v1_backbone("resnet_v1_50_beta" if beta else "resnet_v1_50", output_stride=output_stride,
                                  multi_grid=multi_grid)
    images = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    # Slim gets the tensor our backbone normalises its 0..255 input to (its first layer after the input).
    normalize = next(layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer))
    normalized = np.asarray(normalize(images))

    checkpoint = str(checkpoints / ("beta.ckpt" if beta else "plain.ckpt"))
    expected = _run_slim(normalized, checkpoint, beta=beta, output_stride=output_stride, multi_grid=multi_grid)
    report = load_slim_backbone(backbone, checkpoint)
    assert report.missing == [] and report.skipped == []
    assert len(report.loaded) == len(tf.train.list_variables(checkpoint)) == len(backbone.weights)

    features = backbone(images, training=False).numpy()
    size = (SIZE - 1) // output_stride + 1
    assert features.shape == expected.shape == (2, size, size, 2048)
    assert expected.std() > 0.1
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
