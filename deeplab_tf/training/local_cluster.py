"""A cluster of separate processes on this machine, without a cluster manager: one TF_CONFIG per task,
all on localhost ports. With ps tasks it is a parameter-server cluster (asynchronous training); without,
a MultiWorkerMirroredStrategy cluster of workers only (synchronous training, worker 0 is the chief)."""

import json
import os
import socket
import subprocess


def free_ports(count):
    """`count` distinct TCP ports free on localhost right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def make_cluster(*, num_workers, num_ps):
    """Localhost addresses: {"chief": [1], "worker": [num_workers], "ps": [num_ps]} for a parameter-server
    cluster, or {"worker": [num_workers]} when num_ps is 0 (MultiWorkerMirroredStrategy: one replica per
    worker, and with no chief task worker 0 is the chief, so every task computes)."""
    if num_workers < 1 or num_ps < 0:
        raise ValueError(f"--num_workers must be at least 1 and --num_ps at least 0 (0: synchronous workers "
                         f"only), got {num_workers} worker(s) and {num_ps} ps.")
    ports = iter(free_ports(num_workers + num_ps + (1 if num_ps else 0)))
    workers = {"worker": [f"localhost:{next(ports)}" for _ in range(num_workers)]}
    if not num_ps:
        return workers
    return {"chief": [f"localhost:{next(ports)}"], **workers, "ps": [f"localhost:{next(ports)}" for _ in range(num_ps)]}


def foreground_task(cluster):
    """(type, index) of the task that trains in the foreground: the chief, or worker 0 without one."""
    return ("chief", 0) if "chief" in cluster else ("worker", 0)


def task_env(cluster, task_type, index, base_env=None):
    """The environment of one task: `base_env` (default os.environ) plus its TF_CONFIG."""
    env = dict(os.environ if base_env is None else base_env)
    env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})
    return env


def start_task(command, cluster, task_type, index, *, log_dir=None, base_env=None):
    """Starts one task of the cluster running `command` (a list); its output goes to
    `<log_dir>/<task_type>-<index>.log` when log_dir is given."""
    stdout = None
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        stdout = open(os.path.join(log_dir, f"{task_type}-{index}.log"), "ab")
    try:
        return subprocess.Popen(command, env=task_env(cluster, task_type, index, base_env),
                                stdout=stdout, stderr=subprocess.STDOUT if stdout else None)
    finally:
        if stdout:
            stdout.close()


def start_servers(command, cluster, *, log_dir=None, base_env=None):
    """Starts every task but the foreground one (ps and workers, or workers 1..N-1 without ps);
    returns {(task_type, index): Popen}."""
    return {
        (task_type, index): start_task(command, cluster, task_type, index, log_dir=log_dir, base_env=base_env)
        for task_type in ("ps", "worker") for index in range(len(cluster.get(task_type, ())))
        if (task_type, index) != foreground_task(cluster)
    }
