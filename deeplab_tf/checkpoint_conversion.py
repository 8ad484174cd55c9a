"""A training run's checkpoint to the original release's train_logdir and back (deeplab-convert-checkpoint).

Both directions carry the whole training state: every weight, the batch-norm statistics, the momentum
accumulators and the global step, so either side's trainer continues where the other stopped (the
accumulators only where both use TF1's MomentumOptimizer form, `config.train.optimizer=momentum`).
"""

import os

import tensorflow as tf

from deeplab_tf import workdir as workdir_lib
from deeplab_tf.modeling import DeepLabV3, release
from deeplab_tf.training.config import default_config
from deeplab_tf.training.optimizers import make_optimizer

# What the release's train.py calls its checkpoints: <train_logdir>/model.ckpt-<global step>.
RELEASE_CHECKPOINT_NAME = "model.ckpt"


def _training_state(model_config, optimizer_name):
    """The objects deeplab-train checkpoints, built as it builds them: (model, optimizer, global_step, checkpoint)."""
    model = DeepLabV3.from_config(model_config)
    # The learning rate is the trainer's schedule, not state: any value restores the same slots.
    optimizer = make_optimizer(optimizer_name, learning_rate=lambda: 0.0, momentum=0.9)
    optimizer.build(model.trainable_variables)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    return model, optimizer, global_step, tf.train.Checkpoint(model=model, optimizer=optimizer, global_step=global_step)


def workdir_to_release(checkpoint, output_dir):
    """Writes a deeplab-train checkpoint as the release's train.py would have, for its eval.py, vis.py and
    export_model.py.

    Args:
        checkpoint: a workdir (its latest checkpoint), its checkpoints/ folder or a prefix.
        output_dir: the release's train_logdir to write `model.ckpt-<step>` and its `checkpoint` file into.

    Returns:
        (the prefix written, a note on what was left out or "").
    """
    workdir, prefix = workdir_lib.resolve_checkpoint(checkpoint)
    recorded = (workdir_lib.recorded_config(workdir) or {}).get("train", {})
    # Runs recorded before config.train.optimizer existed trained with Keras' form.
    optimizer_name = recorded.get("optimizer", "keras_sgd")
    model, optimizer, global_step, state = _training_state(workdir_lib.load_model_config(workdir), optimizer_name)
    workdir_lib.restore(state, prefix).expect_partial().assert_existing_objects_matched()
    step = int(global_step.numpy())
    keep_slots = optimizer_name == "momentum"
    written = release.save_release_checkpoint(
        model, os.path.join(output_dir, f"{RELEASE_CHECKPOINT_NAME}-{step}"),
        optimizer=optimizer if keep_slots else None, global_step=step)
    note = "" if keep_slots else (
        f"momentum accumulators left out: {workdir} trained with config.train.optimizer={optimizer_name}, whose "
        f"slots are not TF1 MomentumOptimizer's")
    return written, note


def release_to_workdir(checkpoint, workdir, *, output_stride=16, atrous_rates=None, multi_grid=None):
    """Makes a deeplab-train workdir from a checkpoint of the release: deeplab-eval, -vis and -export use it
    as any run, and deeplab-train in it continues that training (its global step and accumulators).

    Args:
        checkpoint: the release's train_logdir or a `model.ckpt-<N>` prefix.
        workdir: a new folder (it must hold no checkpoint yet).
        output_stride, atrous_rates, multi_grid: the model as the release's train.py ran it
            (`deeplab_tf.modeling.release.release_model_config`).

    Returns:
        The checkpoint prefix written, `<workdir>/checkpoints/ckpt-<global step>`.
    """
    if tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(workdir)):
        raise FileExistsError(f"{workdir} already holds a training run: convert into a new folder.")
    info = release.inspect_release_checkpoint(checkpoint)
    model_config = release.release_model_config(info, output_stride=output_stride, atrous_rates=atrous_rates,
                                                multi_grid=multi_grid)
    model, optimizer, global_step, state = _training_state(model_config, "momentum")
    release.load_release_checkpoint(model, info.prefix, optimizer=optimizer if info.has_momentum else None,
                                    global_step=global_step)
    optimizer.iterations.assign(global_step)  # deeplab-train applies one update per global step.
    config = default_config()
    config.update_from_flattened_dict({
        "dataset.num_classes": info.num_classes, "train.init_checkpoint": info.prefix, "train.optimizer": "momentum",
        **{f"model.{field}": model_config[field] or () for field in
           ("backbone", "output_stride", "multi_grid", "head", "atrous_rates", "image_pooling", "aspp_filters")}})
    workdir_lib.save_model_config(workdir, model)
    workdir_lib.save_run_config(config, workdir, {"converted_from": info.prefix})
    manager = tf.train.CheckpointManager(state, workdir_lib.checkpoint_dir(workdir), max_to_keep=None)
    return manager.save(checkpoint_number=int(global_step.numpy()))
