"""One training step, written for a single replica and run under any tf.distribute strategy."""

import keras
import tensorflow as tf

from deeplab_tf.constants import IGNORE_LABEL
from deeplab_tf.training.losses import resize_labels_nearest, segmentation_loss_terms


def _global_sum(value):
    """Sum over the replicas of the step (identity with one replica, e.g. a parameter-server worker)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def make_train_step(model, optimizer, *, global_step, ignore_label=IGNORE_LABEL, top_k_percent_pixels=1.0,
                    upsample_logits=True, class_weights=None):
    """Returns `step(images, labels) -> {"loss", "regularization", "total_loss"}` for one replica.

    The cross-entropy is averaged over the valid pixels of the global batch (a weighted mean with class
    weights): each replica divides its sum by the all-reduced pixel count (sum of pixel weights), and
    Keras' optimizer sums the replicas' gradients. The weight-decay terms (`model.losses`) are split evenly
    across replicas for the same reason. The logits bias's gradient arrives doubled, as in the original
    release (the model's logits layer does it).

    Args:
        model: a `DeepLabV3` (logits at the input size).
        optimizer: a built Keras optimizer (a `LossScaleOptimizer` for float16).
        global_step: an int64 tf.Variable incremented once per step (atomically, so asynchronous
            workers never lose a count); the learning-rate schedule reads it.
        ignore_label: label excluded from the loss.
        top_k_percent_pixels: keep only the hardest fraction of pixels (1.0 keeps all).
        upsample_logits: compare logits upsampled to the label size (the paper's choice, Table 8);
            False downsamples the labels to the logits instead.
        class_weights: None (unweighted, as the paper), or one non-negative weight per class
            (`deeplab_tf.training.losses.segmentation_loss_terms`).
    """
    logits_model = model if upsample_logits else keras.Model(model.inputs, model.get_layer("logits").output)

    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = logits_model(images, training=True)
            if not upsample_logits:
                labels = resize_labels_nearest(labels, tf.shape(logits)[1:3])
            loss_sum, num_pixels = segmentation_loss_terms(
                labels, logits, ignore_label=ignore_label, top_k_percent_pixels=top_k_percent_pixels,
                class_weights=class_weights)
            num_replicas = tf.distribute.get_replica_context().num_replicas_in_sync
            loss = loss_sum / tf.maximum(_global_sum(num_pixels), 1.0)
            regularization = tf.add_n(model.losses) / num_replicas if model.losses else tf.constant(0.0)
            total_loss = loss + tf.cast(regularization, tf.float32)
            scaled = optimizer.scale_loss(total_loss)  # Identity unless a LossScaleOptimizer (float16).
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        global_step.assign_add(1)
        return {"loss": loss, "regularization": tf.cast(regularization, tf.float32), "total_loss": total_loss}

    return step
