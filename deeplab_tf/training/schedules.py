"""The "poly" learning-rate policy of the paper (section 4.1)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="deeplab_tf")
class PolyLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = (base - end) * (1 - step / decay_steps) ** power + end, after an optional warm-up.

    The warm-up is the original release's "slow start": a constant `warmup_learning_rate` for the
    first `warmup_steps` steps. The decay runs over the whole `decay_steps` (the poly formula is
    evaluated at the global step, warm-up included), so resuming at step k gives lr(k) exactly.

    Args:
        base_learning_rate: 0.007 in the paper's first stage, 0.001 in the second.
        decay_steps: total training steps (30K by default in the paper).
        power: 0.9 in the paper.
        end_learning_rate: value reached at `decay_steps` (0).
        warmup_steps, warmup_learning_rate: optional slow start.

    Example:
        >>> schedule = PolyLearningRate(0.007, 30000, power=0.9)
        >>> float(schedule(15000))  # 0.007 * 0.5 ** 0.9 = 0.00375
        >>> optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)
    """

    def __init__(self, base_learning_rate, decay_steps, *, power=0.9, end_learning_rate=0.0, warmup_steps=0,
                 warmup_learning_rate=1e-4):
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}.")
        self.base_learning_rate = base_learning_rate
        self.decay_steps = decay_steps
        self.power = power
        self.end_learning_rate = end_learning_rate
        self.warmup_steps = warmup_steps
        self.warmup_learning_rate = warmup_learning_rate

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        progress = tf.minimum(step, float(self.decay_steps)) / float(self.decay_steps)
        poly = (self.base_learning_rate - self.end_learning_rate) * (1.0 - progress) ** self.power
        poly += self.end_learning_rate
        return tf.where(step < float(self.warmup_steps), tf.constant(self.warmup_learning_rate, tf.float32), poly)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "decay_steps": self.decay_steps,
            "power": self.power,
            "end_learning_rate": self.end_learning_rate,
            "warmup_steps": self.warmup_steps,
            "warmup_learning_rate": self.warmup_learning_rate,
        }
