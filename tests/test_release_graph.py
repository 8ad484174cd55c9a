"""Our model, loss, gradients, optimizer and trainer against the original release's whole graph, rebuilt with tf_slim
(tests/release_reference.py), from checkpoints written as the release's train.py writes them.

The training cases are numerically well-conditioned on purpose; what follows was measured here, float32 on both
sides. A ReLU network's gradient jumps where an activation crosses 0, so two float32 implementations agree on
gradients only while no activation sits closer to 0 than their rounding differences:
- training runs resnet_v1_50, whose input normalisation (mean subtraction) is the release's op for op: the
  `_beta` variants' (x - 127.5) / 127.5 differs from the release's 2x / 255 - 1 by one rounding, which alone moved
  140 of 179 gradients by 1e-4 to 10% (the eval test covers `_beta`);
- the checkpoints' residual branches end with small gammas and the trunk's batch norms with positive betas
  (release_reference.py says why): at gammas near 1 the release's own gradients moved by 20% for inputs scaled by
  1 + 1e-7;
- images differ in their global colour, so image pooling's batch norm in training mode normalises values that
  differ (random noise images pool to nearly equal features);
- ASPP rates in training are (1, 2, 3), so every tap of the 3x3 branches reads the 5x5 feature map of a 65x65
  crop (at (6, 12, 18) only the centre tap would).
Gradients then agreed to 5e-5 of their largest magnitude. Over the trainer's later steps the two sides' weights
differ by rounding, and a ReLU may still flip: weights are compared to 1e-4 of their magnitude (10% of what three
steps change them), losses to 1e-5.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.data import make_example
from deeplab_tf.data.writer import ShardedWriter
from deeplab_tf.modeling import DeepLabV3, layers
from deeplab_tf.modeling.release import load_release_checkpoint, release_mapping, release_model_config, release_tensors
from deeplab_tf.training.config import default_config
from deeplab_tf.training.losses import pixel_cross_entropy
from deeplab_tf.training.optimizers import ReleaseMomentum
from deeplab_tf.training.step import make_train_step
from deeplab_tf.training.trainer import train
from deeplab_tf.workdir import load_model
from release_reference import ReleaseOptions, eval_logits, loss_and_gradients, momentum_steps, write_checkpoint
import release_reference

NUM_CLASSES = 4
MULTI_GRID = (1, 2, 4)
TRAIN_RATES = (1, 2, 3)
CROP = 65  # 32k + 1
BATCH = 4
EVAL_BACKBONES = ("resnet_v1_101", "resnet_v1_50_beta")
TRAIN_BACKBONE = "resnet_v1_50"


def scenes(seed, batch, height, width):
    """0..255 RGB images, each with its own global colour plus a smooth pattern and noise."""
    rng = np.random.default_rng(seed)
    colour = rng.uniform(0, 255, (batch, 1, 1, 3))
    pattern = tf.image.resize(rng.uniform(0, 255, (batch, 5, 5, 3)), (height, width)).numpy()
    noise = rng.normal(0, 10, (batch, height, width, 3))
    return np.clip(0.5 * colour + 0.5 * pattern + noise, 0, 255).round().astype(np.float32)


def label_maps(seed, batch, height, width):
    """Class ids in [0, NUM_CLASSES) with a band of ignored (255) pixels in every image."""
    labels = np.random.default_rng(seed).integers(0, NUM_CLASSES, (batch, height, width)).astype(np.int32)
    labels[:, :, :8] = 255
    return labels


def relative_error(ours, reference):
    """Largest difference relative to the reference's largest magnitude."""
    return float(np.abs(np.asarray(ours) - reference).max() / np.abs(reference).max())


def release_model(checkpoint, *, output_stride=16, atrous_rates=None, **overrides):
    """Our DeepLabV3 built as the release checkpoint says (dropout off: the draws differ), weights not loaded."""
    config = release_model_config(checkpoint, output_stride=output_stride, atrous_rates=atrous_rates,
                                  multi_grid=MULTI_GRID)
    return DeepLabV3(**dict(config, dropout_rate=0.0, **overrides))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Release checkpoints by backbone, written on first use: mid-run Momentum accumulators, global step 1000."""
    written = {}

    def get(backbone):
        if backbone not in written:
            prefix = str(tmp_path_factory.mktemp(backbone) / "model.ckpt-1000")
            write_checkpoint(prefix, ReleaseOptions(model_variant=backbone, num_classes=NUM_CLASSES),
                             scenes(0, BATCH, CROP, CROP), global_step=1000, momentum_scale=0.1)
            written[backbone] = prefix
        return written[backbone]

    return get


@pytest.fixture(scope="module")
def start_checkpoint(tmp_path_factory):
    """A release checkpoint to start training from: Momentum accumulators at 0, global step 1000 (which the
    release's initialisation does not take, nor ours)."""
    prefix = str(tmp_path_factory.mktemp("start") / "model.ckpt-1000")
    write_checkpoint(prefix, ReleaseOptions(model_variant=TRAIN_BACKBONE, num_classes=NUM_CLASSES),
                     scenes(1, BATCH, CROP, CROP), global_step=1000)
    return prefix


@pytest.mark.parametrize("backbone,output_stride", [(b, s) for b in EVAL_BACKBONES for s in (16, 8)])
def test_eval_logits_equal_the_releases(checkpoints, monkeypatch, backbone, output_stride):
    """Eval-mode logits of a 513x513 canvas and of 97x129 images equal the release's to 1e-5 of their largest
    magnitude, at output stride 16 and 8 with multi-grid (1, 2, 4) and the paper's ASPP rates: the backbone, ASPP
    (image pooling first in the release's concatenation), logits and bilinear upsampling compute the same
    function. The checkpoint loads with no variable missing or unused, Momentum slots and global step included.
    Measured here: 2e-6 to 4e-6."""
    # TF's own dilated kernel (the other forward would be timed first on 513x513 maps: slow, same function).
    monkeypatch.setattr(layers, "ATROUS_FORWARD", "direct")
    checkpoint = checkpoints(backbone)
    rates = tuple(rate * 16 // output_stride for rate in (6, 12, 18))
    canvas, odd = scenes(2, 1, 513, 513), scenes(3, 2, 97, 129)
    options = ReleaseOptions(model_variant=backbone, output_stride=output_stride, atrous_rates=rates,
                             num_classes=NUM_CLASSES)
    expected = eval_logits(checkpoint, options, canvas, odd)

    model = release_model(checkpoint, output_stride=output_stride)
    optimizer = ReleaseMomentum(learning_rate=0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    global_step = tf.Variable(0, dtype=tf.int64)
    report = load_release_checkpoint(model, checkpoint, optimizer=optimizer, global_step=global_step)
    assert report.missing == [] and report.skipped == []
    assert sorted(report.loaded) == sorted(name for name, _ in tf.train.list_variables(checkpoint))
    assert int(global_step.numpy()) == 1000

    for images, reference in zip((canvas, odd), expected):
        logits = model(images, training=False).numpy()
        assert logits.shape == reference.shape == images.shape[:3] + (NUM_CLASSES,)
        assert reference.std() > 0.5  # activations of order 1 through the network, not vanishing
        assert relative_error(logits, reference) <= 1e-5


class GradientRecorder:
    """Stands in for the optimizer of our training step: keeps the gradients it is given."""

    def scale_loss(self, loss):
        return loss

    def apply_gradients(self, gradients_and_variables):
        self.gradients = {id(variable): gradient.numpy() for gradient, variable in gradients_and_variables}


@pytest.mark.parametrize("top_k_percent_pixels", [1.0, 0.25])
def test_training_loss_and_every_gradient_equal_the_releases(start_checkpoint, top_k_percent_pixels):
    """Batch norm in training mode, weight decay 1e-4, ignored pixels present, with and without top-k pixel
    mining: our training step's total loss, cross-entropy and regularisation equal the release's (train.py's total
    loss, train_utils.py's loss) to 1e-5, and the gradient of every trainable variable, taken where our step hands
    it to the optimizer, equals the release's after its multipliers (the logits' bias doubled), in the release's
    layout, to 1e-4 of that gradient's largest magnitude, or of a thousandth of the network's largest gradient for
    the few below it (the trunk's betas, whose gradient comes from the rare elements their ReLU zeroes: 0 if none).
    Measured here: 5e-5 at most."""
    images, labels = scenes(4, BATCH, CROP, CROP), label_maps(6, BATCH, CROP, CROP)
    options = ReleaseOptions(model_variant=TRAIN_BACKBONE, atrous_rates=TRAIN_RATES, num_classes=NUM_CLASSES,
                             is_training=True, weight_decay=1e-4, top_k_percent_pixels=top_k_percent_pixels)
    expected = loss_and_gradients(start_checkpoint, options, images, labels)

    model = release_model(start_checkpoint, atrous_rates=TRAIN_RATES, weight_decay=1e-4)
    load_release_checkpoint(model, start_checkpoint)
    recorder = GradientRecorder()
    step = make_train_step(model, recorder, global_step=tf.Variable(0, dtype=tf.int64),
                           top_k_percent_pixels=top_k_percent_pixels)
    losses = {key: float(value) for key, value in step(tf.constant(images), tf.constant(labels)).items()}

    for key in ("total_loss", "loss", "regularization"):
        assert losses[key] == pytest.approx(float(expected[key]), rel=1e-5)
    assert expected["regularization"] > 0.1 * expected["loss"]  # weight decay is a visible part of the total
    if top_k_percent_pixels < 1:
        # The same pixels are the hardest on both sides: no pixel's loss differs between the sides by half the gap
        # between the k-th and (k+1)-th hardest (a batch where it did would be a tie, not a test).
        pixel_losses = pixel_cross_entropy(labels, model(images, training=True))[0].numpy()
        hardest = np.sort(expected["pixel_losses"])[::-1]
        k = int(top_k_percent_pixels * hardest.size)
        assert hardest[k - 1] - hardest[k] > 2 * np.abs(pixel_losses - expected["pixel_losses"]).max()

    largest = max(np.abs(g).max() for g in expected["gradients"].values())
    errors, small = {}, []
    for name, variable, to_release, _ in release_mapping(model):
        if variable.trainable:
            release = expected["gradients"][name]
            scale = max(np.abs(release).max(), 1e-3 * largest)
            small += [name] if scale > np.abs(release).max() else []
            errors[name] = float(np.abs(to_release(recorder.gradients[id(variable)]) - release).max() / scale)
    assert len(errors) == len(expected["gradients"]) == len(model.trainable_variables)
    assert len(small) < 0.1 * len(errors) and all(name.endswith("/BatchNorm/beta") for name in small)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, (worst, errors[worst])


def test_release_momentum_steps_equal_tf1_momentum_optimizer(checkpoints):
    """Three steps of ReleaseMomentum from a release checkpoint's weights and (non-zero) Momentum accumulators, at
    a learning rate that changes every step, equal tf.compat.v1.train.MomentumOptimizer's on the same gradients:
    weights, accumulators and global step, in the release's layout (concat_projection's kernel permuted), to 1e-6
    of each update."""
    checkpoint = checkpoints(EVAL_BACKBONES[1])
    model = release_model(checkpoint)
    learning_rate = tf.Variable(0.0)
    optimizer = ReleaseMomentum(learning_rate=lambda: learning_rate, momentum=0.9)
    optimizer.build(model.trainable_variables)
    global_step = tf.Variable(0, dtype=tf.int64)
    load_release_checkpoint(model, checkpoint, optimizer=optimizer, global_step=global_step)
    before = release_tensors(model, optimizer=optimizer, global_step=global_step.numpy())

    mapping = [(name, variable, from_release) for name, variable, _, from_release in release_mapping(model)
               if variable.trainable]
    rng = np.random.default_rng(6)
    gradients = [{name: rng.normal(0, 1, variable.shape).astype(np.float32) * np.std(before[name]).astype(np.float32)
                  for name, variable, _ in mapping} for _ in range(3)]
    rates = [0.1, 0.05, 0.01]
    for step_gradients, rate in zip(gradients, rates):
        learning_rate.assign(rate)
        optimizer.apply_gradients([(from_release(step_gradients[name]), variable) for name, variable, from_release
                                   in mapping])
        global_step.assign_add(1)
    ours = release_tensors(model, optimizer=optimizer, global_step=global_step.numpy())
    expected = momentum_steps(checkpoint, gradients, rates, momentum=0.9)

    assert int(expected["global_step"]) == int(ours["global_step"]) == 1003
    names = [name for name, _, _ in mapping]
    for name in names + [f"{name}/Momentum" for name in names]:
        update = expected[name] - before[name]
        assert np.abs(update).max() > 0, name
        assert relative_error(ours[name] - before[name], update) <= 1e-6, name


def write_records(directory, images, labels):
    """The batch as a TFRecord split (lossless PNG images) that deeplab_tf's pipeline reads back exactly."""
    writer = ShardedWriter(output_dir=directory, split="train", num_shards=1)
    with writer:
        for i, (image, label) in enumerate(zip(images, labels)):
            writer.write(make_example(
                image=tf.io.encode_png(image.astype(np.uint8)).numpy(), image_format="png",
                label=tf.io.encode_png(label.astype(np.uint8)[..., None]).numpy(), filename=f"image_{i}",
                height=image.shape[0], width=image.shape[1]).SerializeToString())
    writer.commit()
    return os.path.join(directory, "train-*")


def scalars(workdir, tag):
    """{step: value} of a TensorBoard scalar the trainer wrote."""
    values = {}
    for path in tf.io.gfile.glob(os.path.join(workdir, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


@pytest.mark.parametrize("policy", ["constant", "poly"])
def test_three_trainer_steps_equal_three_steps_of_the_releases_train_op(start_checkpoint, tmp_path, policy):
    """deeplab-train's loop (`train(config, workdir)`: records, pipeline without augmentation, the step,
    ReleaseMomentum, the schedule), initialised from a release checkpoint, runs the same three steps as the release's
    train op (batch norm updates grouped with the update), at a constant and at the poly rate that falls to 0 at
    step 3: every step's loss and total loss to 1e-5, the learning rate of each step to 1e-6, the logits and batch
    norm's moving statistics to 1e-4 of their change, the other weights within float32's noise over three steps
    (below). Measured here: losses 3e-7, weights 2e-4 of their magnitude at most, moving statistics half their
    bound. The batch is every image, so batch norm does not depend on the pipeline's order.

    Both sides' batch norm decay is ours, 0.9997: the release's backbone uses 0.95 (a documented difference).
    """
    images, labels = scenes(7, BATCH, CROP, CROP), label_maps(8, BATCH, CROP, CROP)
    steps, base_learning_rate = 3, 0.007
    config = default_config()
    config.dataset.train_pattern = write_records(str(tmp_path / "records"), images, labels)
    config.dataset.num_classes = NUM_CLASSES
    config.model.update(backbone=TRAIN_BACKBONE, output_stride=16, multi_grid=MULTI_GRID, atrous_rates=TRAIN_RATES,
                        dropout_rate=0.0, weight_decay=1e-4)
    config.train.update(
        steps=steps, batch_size=BATCH, crop_size=(CROP, CROP), min_scale=1.0, max_scale=1.0, flip=False,
        base_learning_rate=base_learning_rate, learning_rate_power=0.0 if policy == "constant" else 0.9,
        init_checkpoint=start_checkpoint, init_exclude=(), shuffle_buffer=BATCH, log_every_steps=1,
        summary_every_steps=1, image_summary_every_steps=1000, checkpoint_every_steps=1000)
    workdir = str(tmp_path / "workdir")
    train(config, workdir, log=lambda line: None)

    options = ReleaseOptions(
        model_variant=TRAIN_BACKBONE, atrous_rates=TRAIN_RATES, num_classes=NUM_CLASSES, is_training=True,
        weight_decay=1e-4, base_learning_rate=base_learning_rate, learning_policy=policy,
        training_number_of_steps=steps, backbone_batch_norm_decay=0.9997)
    expected = release_reference.train(start_checkpoint, options, images, labels, steps)

    for tag, key in [("train/loss", "loss"), ("train/total_loss", "total_loss")]:
        ours = scalars(workdir, tag)
        assert sorted(ours) == [1, 2, 3]
        np.testing.assert_allclose([ours[step] for step in (1, 2, 3)], expected[key], rtol=1e-5)
    # The rate each step applied: ours is logged after the step, for the next one.
    rates = scalars(workdir, "train/learning_rate")
    np.testing.assert_allclose([base_learning_rate, rates[1], rates[2]], expected["learning_rate"], rtol=1e-6)
    if policy == "poly":
        assert expected["learning_rate"][2] < 0.5 * base_learning_rate and rates[3] == 0.0

    # The logits, after every ReLU, to 1e-4 of their change; batch norm's moving statistics, which no ReLU switches
    # either, to 1e-4 of their change plus four float32 steps of their value (three steps at decay 0.9997 move them
    # by 1e-3 of it); the other weights to 1e-3 of their magnitude, the float32 noise of three steps: after the first
    # update the two sides' weights differ in their last bits, a ReLU may switch, and the release run against itself
    # on the batch in another order differed by 1.1e-4 of one kernel's magnitude here.
    model = load_model(workdir)[0]
    start = tf.train.load_checkpoint(start_checkpoint)
    ratios, changes = {}, {}
    for name, variable, to_release, _ in release_mapping(model):
        release = expected["variables"][name]
        magnitude, change = np.abs(release).max(), np.abs(release - start.get_tensor(name)).max()
        changes[name] = change / magnitude
        if name.startswith("logits/"):
            bound = 1e-4 * change
        elif "/moving_" in name:
            bound = 1e-4 * change + 4 * np.finfo(np.float32).eps * magnitude
        else:
            bound = 1e-3 * magnitude
        ratios[name] = float(np.abs(to_release(variable.numpy()) - release).max() / bound)
    assert changes["logits/semantic/weights"] > 1e-3 and changes["logits/semantic/biases"] > 1e-3
    assert all(changes[name] > 1e-4 for name in changes if "/moving_" in name)
    worst = max(ratios, key=ratios.get)
    assert ratios[worst] <= 1, (worst, ratios[worst])
