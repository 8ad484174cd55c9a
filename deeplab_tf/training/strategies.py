"""tf.distribute strategies by name; clusters come from TF_CONFIG."""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "parameter_server", "tpu")


def task_from_tf_config():
    """(task type, task index) of this process from TF_CONFIG, or (None, None) without a cluster."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    return task.get("type"), task.get("index")


def make_strategy(name, *, tpu=""):
    """Builds the strategy `name` (see STRATEGIES).

    `parameter_server` is the paper's asynchronous replicas (Table 11): ParameterServerStrategy with
    a ClusterCoordinator in the chief; its cluster (chief, workers, ps) is read from TF_CONFIG.
    Variables are not sharded: Keras 3 cannot use ShardedVariable.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # All GPUs, or else every logical CPU device (several only when configured, e.g. in tests).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "parameter_server":
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        if not resolver.cluster_spec().jobs:
            raise ValueError("--strategy=parameter_server needs a cluster in TF_CONFIG (chief, worker and ps "
                             "tasks); see `deeplab-local-cluster` to start one on this machine.")
        return tf.distribute.experimental.ParameterServerStrategy(resolver)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"config.train.strategy={name!r} is unknown; choose one of {', '.join(STRATEGIES)}.")


def is_parameter_server(strategy):
    return isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)
