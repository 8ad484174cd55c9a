"""A parameter-server cluster of separate processes on this machine, for asynchronous training
without a cluster manager: one TF_CONFIG per task, all on localhost ports."""

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
    """{"chief": [...], "worker": [...], "ps": [...]} with localhost addresses."""
    if num_workers < 1 or num_ps < 1:
        raise ValueError(f"A parameter-server cluster needs at least one worker and one ps, got "
                         f"{num_workers} worker(s) and {num_ps} ps.")
    ports = iter(free_ports(1 + num_workers + num_ps))
    return {
        "chief": [f"localhost:{next(ports)}"],
        "worker": [f"localhost:{next(ports)}" for _ in range(num_workers)],
        "ps": [f"localhost:{next(ports)}" for _ in range(num_ps)],
    }


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
    """Starts every ps and worker task; returns {(task_type, index): Popen}."""
    return {
        (task_type, index): start_task(command, cluster, task_type, index, log_dir=log_dir, base_env=base_env)
        for task_type in ("ps", "worker") for index in range(len(cluster[task_type]))
    }
