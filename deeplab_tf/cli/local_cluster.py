"""deeplab-local-cluster: runs a command as a parameter-server cluster of processes on this machine.

    deeplab-local-cluster --num_workers=2 --num_ps=1 --log_dir=runs/ps/logs -- \
        deeplab-train --config=experiments/configs/table11_async_training.py:parameter_server --workdir=runs/ps \
        --config.train.strategy=parameter_server

Each ps and worker task runs the command with its own TF_CONFIG in the background (deeplab-train
then only serves); the chief runs it in the foreground and trains. When the chief exits the other
tasks are stopped. Killing a worker is survived (ClusterCoordinator reschedules its steps; start
it again with the TF_CONFIG written in its log dir); killing a ps or the chief needs the chief to be
started again, which resumes from the last checkpoint.
"""

import json
import os
import subprocess
import sys

from absl import app, flags

from deeplab_tf.training import local_cluster

_NUM_WORKERS = flags.DEFINE_integer("num_workers", 2, "Worker processes.")
_NUM_PS = flags.DEFINE_integer("num_ps", 1, "Parameter-server processes.")
_LOG_DIR = flags.DEFINE_string("log_dir", None, "Where each task's output and the cluster's TF_CONFIG go.")


def main(argv):
    command = argv[1:]
    if not command:
        raise app.UsageError("Give the command to run after --, e.g. -- deeplab-train --config=... --workdir=...")
    try:
        cluster = local_cluster.make_cluster(num_workers=_NUM_WORKERS.value, num_ps=_NUM_PS.value)
    except ValueError as error:
        raise app.UsageError(str(error))
    if _LOG_DIR.value:
        os.makedirs(_LOG_DIR.value, exist_ok=True)
        with open(os.path.join(_LOG_DIR.value, "cluster.json"), "w") as f:
            json.dump(cluster, f, indent=2)
    servers = local_cluster.start_servers(command, cluster, log_dir=_LOG_DIR.value)
    print(f"Started {len(servers)} server tasks: {json.dumps(cluster)}", flush=True)
    try:
        chief = subprocess.run(command, env=local_cluster.task_env(cluster, "chief", 0))
    finally:
        for process in servers.values():
            process.terminate()
        for process in servers.values():
            process.wait()
    sys.exit(chief.returncode)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
