"""The original DeepLab release's graph, rebuilt with tf_slim in tf.compat.v1 graph mode: the numerical
reference our model, loss, gradients and training step are compared with (tests/test_release_graph.py).

The release is tensorflow/models `research/deeplab` (TF1). What each part follows:
- core/feature_extractor.py: preprocessing (ImageNet mean subtracted for the plain ResNets, [-1, 1] for
  `_beta`), the ResNet arg scope (L2 on every kernel, ReLU, batch norm with epsilon 1e-5 and gamma), the
  backbone's variables under the plain `resnet_v1_*` scope for the `_beta` variants too;
- core/resnet_v1_beta.py: bottleneck units whose 3x3 rate is the block's rate times the unit's multi-grid
  rate, the `_beta` root block (three 3x3 convs), max pool, slim's `stack_blocks_dense` for output stride;
- model.py: image pooling (average over the crop's feature map, 1x1 conv + BN, bilinear resize back) FIRST
  in the concatenation, then `aspp0` (1x1) and `aspp1..` (3x3 atrous), `concat_projection`, dropout, and
  `logits/semantic` (1x1 with biases), resized to the crop's feature size;
- utils/train_utils.py: softmax cross-entropy on logits upsampled (bilinear, corners aligned) to the labels,
  the ignore label weighted 0, top-k hard pixel mining, `get_model_gradient_multipliers` (every `biases` x2),
  the poly learning rate;
- train.py: total loss = cross-entropy + the regularisation losses, `MomentumOptimizer`, gradients multiplied
  then applied with the global step, the batch-norm update ops grouped with the update.

tf-slim 1.1 under TF 2.21 needs `ops.Tensor` aliased to `tf.Tensor` before it is imported.
"""

import dataclasses

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops

if not hasattr(ops, "Tensor"):
    ops.Tensor = tf.Tensor
import tf_slim as slim  # noqa: E402
from tf_slim.nets import resnet_utils, resnet_v1  # noqa: E402

v1 = tf.compat.v1

MEAN_RGB = (123.15, 115.90, 103.06)  # core/feature_extractor.py
ASPP_DEPTH = 256
BLOCK_UNITS = {"resnet_v1_50": (3, 4, 6), "resnet_v1_101": (3, 4, 23)}  # block1..block3; block4 has 3
ASPP_BATCH_NORM_DECAY = 0.9997  # model.py
# slim's batch norm keeps its own fused kernel (no Keras layer, which would import tf_keras) only when
# `updates_collections` is not the UPDATE_OPS key itself: a list holding that key puts the same update
# ops in the same collection, where train.py gathers them.
UPDATE_OPS = [v1.GraphKeys.UPDATE_OPS]


@dataclasses.dataclass(frozen=True)
class ReleaseOptions:
    """The release's flags (train.py / common.py) that shape the graph.

    `backbone_batch_norm_decay` is the release's 0.95 (core/feature_extractor.py); tests that compare moving
    averages set it to our 0.9997, a documented choice (docs/faithfulness.md, "BN decay"). `keep_prob` is 1
    (with our `dropout_rate` 0) because the two sides' dropout draws differ; the release's is 0.9.
    `learning_policy` "constant" keeps `base_learning_rate` (the release's poly with power 0 is the same).
    """

    model_variant: str = "resnet_v1_50_beta"
    output_stride: int = 16
    multi_grid: tuple = (1, 2, 4)
    atrous_rates: tuple = (6, 12, 18)
    image_pooling: bool = True
    num_classes: int = 3
    weight_decay: float = 1e-4
    is_training: bool = False
    fine_tune_batch_norm: bool = True
    top_k_percent_pixels: float = 1.0
    base_learning_rate: float = 0.007
    learning_policy: str = "poly"
    training_number_of_steps: int = 30000
    learning_power: float = 0.9
    momentum: float = 0.9
    backbone_batch_norm_decay: float = 0.95
    keep_prob: float = 1.0
    ignore_label: int = 255

    @property
    def scope(self):
        """The checkpoint scope: `_beta` variants are saved under the plain name."""
        return self.model_variant.replace("_beta", "")


def scale_dimension(size, scale):
    """model.py's size of a `size` input at `scale`: (size - 1) * scale + 1, truncated."""
    return int((float(size) - 1.0) * scale + 1.0)


def _preprocess(images, model_variant):
    if model_variant.endswith("_beta"):
        return (2.0 / 255.0) * images - 1.0
    return images - tf.reshape(tf.constant(MEAN_RGB), [1, 1, 1, 3])


@slim.add_arg_scope
def _bottleneck(inputs, depth, depth_bottleneck, stride, unit_rate=1, rate=1, outputs_collections=None,
                scope=None):
    """slim's bottleneck_v1 with the 3x3 rate multiplied by the unit's multi-grid rate."""
    return resnet_v1.bottleneck(inputs, depth, depth_bottleneck, stride, rate=rate * unit_rate,
                                outputs_collections=outputs_collections, scope=scope)


def _blocks(options):
    """block1..3 with the stride in their last unit, block4 (stride 1) with the multi-grid unit rates."""
    blocks = []
    for i, (base, units) in enumerate(zip((64, 128, 256), BLOCK_UNITS[options.scope])):
        unit = dict(depth=4 * base, depth_bottleneck=base, stride=1, unit_rate=1)
        blocks.append(resnet_utils.Block(f"block{i + 1}", _bottleneck, [unit] * (units - 1) + [dict(unit, stride=2)]))
    block4 = [dict(depth=2048, depth_bottleneck=512, stride=1, unit_rate=rate) for rate in options.multi_grid]
    return blocks + [resnet_utils.Block("block4", _bottleneck, block4)]


def _backbone(images, options):
    """The feature extractor: preprocessing, then the ResNet in its arg scope, to block4."""
    batch_norm = dict(decay=options.backbone_batch_norm_decay, epsilon=1e-5, scale=True,
                      updates_collections=UPDATE_OPS)
    with slim.arg_scope([slim.conv2d], weights_regularizer=slim.l2_regularizer(options.weight_decay),
                        weights_initializer=slim.variance_scaling_initializer(), activation_fn=tf.nn.relu,
                        normalizer_fn=slim.batch_norm, normalizer_params=batch_norm), \
            slim.arg_scope([slim.batch_norm], is_training=options.is_training and options.fine_tune_batch_norm), \
            slim.arg_scope([slim.max_pool2d], padding="SAME"), \
            v1.variable_scope(options.scope):
        net = _preprocess(images, options.model_variant)
        if options.model_variant.endswith("_beta"):
            net = resnet_utils.conv2d_same(net, 64, 3, stride=2, scope="conv1_1")
            net = resnet_utils.conv2d_same(net, 64, 3, stride=1, scope="conv1_2")
            net = resnet_utils.conv2d_same(net, 128, 3, stride=1, scope="conv1_3")
        else:
            net = resnet_utils.conv2d_same(net, 64, 7, stride=2, scope="conv1")
        net = slim.max_pool2d(net, 3, stride=2, scope="pool1")
        # The root block's stride 4 is already taken.
        return resnet_utils.stack_blocks_dense(net, _blocks(options), options.output_stride // 4)


def _aspp(features, options, crop_size):
    """model.py's `_extract_features` head: [image pooling,] aspp0, aspp1.., concat_projection, dropout."""
    batch_norm = dict(is_training=options.is_training and options.fine_tune_batch_norm, decay=ASPP_BATCH_NORM_DECAY,
                      epsilon=1e-5, scale=True, updates_collections=UPDATE_OPS)
    with slim.arg_scope([slim.conv2d], weights_regularizer=slim.l2_regularizer(options.weight_decay),
                        activation_fn=tf.nn.relu, normalizer_fn=slim.batch_norm, padding="SAME", stride=1), \
            slim.arg_scope([slim.batch_norm], **batch_norm):
        branches = []
        if options.image_pooling:
            pool = [scale_dimension(size, 1.0 / options.output_stride) for size in crop_size]
            pooled = slim.avg_pool2d(features, pool, pool, padding="VALID")
            pooled = slim.conv2d(pooled, ASPP_DEPTH, 1, scope="image_pooling")
            branches.append(v1.image.resize_bilinear(pooled, pool, align_corners=True))
        branches.append(slim.conv2d(features, ASPP_DEPTH, 1, scope="aspp0"))
        for i, rate in enumerate(options.atrous_rates, 1):
            branches.append(slim.conv2d(features, ASPP_DEPTH, 3, rate=rate, scope=f"aspp{i}"))
        net = slim.conv2d(tf.concat(branches, 3), ASPP_DEPTH, 1, scope="concat_projection")
        return slim.dropout(net, keep_prob=options.keep_prob, is_training=options.is_training,
                            scope="concat_projection_dropout")


def _logits(images, options, crop_size):
    """Logits at the crop's feature size, as model.py's `multi_scale_logits` returns them for one scale."""
    features = _aspp(_backbone(images, options), options, crop_size)
    with slim.arg_scope([slim.conv2d], weights_regularizer=slim.l2_regularizer(options.weight_decay),
                        weights_initializer=v1.truncated_normal_initializer(stddev=0.01)), \
            v1.variable_scope("logits"):
        logits = slim.conv2d(features, options.num_classes, 1, activation_fn=None, normalizer_fn=None,
                             scope="semantic")
    size = [scale_dimension(s, 1.0 / options.output_stride) for s in crop_size]
    return v1.image.resize_bilinear(logits, size, align_corners=True)


def _cross_entropy(logits, labels, options):
    """train_utils.py's loss: pixel losses of the upsampled logits, weight 0 on the ignore label, optionally
    only the top-k hardest pixels, divided by the number of counted (non-zero for top-k) pixels."""
    logits = v1.image.resize_bilinear(logits, tf.shape(labels)[1:3], align_corners=True)
    labels = tf.reshape(labels, [-1])
    weights = tf.cast(tf.not_equal(labels, options.ignore_label), tf.float32)
    one_hot = tf.one_hot(labels, options.num_classes, on_value=1.0, off_value=0.0)
    pixel_losses = tf.nn.softmax_cross_entropy_with_logits(
        labels=tf.stop_gradient(one_hot), logits=tf.reshape(logits, [-1, options.num_classes])) * weights
    if options.top_k_percent_pixels == 1.0:
        total, present = tf.reduce_sum(pixel_losses), tf.reduce_sum(weights)
    else:
        k = tf.cast(options.top_k_percent_pixels * tf.cast(tf.shape(pixel_losses)[0], tf.float32), tf.int32)
        hardest, _ = tf.nn.top_k(pixel_losses, k=k, sorted=True)
        total, present = tf.reduce_sum(hardest), tf.reduce_sum(tf.cast(tf.not_equal(hardest, 0.0), tf.float32))
    return tf.cast(present > 0, tf.float32) * tf.math.divide(total, tf.maximum(1e-5, present)), pixel_losses


def _learning_rate(options, global_step):
    if options.learning_policy == "constant":
        return tf.constant(options.base_learning_rate)
    return v1.train.polynomial_decay(options.base_learning_rate, global_step,
                                     decay_steps=options.training_number_of_steps, end_learning_rate=0.0,
                                     power=options.learning_power)


class ReleaseGraph:
    """The release's graph in its own tf.Graph and session, for inputs of fixed shapes (batch, height, width),
    each its crop size.

    Several shapes make several towers on the same variables, as model.py's multi-scale evaluation reuses
    them; `images`, `labels` and `logits` (resized to the images, as `predict_labels` does) are the first
    tower's. In training (`options.is_training`, one shape) it also holds the loss, the multiplied gradients
    and train.py's train op.
    """

    def __init__(self, options, *shapes):
        self.options = options
        self.graph = tf.Graph()
        self.towers = []
        with self.graph.as_default():
            v1.set_random_seed(0)
            for i, (batch, height, width) in enumerate(shapes):
                with v1.variable_scope(v1.get_variable_scope(), reuse=True if i else None):
                    images = v1.placeholder(tf.float32, [batch, height, width, 3])
                    labels = v1.placeholder(tf.int32, [batch, height, width, 1])
                    logits = _logits(images, options, (height, width))
                self.towers.append((images, labels, logits,
                                    v1.image.resize_bilinear(logits, [height, width], align_corners=True)))
            self.images, self.labels, _, self.logits = self.towers[0]
            if options.is_training:
                assert len(shapes) == 1, "train.py builds one tower per clone"
                self._build_training(self.towers[0][2])
            self.variables = {v.op.name: v for v in v1.global_variables()}
            self.saver = v1.train.Saver()
        self.session = v1.Session(graph=self.graph)

    def _build_training(self, logits):
        options = self.options
        self.loss, self.pixel_losses = _cross_entropy(logits, self.labels, options)
        self.regularization = v1.losses.get_regularization_loss()
        self.total_loss = self.loss + self.regularization
        self.global_step = v1.train.get_or_create_global_step()
        self.learning_rate = _learning_rate(options, self.global_step)
        optimizer = v1.train.MomentumOptimizer(self.learning_rate, options.momentum)
        # get_model_gradient_multipliers: every `biases` variable's gradient x2 (the last-layer multiplier is 1).
        multipliers = {v.op.name: 2.0 for v in v1.model_variables() if "biases" in v.op.name}
        self.gradients = [(gradient * multipliers.get(variable.op.name, 1.0), variable)
                          for gradient, variable in optimizer.compute_gradients(self.total_loss)]
        update = optimizer.apply_gradients(self.gradients, global_step=self.global_step)
        self.train_op = tf.group(*v1.get_collection(v1.GraphKeys.UPDATE_OPS), update)

    def feed(self, images, labels=None):
        feed = {self.images: np.asarray(images, np.float32)}
        if labels is not None:
            feed[self.labels] = np.asarray(labels, np.int32)[..., None]
        return feed

    def restore(self, checkpoint):
        with self.graph.as_default():
            self.saver.restore(self.session, checkpoint)
        return self

    def assign(self, values):
        """Sets variables from {release name: array} in one run."""
        with self.graph.as_default():
            feeds = {v1.placeholder(self.variables[name].dtype.base_dtype, np.shape(value)): value
                     for name, value in values.items()}
            updates = [self.variables[name].assign(placeholder) for name, placeholder in zip(values, feeds)]
            self.session.run(updates, feeds)

    def values(self):
        """Every variable's value, by release name."""
        return self.session.run(self.variables)

    def close(self):
        self.session.close()


def _batch_statistics(graph, feed):
    """{batch-norm scope: (batch mean, batch variance)} of every training-mode batch norm of the forward pass."""
    ops = {op.name.rsplit("/", 1)[0]: op for op in graph.graph.get_operations()
           if op.type == "FusedBatchNormV3" and op.get_attr("is_training")}
    return graph.session.run({scope: (op.outputs[1], op.outputs[2]) for scope, op in ops.items()}, feed)


# gamma of each residual branch's last batch norm: small, as in trained ResNets (and Goyal et al.'s zero-gamma
# initialisation). With gamma near 1 every unit of a random network with batch norm in training mode multiplies
# the gradients' sensitivity (batch norm's gradient explosion at random initialisation): float32 rounding then
# moves ReLU and max-pool switches and changes the gradients by percents between any two implementations.
RESIDUAL_GAMMA = (0.05, 0.15)
# beta of the batch norms whose sum enters each unit's last ReLU (the residual branch's last, the projection
# shortcut's): positive, so that sum stays clear of the ReLU's kink. Around it, elements the previous unit's
# ReLU zeroed would sit within a small residual of 0, where float32 rounding flips them: one flipped element
# of a 5x5 feature map moves its layers' gradients by percents.
TRUNK_BETA = (0.3, 0.6)


def _randomised(values, rng, momentum_scale):
    """New values for gamma and beta (off 1/0; `RESIDUAL_GAMMA`, `TRUNK_BETA` where they apply), the logits' bias
    (off 0) and kernel (large enough to spread the pixel losses) and, with `momentum_scale`, the Momentum slots:
    so a mis-mapped or mis-ordered variable shows."""
    new = {}
    for name, value in sorted(values.items()):
        kind = name.rsplit("/", 1)[-1]
        if kind == "gamma":
            new[name] = rng.uniform(*RESIDUAL_GAMMA if "/conv3/" in name else (0.5, 1.5), value.shape)
        elif kind == "beta" and ("/conv3/" in name or "/shortcut/" in name):
            new[name] = rng.uniform(*TRUNK_BETA, value.shape)
        elif kind in ("beta", "biases"):
            new[name] = rng.normal(0, 0.2 if kind == "beta" else 0.5, value.shape)
        elif name == "logits/semantic/weights":
            new[name] = rng.normal(0, 0.1, value.shape)
        elif kind == "Momentum" and momentum_scale:
            # An accumulator in the middle of a run: noise of a fraction of its variable's spread.
            new[name] = rng.normal(0, momentum_scale * (float(np.std(values[name[:-len("/Momentum")]])) or 1.0),
                                   value.shape)
    return {name: value.astype(np.float32) for name, value in new.items()}


def _moving_statistics(statistics, rng):
    """Moving statistics that keep every batch norm's output of the order of 1 without cancelling it.

    From a forward pass's batch statistics: a variance near the activations' second moment and a mean well
    below their root mean square, each drawn per channel, so a mis-mapped one shows. Statistics far from
    the activations (means 0, variances 1 after random convolutions) let a ResNet's activations grow with
    every unit, to logits of 1e8 at R101 where a bias or a late layer no longer shows in a relative error;
    the batch means themselves would make each batch norm subtract two near-equal numbers and amplify
    float32 rounding layer after layer.
    """
    new = {}
    for scope, (mean, variance) in statistics.items():
        second_moment = variance + mean ** 2
        new[f"{scope}/moving_mean"] = rng.normal(0, 0.2, mean.shape) * np.sqrt(second_moment)
        new[f"{scope}/moving_variance"] = second_moment * rng.uniform(0.5, 2.0, variance.shape)
    return {name: value.astype(np.float32) for name, value in new.items()}


def write_checkpoint(prefix, options, images, *, seed=0, global_step=0, momentum_scale=0.0):
    """Builds the training graph for `images` (so the Momentum slots exist), randomises it (batch-norm
    statistics from `images`) and saves it with tf.compat.v1.train.Saver: a checkpoint as the release's
    train.py writes it. Returns the variable names.

    `momentum_scale` > 0 fills each slot with normal noise of that many times its variable's spread (an
    optimizer state in the middle of a run); `global_step` is the step saved.
    """
    graph = ReleaseGraph(dataclasses.replace(options, is_training=True), np.shape(images)[:3])
    rng = np.random.default_rng(seed)
    try:
        with graph.graph.as_default():
            graph.session.run(v1.global_variables_initializer())
        graph.assign(dict(_randomised(graph.values(), rng, momentum_scale), global_step=np.int64(global_step)))
        graph.assign(_moving_statistics(_batch_statistics(graph, graph.feed(images)), rng))
        with graph.graph.as_default():
            graph.saver.save(graph.session, prefix, write_meta_graph=False, write_state=False)
        return sorted(graph.variables)
    finally:
        graph.close()


def eval_logits(checkpoint, options, *batches):
    """The release's eval-mode logits of each batch of images (0..255 RGB, [N, H, W, 3]), resized to them."""
    graph = ReleaseGraph(dataclasses.replace(options, is_training=False), *(np.shape(b)[:3] for b in batches))
    try:
        graph.restore(checkpoint)
        feed = {images: np.asarray(batch, np.float32) for (images, *_), batch in zip(graph.towers, batches)}
        return graph.session.run([logits for *_, logits in graph.towers], feed)
    finally:
        graph.close()


def loss_and_gradients(checkpoint, options, images, labels):
    """Training mode, nothing updated: {"total_loss", "loss", "regularization", "pixel_losses",
    "gradients": {release name: gradient after the multipliers}}."""
    graph = ReleaseGraph(dataclasses.replace(options, is_training=True), np.shape(images)[:3])
    try:
        graph.restore(checkpoint)
        fetches = dict(total_loss=graph.total_loss, loss=graph.loss, regularization=graph.regularization,
                       pixel_losses=graph.pixel_losses,
                       gradients={variable.op.name: gradient for gradient, variable in graph.gradients})
        return graph.session.run(fetches, graph.feed(images, labels))
    finally:
        graph.close()


def train(checkpoint, options, images, labels, steps):
    """`steps` runs of train.py's train op on the same batch, from `checkpoint` with the global step at 0: the
    release initialises from a checkpoint every variable but `global_step` (train_utils.py `get_model_init_fn`,
    the Momentum slots included).

    Returns {"loss", "total_loss", "learning_rate": one per step, "variables": {release name: final value}}.
    """
    graph = ReleaseGraph(dataclasses.replace(options, is_training=True), np.shape(images)[:3])
    try:
        graph.restore(checkpoint)
        graph.assign({"global_step": np.int64(0)})
        feed = graph.feed(images, labels)
        history = {"loss": [], "total_loss": [], "learning_rate": []}
        for _ in range(steps):
            _, *values = graph.session.run([graph.train_op, graph.loss, graph.total_loss, graph.learning_rate], feed)
            for key, value in zip(history, values):
                history[key].append(float(value))
        return dict(history, variables=graph.values())
    finally:
        graph.close()


def momentum_steps(checkpoint, gradients, learning_rates, momentum=0.9):
    """tf.compat.v1.train.MomentumOptimizer applied to the checkpoint's variables and Momentum slots: step i
    applies `gradients[i]` ({release name: array}) at `learning_rates[i]`. Returns {release name: value} of
    the variables, their slots and `global_step`."""
    shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    with tf.Graph().as_default() as graph:
        variables = {name: v1.get_variable(name, shapes[name], initializer=v1.zeros_initializer())
                     for name in gradients[0]}
        global_step = v1.train.get_or_create_global_step()
        learning_rate = v1.placeholder(tf.float32, [])
        placeholders = {name: v1.placeholder(tf.float32, v.shape) for name, v in variables.items()}
        optimizer = v1.train.MomentumOptimizer(learning_rate, momentum)
        update = optimizer.apply_gradients([(placeholders[name], v) for name, v in variables.items()],
                                           global_step=global_step)
        everything = {v.op.name: v for v in v1.global_variables()}
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            v1.train.Saver(everything).restore(session, checkpoint)
            for step_gradients, rate in zip(gradients, learning_rates):
                feed = {placeholders[name]: value for name, value in step_gradients.items()}
                session.run(update, {**feed, learning_rate: rate})
            return session.run(everything)
