"""A training run's directory: its model config and checkpoints, and loading a model back from them.

Layout written by the trainer:

    <workdir>/model_config.json      DeepLabV3.get_config() of the trained model
    <workdir>/config.json            the full experiment config and flags
    <workdir>/checkpoints/ckpt-<n>.* tf.train.Checkpoint(model=..., optimizer=..., step=...)
"""

import json
import os

import tensorflow as tf

from deeplab_tf.modeling import DeepLabV3
from deeplab_tf.modeling import folding
from deeplab_tf.modeling.aspp import default_atrous_rates
from deeplab_tf.modeling.precision import dtype_policy

MODEL_CONFIG = "model_config.json"
CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir):
    return os.path.join(workdir, CHECKPOINT_DIR)


def save_model_config(workdir, model):
    """Writes the model's config next to the checkpoints so eval/vis/export can rebuild it."""
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(os.path.join(workdir, MODEL_CONFIG), "w") as f:
        json.dump(model.get_config(), f, indent=2)


def resolve_checkpoint(path):
    """A workdir, a checkpoint directory or a checkpoint prefix -> (workdir, checkpoint prefix)."""
    if tf.io.gfile.isdir(path):
        directory = checkpoint_dir(path) if tf.io.gfile.isdir(checkpoint_dir(path)) else path
        prefix = tf.train.latest_checkpoint(directory)
        if prefix is None:
            raise FileNotFoundError(f"No checkpoint in {directory!r}: has training saved one yet?")
    else:
        prefix = path
        if not tf.io.gfile.exists(prefix + ".index"):
            raise FileNotFoundError(
                f"No checkpoint {prefix!r} (expected {prefix}.index): give a workdir, its checkpoints/ "
                f"directory or a prefix like <workdir>/checkpoints/ckpt-1000.")
        directory = os.path.dirname(prefix)
    workdir = os.path.dirname(directory) if os.path.basename(directory) == CHECKPOINT_DIR else directory
    return workdir, prefix


def load_model_config(workdir):
    path = os.path.join(workdir, MODEL_CONFIG)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} is missing: the workdir was not written by deeplab-train, so the "
                                f"model cannot be rebuilt.")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def build_model_for_inference(model_config, *, output_stride=None, precision="float32"):
    """Rebuilds the trained model at another output stride (train at 16, evaluate at 8).

    ASPP rates derived from the output stride are re-derived; explicit ones scale by the stride ratio,
    so each rate keeps covering the same image area. `precision` is the Keras dtype policy to compute
    in ("mixed_bfloat16": bfloat16 convolutions on float32 weights; the logits stay float32).
    """
    config = dict(model_config)
    trained_stride = config["output_stride"]
    if output_stride and output_stride != trained_stride:
        config["output_stride"] = output_stride
        if config.get("atrous_rates"):
            config["atrous_rates"] = default_atrous_rates(
                output_stride, [r * trained_stride / 16 for r in config["atrous_rates"]])
    config["dropout_rate"] = 0.0
    with dtype_policy(precision):
        return DeepLabV3.from_config(config)


def load_model(path, *, output_stride=None, num_classes=None, precision="float32", fold_batch_norm=False):
    """Builds the model of a training run and restores its weights.

    Args:
        path: a workdir, its checkpoints/ directory or a checkpoint prefix.
        output_stride: build at this output stride instead of the trained one.
        num_classes: if given, check the checkpoint has this many classes.
        precision: dtype policy to compute in (see `build_model_for_inference`).
        fold_batch_norm: return the inference form, with batch norm folded into the convolutions
            (`deeplab_tf.modeling.folding.fold_batch_norm`: faster, cannot train).

    Returns:
        (model, checkpoint prefix, model config dict).
    """
    workdir, prefix = resolve_checkpoint(path)
    model_config = load_model_config(workdir)
    if num_classes is not None and model_config["num_classes"] != num_classes:
        raise ValueError(
            f"The checkpoint {prefix} has {model_config['num_classes']} classes but {num_classes} were asked "
            f"for (dataset or --num_classes): evaluate it on the dataset it was trained for.")
    model = build_model_for_inference(model_config, output_stride=output_stride, precision=precision)
    status = tf.train.Checkpoint(model=model).restore(prefix)
    status.expect_partial().assert_existing_objects_matched()
    return (folding.fold_batch_norm(model) if fold_batch_norm else model), prefix, model_config
