"""Keras `compile`/`fit` against deeplab-train's own loop: the loss of the first steps, same settings.

Both start from the same weights (a workdir written here, read by the trainer as
`config.train.init_checkpoint` and by `deeplab_tf.load_model(..., fold_batch_norm=False)` for fit),
read the same batches (`train_dataset` with the same seed), use SGD with momentum on the same poly
schedule, train batch norm on batch statistics and add the weight-decay terms of `model.losses`.
Dropout is off in both, since the two loops draw different dropout masks.

Prints one line per step (the trainer's total loss, fit's, their difference) and the largest
relative difference. Runs on the demo's synthetic scenes, ResNet-50, in about two minutes on 2 cores:

    python experiments/keras_fit_vs_trainer.py --steps=10
"""

import glob
import os
import tempfile

import keras
import tensorflow as tf
from absl import app, flags
from tensorflow.core.util import event_pb2

import deeplab_tf
from deeplab_tf import workdir as workdir_lib
from deeplab_tf.data.sources.voc import convert_voc2012
from deeplab_tf.demo import dataset as demo_dataset
from deeplab_tf.training import trainer
from deeplab_tf.training.config import default_config

flags.DEFINE_integer("steps", 10, "Training steps to compare.")
flags.DEFINE_integer("crop_size", 129, "Training crop (square).")
flags.DEFINE_integer("batch_size", 4, "Batch size.")
flags.DEFINE_float("learning_rate", 0.007, "Base learning rate of the poly schedule.")
FLAGS = flags.FLAGS


def _config(train_pattern, init_workdir):
    config = default_config()
    config.dataset.name = demo_dataset.NAME
    config.dataset.train_pattern = train_pattern
    config.model.backbone = "resnet_v1_50"
    config.model.multi_grid = ()
    config.model.dropout_rate = 0.0
    config.train.update(crop_size=(FLAGS.crop_size,) * 2, batch_size=FLAGS.batch_size, steps=FLAGS.steps,
                        base_learning_rate=FLAGS.learning_rate, init_checkpoint=init_workdir, init_exclude=(),
                        log_every_steps=1, summary_every_steps=1, image_summary_every_steps=10 ** 9,
                        shuffle_buffer=64)
    return config


def _summary_values(directory, tag):
    """{step: value} of a scalar the trainer wrote to TensorBoard (full precision, unlike its log)."""
    values = {}
    for record in tf.data.TFRecordDataset(sorted(glob.glob(os.path.join(directory, "events.*")))):
        event = event_pb2.Event.FromString(record.numpy())
        for value in event.summary.value:
            if value.tag == tag:
                values[event.step] = float(tf.make_ndarray(value.tensor))
    return [values[step] for step in sorted(values)]


class _StepLosses(keras.callbacks.Callback):
    """Each step's own loss, recovered from the running epoch mean that fit logs."""

    def __init__(self):
        super().__init__()
        self.losses, self._previous_mean = [], 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = logs["loss"]
        self.losses.append((batch + 1) * mean - batch * self._previous_mean)
        self._previous_mean = mean


def main(argv):
    del argv
    root = tempfile.mkdtemp(prefix="fit_vs_trainer_")
    voc, _ = demo_dataset.build(os.path.join(root, "data"))
    convert_voc2012(voc, os.path.join(root, "tfrecords"), splits=("train",), num_shards=2)
    train_pattern = os.path.join(root, "tfrecords", "train-*")
    init_workdir = os.path.join(root, "init")
    config = _config(train_pattern, init_workdir)

    keras.utils.set_random_seed(0)
    initial = trainer.build_model(config)
    workdir_lib.save_model_config(init_workdir, initial)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=initial), workdir_lib.checkpoint_dir(init_workdir),
                               max_to_keep=1).save(checkpoint_number=0)

    run = os.path.join(root, "trainer")
    trainer.train(config, run, log=lambda line: None)
    trainer_losses = _summary_values(os.path.join(run, "train"), "train/total_loss")

    cfg = config.train
    model = deeplab_tf.load_model(init_workdir, fold_batch_norm=False)
    schedule = deeplab_tf.PolyLearningRate(cfg.base_learning_rate, cfg.steps, power=cfg.learning_rate_power,
                                           end_learning_rate=cfg.end_learning_rate, warmup_steps=cfg.warmup_steps,
                                           warmup_learning_rate=cfg.warmup_learning_rate)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=cfg.momentum),
                  loss=deeplab_tf.SegmentationLoss(top_k_percent_pixels=cfg.top_k_percent_pixels))
    batches = deeplab_tf.train_dataset(
        train_pattern, batch_size=cfg.batch_size, crop_size=tuple(cfg.crop_size), min_scale=cfg.min_scale,
        max_scale=cfg.max_scale, scale_step=cfg.scale_step, flip=cfg.flip, shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed)
    recorder = _StepLosses()
    model.fit(batches, steps_per_epoch=cfg.steps, epochs=1, callbacks=[recorder], verbose=0)

    print(f"{'step':>4}  {'deeplab-train':>14}  {'fit':>14}  {'relative diff':>13}")
    relative = []
    for step, (ours, keras_loss) in enumerate(zip(trainer_losses, recorder.losses), start=1):
        relative.append(abs(ours - keras_loss) / abs(ours))
        print(f"{step:>4}  {ours:>14.6f}  {keras_loss:>14.6f}  {relative[-1]:>13.2e}")
    print(f"largest relative difference over {len(relative)} steps: {max(relative):.2e}")


if __name__ == "__main__":
    app.run(main)
