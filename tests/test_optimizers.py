"""MomentumSGD (one fused kernel per variable) against Keras' SGD, whose update it must equal."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.training.optimizers import MomentumSGD
from deeplab_tf.training.schedules import PolyLearningRate


def _train(optimizer_class, steps=4, **kwargs):
    """Weights and momentum slots after `steps` updates of two variables with fixed, varied gradients."""
    variables = [keras.Variable(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), name="kernel"),
                 keras.Variable(np.full([4], 0.5, np.float32), name="bias")]
    optimizer = optimizer_class(learning_rate=PolyLearningRate(0.1, 10), **kwargs)
    optimizer.build(variables)

    @tf.function
    def step(gradients):
        optimizer.apply_gradients(zip(gradients, variables))

    for i in range(steps):
        step([tf.reshape(tf.sin(tf.range(v.shape.num_elements(), dtype=tf.float32) * 0.7 + i) * 3, v.shape)
              for v in variables])
    return optimizer, variables


@pytest.mark.parametrize("kwargs", [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}, {"momentum": 0.0}])
def test_updates_equal_keras_sgd(kwargs):
    ours, ours_variables = _train(MomentumSGD, **kwargs)
    keras_sgd, keras_variables = _train(keras.optimizers.SGD, **kwargs)
    for a, b in zip(ours_variables + ours.variables, keras_variables + keras_sgd.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    # The weights moved: the comparison is not of two untouched copies.
    assert not np.allclose(ours_variables[0].numpy(), np.linspace(-1, 1, 12).reshape(3, 4))


def test_checkpoints_interchange_with_keras_sgd(tmp_path):
    """A run checkpointed with Keras' SGD (earlier versions of the trainer) resumes with MomentumSGD."""
    keras_sgd, keras_variables = _train(keras.optimizers.SGD, momentum=0.9)
    path = tf.train.Checkpoint(optimizer=keras_sgd, weights=keras_variables).save(str(tmp_path / "ckpt"))
    ours, ours_variables = _train(MomentumSGD, steps=1, momentum=0.9)
    tf.train.Checkpoint(optimizer=ours, weights=ours_variables).restore(path).assert_existing_objects_matched()
    for a, b in zip(ours_variables + ours.variables, keras_variables + keras_sgd.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_config_round_trip():
    optimizer = MomentumSGD(learning_rate=0.01, momentum=0.9)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is MomentumSGD and restored.momentum == 0.9


def test_mirrored_replicas_update_their_own_copies():
    """Under MirroredStrategy (2 CPU replicas) the fused update writes each replica's copy, as Keras does."""
    script = textwrap.dedent("""
        import numpy as np, keras, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from deeplab_tf.training.optimizers import MomentumSGD
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        results = []
        for optimizer_class in (MomentumSGD, keras.optimizers.SGD):
            with strategy.scope():
                model = keras.Sequential([keras.Input([3]), keras.layers.Dense(2)])
                model.set_weights([np.arange(6, dtype=np.float32).reshape(3, 2) / 5, np.ones(2, np.float32)])
                optimizer = optimizer_class(learning_rate=0.1, momentum=0.9)
                optimizer.build(model.trainable_variables)

            @tf.function
            def step(x):
                def replica_step(x):
                    with tf.GradientTape() as tape:
                        loss = tf.reduce_sum(model(x) ** 2)
                    gradients = tape.gradient(loss, model.trainable_variables)
                    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
                strategy.run(replica_step, args=(x,))

            dataset = strategy.experimental_distribute_dataset(
                tf.data.Dataset.from_tensor_slices(np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3)).batch(4))
            for x in dataset:
                step(x)
            copies = [[c.numpy() for c in v.value.values] for v in model.trainable_variables]
            assert all(np.array_equal(c[0], c[1]) for c in copies), "replicas diverged"
            results.append([c[0] for c in copies])
        for ours, theirs in zip(*results):
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
        print("OK", results[0][1])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout and "[1. 1.]" not in result.stdout  # the bias moved
