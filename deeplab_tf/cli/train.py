"""deeplab-train: trains DeepLabV3 from an experiment config.

    deeplab-train --config=experiments/voc_trainaug_os16.py --workdir=runs/voc_os16 \
        --config.dataset.train_pattern='/data/voc_tfrecord/trainaug-*' \
        --config.train.init_checkpoint=/weights/resnet_v1_101.ckpt

Any config field can be overridden with --config.<section>.<field>=value. Under a parameter-server
cluster (TF_CONFIG with chief, worker and ps tasks), worker and ps processes start their server
and wait; the chief trains.
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from deeplab_tf.cli import entry
from deeplab_tf.training.strategies import LostPeerError, serves_parameter_servers, task_from_tf_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (a Python file with get_config()).")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, summaries and the config; resumed if it exists.")


def _serve_cluster_task(task_type, task_index):
    """Worker and ps tasks of a parameter-server cluster only host variables and run scheduled steps."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    num_workers = len(resolver.cluster_spec().as_dict().get("worker", []))
    # A 2-core machine deadlocks unless inter-op threads exceed the number of workers.
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=num_workers + 1)
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=task_type, task_index=task_index,
                                  protocol=resolver.rpc_layer or "grpc", config=config, start=True)
    print(f"{task_type} {task_index} serving at {server.target}", flush=True)
    server.join()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    task_type, task_index = task_from_tf_config()
    if serves_parameter_servers():
        _serve_cluster_task(task_type, task_index)
        return
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config=experiments/voc_trainaug_os16.py")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required: where checkpoints and summaries go.")

    import tensorflow as tf

    from deeplab_tf.training.trainer import train

    tf.get_logger().setLevel("WARNING")  # The coordinator logs every join at INFO.

    try:
        train(_CONFIG.value, _WORKDIR.value, run_info={"argv": sys.argv, "tf_config": json.loads(
            os.environ.get("TF_CONFIG", "{}") or "{}")})
    except (ValueError, FileNotFoundError, FloatingPointError, LostPeerError) as error:
        print(f"deeplab-train: {error}", file=sys.stderr)
        sys.exit(1)


def run():
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
