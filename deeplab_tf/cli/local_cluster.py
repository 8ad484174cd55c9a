"""deeplab-local-cluster: runs a training command as a cluster of processes on this machine.

Asynchronous (ParameterServerStrategy, the paper's Table 11): a chief, --num_workers workers and --num_ps ps.

    deeplab-local-cluster --num_workers=2 --num_ps=1 --log_dir=runs/async/logs -- \\
        deeplab-train --config=experiments/configs/table11_async_training.py:parameter_server \\
        --workdir=runs/async --config.dataset.train_pattern='tfrecords/voc2012/trainaug-*'

Each ps and worker task runs the command with its own TF_CONFIG in the background (deeplab-train
then only serves); the chief runs it in the foreground and trains. --log_dir holds each task's output
(<type>-<index>.log) and its TF_CONFIG (tf_config_<type>_<index>.json). Killing a worker is survived
(ClusterCoordinator reschedules its steps; restart it with TF_CONFIG="$(cat <log_dir>/tf_config_worker_1.json)"
and the same command); a lost ps ends the run with one line naming it: run the same command again, which
resumes from the last checkpoint.

Synchronous (MultiWorkerMirroredStrategy): --num_ps=0 starts --num_workers workers, one replica each;
worker 0 is the chief (it checkpoints and logs) and runs in the foreground, add
--config.train.strategy=multi_worker_mirrored. If a worker dies the others stop with an error naming
it; run the same command again to resume from the last checkpoint.

SIGTERM or Ctrl-C is passed to the chief, which saves a checkpoint (waited for up to --stop_timeout
seconds); then every task is stopped and this command exits non-zero. When the foreground task exits the
other tasks are stopped, and its exit status is this command's.
"""

import json
import os
import shlex
import signal
import sys
import tempfile
import time

from absl import app, flags

from deeplab_tf.cli import entry

from deeplab_tf.training import local_cluster

_NUM_WORKERS = flags.DEFINE_integer("num_workers", 2, "Worker processes: the number of replicas.")
_NUM_PS = flags.DEFINE_integer(
    "num_ps", 1, "Parameter-server processes; 0 starts workers only (--config.train.strategy=multi_worker_mirrored).")
_STOP_TIMEOUT = flags.DEFINE_float(
    "stop_timeout", 300.0, "Seconds to wait for the chief's checkpoint after SIGTERM or Ctrl-C before every task is "
    "stopped; a second signal stops them at once.")
# --log_dir is absl.logging's own flag (defining it again is a DuplicateFlagError); absl only writes into it when
# asked to, so it is free to mean "each task's output and TF_CONFIG", and listed in our --help.
flags.declare_key_flag("log_dir")


class _Signals:
    """SIGTERM and SIGINT, recorded and passed to the chief (which saves on either) instead of ending this process
    with the tasks left running, or a KeyboardInterrupt traceback."""

    def __init__(self):
        self.received = []
        self.chief = None

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        del frame
        self.received.append(signal.Signals(signum))
        if len(self.received) == 1:
            self._forward()

    def forward_to(self, chief):
        self.chief = chief
        if self.received:  # A signal that came while the tasks were starting.
            self._forward()

    def _forward(self):
        if self.chief and self.chief.poll() is None:
            self.chief.send_signal(self.received[0])

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _wait_for_chief(chief, signals, stop_timeout):
    """The chief's exit status, or None when it has not saved and exited `stop_timeout` s after a signal (or a
    second signal came)."""
    while chief.poll() is None:
        if signals.received:
            deadline = time.time() + stop_timeout
            while chief.poll() is None and time.time() < deadline and len(signals.received) == 1:
                time.sleep(0.2)
            return chief.poll()
        time.sleep(0.2)
    return chief.returncode


def _report(status, signals, message, resume, chief_log):
    """(exit status, the one line for stderr or None)."""
    if signals.received:
        saved = ("the chief saved its checkpoint (above)" if status == 0 else
                 f"the chief ended with status {status} (see {chief_log})" if status is not None else
                 "the chief did not save in time and was stopped; its last checkpoint is kept")
        return 128 + signals.received[0], f"{signals.received[0].name} received: {saved}; every task stopped; {resume}"
    if status and message:
        # The chief's own resume hint means rerunning deeplab-train; the user reruns this launcher.
        return status, message.replace("run the same command to resume.", resume)
    return status, message or (f"the chief ended with status {status}: see {chief_log}" if status else None)


def main(argv):
    command = argv[1:]
    if not command:
        raise app.UsageError("Give the command to run after --, e.g. -- deeplab-train --config=... --workdir=...")
    try:
        cluster = local_cluster.make_cluster(num_workers=_NUM_WORKERS.value, num_ps=_NUM_PS.value)
    except ValueError as error:
        raise app.UsageError(str(error))
    log_dir = flags.FLAGS.log_dir or tempfile.mkdtemp(prefix="deeplab-local-cluster-logs-")
    local_cluster.write_task_configs(log_dir, cluster)
    resume = f"run the same command to resume: {shlex.join(['deeplab-local-cluster', *sys.argv[1:]])}"
    with _Signals() as signals:
        tasks = local_cluster.LocalCluster(command, cluster, log_dir=log_dir)
        try:
            signals.forward_to(tasks.foreground)
            print(f"Started {len(tasks.processes) - 1} background tasks, their output and TF_CONFIG in {log_dir}: "
                  f"{json.dumps(cluster)}", flush=True)
            status = _wait_for_chief(tasks.foreground, signals, _STOP_TIMEOUT.value)
        finally:
            tasks.close()
    chief_log = os.path.join(log_dir, "{}-{}.log".format(*local_cluster.foreground_task(cluster)))
    status, line = _report(status, signals, tasks.output.message, resume, chief_log)
    if line:
        print(f"deeplab-local-cluster: {line}", file=sys.stderr)
    sys.exit(status)


def run():
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
