"""tf.distribute strategies by name; clusters come from TF_CONFIG."""

import hashlib
import json
import os
import re
import tempfile

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "parameter_server", "tpu")


def task_from_tf_config():
    """(task type, task index) of this process from TF_CONFIG, or (None, None) without a cluster."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    return task.get("type"), task.get("index")


def serves_parameter_servers():
    """Whether this process is a worker or ps task of a parameter-server cluster (TF_CONFIG has ps tasks):
    such a task only hosts variables and runs the steps the chief schedules. Workers of a cluster without
    ps (MultiWorkerMirroredStrategy) train like the chief."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    return bool(config.get("cluster", {}).get("ps")) and task_from_tf_config()[0] in ("worker", "ps")


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


class LostPeerError(ConnectionError):
    """A worker of a MultiWorkerMirroredStrategy job stopped answering: the synchronous job cannot go on."""


def is_multi_worker_chief(strategy):
    """False only on the non-chief workers of a MultiWorkerMirroredStrategy cluster (the chief task, or
    worker 0 of a cluster without one, is the chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or not resolver or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs)


def own_workdir(strategy, workdir):
    """Where this process writes checkpoints, summaries and its config: `workdir`, or on a non-chief
    MultiWorkerMirroredStrategy worker a scratch folder of its own in the temp dir (every worker saves the
    same weights; two writers of one folder corrupt it). One per task and workdir, so reruns reuse it."""
    if is_multi_worker_chief(strategy):
        return workdir
    resolver = strategy.cluster_resolver
    key = hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:10]
    return os.path.join(tempfile.gettempdir(), f"deeplab-{resolver.task_type}-{resolver.task_id}-{key}")


def lost_peer_error(error, latest_checkpoint):
    """The one-line LostPeerError for a collective that failed because a peer died (`error`, a tf.errors.OpError)."""
    peers = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", error.message)))
    who = ", ".join(peers) if peers else "a worker"
    return LostPeerError(
        f"lost {who} of the MultiWorkerMirroredStrategy job ({type(error).__name__}: "
        f"{error.message.splitlines()[0][:200]}). The last checkpoint is {latest_checkpoint or 'none yet'}; "
        f"run the same command to resume.")
