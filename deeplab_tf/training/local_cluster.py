"""A cluster of separate processes on this machine, without a cluster manager: one TF_CONFIG per task,
all on localhost ports. With ps tasks it is a parameter-server cluster (asynchronous training); without,
a MultiWorkerMirroredStrategy cluster of workers only (synchronous training, worker 0 is the chief)."""

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


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


def tf_config(cluster, task_type, index):
    """The TF_CONFIG of one task, as JSON text."""
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def task_env(cluster, task_type, index, base_env=None):
    """The environment of one task: `base_env` (default os.environ) plus its TF_CONFIG."""
    env = dict(os.environ if base_env is None else base_env)
    env["TF_CONFIG"] = tf_config(cluster, task_type, index)
    return env


def write_task_configs(log_dir, cluster):
    """`<log_dir>/cluster.json`, and each task's TF_CONFIG as `tf_config_<type>_<index>.json`, ready for
    restarting that task by hand (TF_CONFIG="$(cat ...)" and the same command)."""
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, "cluster.json"), "w") as f:
        json.dump(cluster, f, indent=2)
    for task_type, addresses in cluster.items():
        for index in range(len(addresses)):
            with open(os.path.join(log_dir, f"tf_config_{task_type}_{index}.json"), "w") as f:
                f.write(tf_config(cluster, task_type, index) + "\n")


def _die_with_parent():
    """In the child before exec: SIGKILL when the launcher dies, even by SIGKILL (Linux), so no task outlives it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def start_task(command, cluster, task_type, index, *, log_dir=None, base_env=None, pipe=False):
    """Starts one task of the cluster running `command` (a list); its output goes to
    `<log_dir>/<task_type>-<index>.log` when log_dir is given, or to pipes with `pipe`. Each task has a
    session of its own: a terminal's Ctrl-C reaches only the launcher, which decides when tasks stop."""
    stdout = stderr = subprocess.PIPE if pipe else None
    if log_dir and not pipe:
        os.makedirs(log_dir, exist_ok=True)
        stdout, stderr = open(os.path.join(log_dir, f"{task_type}-{index}.log"), "ab"), subprocess.STDOUT
    try:
        return subprocess.Popen(command, env=task_env(cluster, task_type, index, base_env), stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr, start_new_session=True, preexec_fn=_die_with_parent)
    finally:
        if stderr == subprocess.STDOUT:
            stdout.close()


def start_servers(command, cluster, *, log_dir=None, base_env=None):
    """Starts every task but the foreground one (ps and workers, or workers 1..N-1 without ps);
    returns {(task_type, index): Popen}."""
    return {
        (task_type, index): start_task(command, cluster, task_type, index, log_dir=log_dir, base_env=base_env)
        for task_type in ("ps", "worker") for index in range(len(cluster.get(task_type, ())))
        if (task_type, index) != foreground_task(cluster)
    }


def stop_tasks(processes, grace_seconds=10):
    """SIGTERM to every process still running, SIGKILL to those left after `grace_seconds`; waits for all."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.time() + grace_seconds
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# TensorFlow's own log records on stderr: C++ and absl lines ("E0000 00:00:1796690291.756458   19283 context.cc:873]"),
# its Python logger ("ERROR:tensorflow:"), each followed by continuation lines (gRPC error details, stacks).
_TF_LOG_RECORD = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|(INFO|WARNING|ERROR):tensorflow:|"
                            r"WARNING: All log messages before absl::InitializeLog)")
# What ends such a record: our one-line messages, a Python traceback or warning.
_OWN_RECORD = re.compile(r"^(deeplab-\w+: |Traceback \(most recent call last\):|\S+\.py:\d+: \w*Warning: )")


class ForegroundOutput:
    """Relays the foreground task's output: all of it to its log file; stdout to ours; stderr to ours without
    TensorFlow's log records (a lost ps sends ~100 lines of gRPC errors). Its last `deeplab-train:`-style
    line, its one-line message, is kept for the launcher to report rather than printed."""

    def __init__(self, process, log_path):
        self.message = None
        self._log = open(log_path, "ab")
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._relay, args=(stream, console, filtered), daemon=True)
                         for stream, console, filtered in ((process.stdout, sys.stdout, False),
                                                           (process.stderr, sys.stderr, True))]
        for thread in self._threads:
            thread.start()

    def _relay(self, stream, console, filtered):
        in_tf_record = False
        for raw in iter(stream.readline, b""):
            with self._lock:
                self._log.write(raw)
                self._log.flush()
            line = raw.decode("utf-8", "replace")
            if filtered:
                if _TF_LOG_RECORD.match(line) or _OWN_RECORD.match(line):
                    in_tf_record = bool(_TF_LOG_RECORD.match(line))
                if in_tf_record:
                    continue
                if re.match(r"^deeplab-\w+: ", line):
                    self.message = line.split(": ", 1)[1].strip()
                    continue
            console.write(line)
            console.flush()

    def close(self):
        """Waits for the task's streams to end (it exited), then closes the log."""
        for thread in self._threads:
            thread.join(timeout=30)
        self._log.close()


class LocalCluster:
    """Every task of `cluster` running `command`: the foreground one relayed through `ForegroundOutput`, the
    others writing `<log_dir>/<type>-<index>.log`. Their temp dir (TMPDIR) is a folder of the launcher's, so the
    scratch checkpoints of non-chief synchronous workers go with it whenever the cluster is closed."""

    def __init__(self, command, cluster, *, log_dir):
        self.scratch_dir = tempfile.mkdtemp(prefix="deeplab-local-cluster-")
        env = {**os.environ, "TMPDIR": self.scratch_dir}
        self.processes = {}
        self.foreground = self.output = None
        try:
            self.processes = start_servers(command, cluster, log_dir=log_dir, base_env=env)
            task = foreground_task(cluster)
            self.foreground = self.processes[task] = start_task(command, cluster, *task, base_env=env, pipe=True)
            self.output = ForegroundOutput(self.foreground, os.path.join(log_dir, "{}-{}.log".format(*task)))
        except BaseException:
            self.close()
            raise

    def close(self, grace_seconds=10):
        """Stops every task still running (SIGTERM, then SIGKILL after `grace_seconds`) and removes the scratch."""
        stop_tasks(list(self.processes.values()), grace_seconds)
        if self.output:
            self.output.close()
        shutil.rmtree(self.scratch_dir, ignore_errors=True)
