"""Runs a tiny training job under a strategy that needs a fresh process, then loads its checkpoint.

    python tests/run_training_job.py {mirrored|parameter_server} <tfrecord_dir> <workdir>

mirrored: two logical CPU devices and synchronized BN. parameter_server: an in-process cluster of
two workers and one ps (ClusterCoordinator, asynchronous steps). Prints RESULT <json> at the end.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import tensorflow as tf  # noqa: E402

from deeplab_tf import workdir as workdir_lib  # noqa: E402
from deeplab_tf.training.local_cluster import make_cluster  # noqa: E402
from deeplab_tf.training.trainer import train  # noqa: E402
from training_utils import small_config  # noqa: E402


def in_process_parameter_server_strategy(num_workers=2, num_ps=1):
    cluster = make_cluster(num_workers=num_workers, num_ps=num_ps)
    del cluster["chief"]
    spec = tf.train.ClusterSpec(cluster)
    # A 2-core machine deadlocks unless workers get more inter-op threads than there are workers.
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=num_workers + 1)
    for job in ("worker", "ps"):
        for index in range(len(cluster[job])):
            tf.distribute.Server(spec, job_name=job, task_index=index, config=config, protocol="grpc", start=True)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(spec, rpc_layer="grpc")
    return tf.distribute.experimental.ParameterServerStrategy(resolver)


def main(kind, tfrecord_dir, workdir):
    if kind == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        config = small_config(tfrecord_dir, strategy="mirrored", steps=3)
        config.model.sync_bn = True
        strategy = None
    else:
        config = small_config(tfrecord_dir, strategy="parameter_server", steps=6, steps_per_schedule=3)
        strategy = in_process_parameter_server_strategy()
    summary = train(config, workdir, strategy=strategy)
    model, prefix, _ = workdir_lib.load_model(workdir, output_stride=8)
    logits = model(tf.zeros([1, 33, 33, 3]), training=False)
    print("RESULT " + json.dumps({"step": summary["step"], "checkpoint": prefix, "logits_shape": logits.shape.as_list(),
                                  "loss": summary["loss"]}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
