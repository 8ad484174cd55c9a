"""deeplab-local-cluster: runs a training command as a cluster of processes on this machine.

Asynchronous (ParameterServerStrategy, the paper's Table 11): a chief, --num_workers workers and --num_ps ps.

    deeplab-local-cluster --num_workers=2 --num_ps=1 --log_dir=runs/async/logs -- \\
        deeplab-train --config=experiments/configs/table11_async_training.py:parameter_server \\
        --workdir=runs/async --config.dataset.train_pattern='tfrecords/voc2012/trainaug-*'

Each ps and worker task runs the command with its own TF_CONFIG in the background (deeplab-train
then only serves); the chief runs it in the foreground and trains. Killing a worker is survived
(ClusterCoordinator reschedules its steps; start it again with the TF_CONFIG written in its log dir);
killing a ps or the chief needs the chief to be started again, which resumes from the last checkpoint.

Synchronous (MultiWorkerMirroredStrategy): --num_ps=0 starts --num_workers workers, one replica each;
worker 0 is the chief (it checkpoints and logs) and runs in the foreground, add
--config.train.strategy=multi_worker_mirrored. If a worker dies the others stop with an error naming
it; run the same command again to resume from the last checkpoint.

When the foreground task exits the other tasks are stopped, and its exit status is this command's.
"""

import json
import os
import subprocess
import sys

from absl import app, flags

from deeplab_tf.cli import entry

from deeplab_tf.training import local_cluster

_NUM_WORKERS = flags.DEFINE_integer("num_workers", 2, "Worker processes: the number of replicas.")
_NUM_PS = flags.DEFINE_integer(
    "num_ps", 1, "Parameter-server processes; 0 starts workers only (--config.train.strategy=multi_worker_mirrored).")
# --log_dir is absl.logging's own flag (defining it again is a DuplicateFlagError); absl only writes into it when
# asked to, so it is free to mean "each task's output and the cluster's TF_CONFIG", and listed in our --help.
flags.declare_key_flag("log_dir")


def main(argv):
    command = argv[1:]
    if not command:
        raise app.UsageError("Give the command to run after --, e.g. -- deeplab-train --config=... --workdir=...")
    try:
        cluster = local_cluster.make_cluster(num_workers=_NUM_WORKERS.value, num_ps=_NUM_PS.value)
    except ValueError as error:
        raise app.UsageError(str(error))
    if flags.FLAGS.log_dir:
        os.makedirs(flags.FLAGS.log_dir, exist_ok=True)
        with open(os.path.join(flags.FLAGS.log_dir, "cluster.json"), "w") as f:
            json.dump(cluster, f, indent=2)
    servers = local_cluster.start_servers(command, cluster, log_dir=flags.FLAGS.log_dir)
    print(f"Started {len(servers)} background tasks: {json.dumps(cluster)}", flush=True)
    try:
        chief = subprocess.run(command, env=local_cluster.task_env(cluster, *local_cluster.foreground_task(cluster)))
    finally:
        for process in servers.values():
            process.terminate()
        for process in servers.values():
            process.wait()
    sys.exit(chief.returncode)


def run():
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
