"""tf.distribute strategies by name; clusters come from TF_CONFIG."""

import errno
import hashlib
import json
import os
import re
import socket
import tempfile

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "parameter_server", "tpu")
ROLES = ("chief", "worker", "ps")
_EXAMPLE_TF_CONFIG = '{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}'


def _tf_config_error(problem):
    return ValueError(f"TF_CONFIG {problem}.")


def _check_address(role, index, address):
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not (host and port.isdigit() and 0 < int(port) < 65536):
        raise _tf_config_error(f"gives {role} {index} the address {address!r}, not host:port with a port in 1..65535")


def tf_config():
    """TF_CONFIG ({} when unset), checked before TensorFlow reads it: JSON, the cluster's roles and host:port
    addresses, this task's role and index in it. A mistake is a ValueError naming TF_CONFIG and the fix (TensorFlow
    reported each in a 22-49 line traceback)."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        config = json.loads(text)
    except ValueError as error:
        raise _tf_config_error(f"is not JSON ({error}): give e.g. {_EXAMPLE_TF_CONFIG}") from None
    cluster, task = (config.get("cluster", {}), config.get("task", {})) if isinstance(config, dict) else (None, None)
    if not (isinstance(cluster, dict) and isinstance(task, dict)):
        raise _tf_config_error(f"is not an object with a cluster and a task: give e.g. {_EXAMPLE_TF_CONFIG}")
    for role, addresses in cluster.items():
        if role not in ROLES or not isinstance(addresses, list) or not addresses:
            raise _tf_config_error(f"has {role!r}: {addresses!r} in its cluster; give lists of addresses for the roles "
                                   f"{', '.join(ROLES)}")
        for index, address in enumerate(addresses):
            _check_address(role, index, address)
    if cluster:
        role, index = task.get("type"), task.get("index")
        if role not in cluster:
            raise _tf_config_error(f"gives this task the type {role!r}, which is not a role of its cluster "
                                   f"({', '.join(cluster)}): give one of those")
        if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(cluster[role])):
            raise _tf_config_error(f"gives this task the index {index!r}, but its cluster has {len(cluster[role])} "
                                   f"{role} address(es): give an index from 0 to {len(cluster[role]) - 1}")
    return config


def task_from_tf_config():
    """(task type, task index) of this process from TF_CONFIG, or (None, None) without a cluster."""
    task = tf_config().get("task", {})
    return task.get("type"), task.get("index")


def serves_parameter_servers():
    """Whether this process is a worker or ps task of a parameter-server cluster (TF_CONFIG has ps tasks):
    such a task only hosts variables and runs the steps the chief schedules. Workers of a cluster without
    ps (MultiWorkerMirroredStrategy) train like the chief."""
    return bool(tf_config().get("cluster", {}).get("ps")) and task_from_tf_config()[0] in ("worker", "ps")


def _port_taken(host, port):
    """Whether TCP `port` is taken on this machine, when `host` is one of its addresses (TensorFlow's server
    listens on every address at that port); False when that cannot be told (another machine, an IPv6 address)."""
    try:
        with socket.socket() as probe:
            probe.bind((host, 0))  # only this machine's own addresses can be bound
    except OSError:
        return False
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server, which may reuse a closing port
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def check_own_port():
    """Raises ValueError naming TF_CONFIG when this task's address is on this machine and its port is taken, before
    this process starts its server there."""
    config = tf_config()
    if not config.get("cluster"):
        return
    role, index = task_from_tf_config()
    address = config["cluster"][role][index]
    host, _, port = address.rpartition(":")
    if _port_taken(host, int(port)):
        raise ValueError(f"TF_CONFIG gives this task ({role} {index}) the address {address}, whose port is in use on "
                         f"this machine: stop what holds it (a task of an earlier run?) or give this task a free port.")


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
    if name in ("multi_worker_mirrored", "parameter_server"):
        check_own_port()
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
    """A worker of a MultiWorkerMirroredStrategy job, or a ps of a parameter-server cluster, stopped answering:
    the job cannot go on."""


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
    same weights; two writers of one folder corrupt it), removed when its training ends."""
    if is_multi_worker_chief(strategy):
        return workdir
    resolver = strategy.cluster_resolver
    key = hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:10]
    return os.path.join(tempfile.gettempdir(), f"deeplab-{resolver.task_type}-{resolver.task_id}-{key}")


def lost_peer_error(error, latest_checkpoint, lost_job=None):
    """The one-line LostPeerError for a collective that failed because a peer died (`error`, a tf.errors.OpError),
    or with lost_job="ps" for a parameter-server step that failed because a ps died."""
    job = lost_job or r"\w+"
    peers = sorted(set(re.findall(rf"/job:{job}/replica:\d+/task:\d+", error.message)))
    who = ", ".join(peers) if peers else "a worker"
    # A step's error opens with "Graph execution error:" and node names; the gRPC status says what happened.
    details = [re.sub(r"^\(\d+\) [A-Z_]+:\s*", "", line.strip()) for line in error.message.splitlines() if line.strip()
               and not re.match(r"Graph execution error|Detected at node|<stack traces|\d+ root error", line.strip())]
    return LostPeerError(
        f"lost {who} of the {'parameter-server cluster' if lost_job else 'MultiWorkerMirroredStrategy job'} "
        f"({type(error).__name__}: {(details or [''])[0][:200]}). "
        f"The last checkpoint is {latest_checkpoint or 'none yet'}; run the same command to resume.")
