"""SGD with momentum in its two forms, each variable's update one fused TensorFlow kernel.

- `ReleaseMomentum`: TF1's `MomentumOptimizer`, which the original release's train.py uses:
  a <- momentum * a + g, then w <- w - lr * a.
- `MomentumSGD`: Keras' SGD: v <- momentum * v - lr * g, then w <- w + v.

The two are the same update while the learning rate is constant (v = -lr * a). When it changes (the
paper's poly schedule), TF1 applies the current rate to the whole accumulated history and Keras keeps each
gradient at the rate it arrived with; their slots then hold different quantities, so a run keeps the form
it started with (`config.train.optimizer`).
"""

import keras
import tensorflow as tf

OPTIMIZERS = ("momentum", "keras_sgd")


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (a replica's own under tf.distribute)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="deeplab_tf")
class MomentumSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` whose momentum update runs as one kernel per variable.

    The update is Keras': m <- momentum * m - lr * g, then w <- w + m. Keras writes it as five
    element-wise ops, each a pass over the weights (58M of them in R101); TensorFlow's
    `ResourceApplyKerasMomentum` computes the same in one pass. Here that took an R101 update from 49 to
    30 ms. Slots, configuration and checkpoints are Keras SGD's, so either restores the other's; Nesterov
    momentum, zero momentum and sparse gradients take Keras' own path.

    Args: those of `keras.optimizers.SGD`.

    Example:
        >>> optimizer = MomentumSGD(learning_rate=PolyLearningRate(0.007, 30000), momentum=0.9)
        >>> model.compile(optimizer=optimizer, loss=SegmentationLoss())
    """

    _KERNEL = tf.raw_ops.ResourceApplyKerasMomentum

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum == 0 or self.nesterov or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        type(self)._KERNEL(
            var=_handle(variable), accum=_handle(self.momentums[self._get_variable_index(variable)]),
            lr=tf.cast(learning_rate, dtype), grad=tf.cast(gradient, dtype), momentum=tf.cast(self.momentum, dtype),
            use_locking=False)


@keras.saving.register_keras_serializable(package="deeplab_tf")
class ReleaseMomentum(MomentumSGD):
    """TF1 `MomentumOptimizer`'s update, the original release's (paper section 4.1, momentum 0.9).

    a <- momentum * a + g, then w <- w - lr * a, as TensorFlow's fused `ResourceApplyMomentum` kernel. The
    slot `a` is what the release's checkpoints store as `<variable>/Momentum`, so a release-trained run
    continues here with its accumulators (`deeplab_tf.modeling.release`).

    Args:
        learning_rate: a float, a schedule or a callable, as for Keras optimizers.
        momentum: the accumulator's decay (0.9 in the paper).
        **kwargs: Keras optimizer arguments (`weight_decay`, `clipnorm`, ...); no Nesterov form.

    Example:
        >>> optimizer = ReleaseMomentum(learning_rate=PolyLearningRate(0.007, 30000), momentum=0.9)
    """

    _KERNEL = tf.raw_ops.ResourceApplyMomentum

    def __init__(self, learning_rate=0.01, momentum=0.9, **kwargs):
        if kwargs.pop("nesterov", False):
            raise ValueError("ReleaseMomentum is TF1's MomentumOptimizer without Nesterov momentum; use "
                             "keras.optimizers.SGD(nesterov=True) for that.")
        if not momentum > 0:
            raise ValueError(f"ReleaseMomentum needs a momentum in (0, 1), got {momentum}; use "
                             f"keras.optimizers.SGD for plain gradient descent.")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        if isinstance(gradient, tf.IndexedSlices):  # The kernel takes dense gradients only.
            gradient = tf.convert_to_tensor(gradient)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.pop("nesterov")
        return config


def make_optimizer(name, *, learning_rate, momentum):
    """The optimizer `config.train.optimizer` names ("momentum": `ReleaseMomentum`; "keras_sgd": `MomentumSGD`)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"config.train.optimizer={name!r} is unknown; choose one of {', '.join(OPTIMIZERS)}.")
    return (ReleaseMomentum if name == "momentum" else MomentumSGD)(learning_rate=learning_rate, momentum=momentum)
