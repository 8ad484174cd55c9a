"""Runs a tiny training job under a strategy that needs a fresh process, then loads its checkpoint.

    python tests/run_training_job.py {mirrored|parameter_server} <tfrecord_dir> <workdir>
    python tests/run_training_job.py init <tfrecord_dir> <workdir>
    python tests/run_training_job.py mirrored_per_replica <tfrecord_dir> <workdir> <config.json>

mirrored: two logical CPU devices and synchronized BN. parameter_server: an in-process cluster of
two workers and one ps (ClusterCoordinator, asynchronous steps). init: only saves a freshly initialised
model as a workdir (ckpt-1), batch-norm statistics set from one batch, for runs that must start from the
same weights. mirrored_per_replica: the
config in <config.json> on two logical CPU devices, each replica with its own input pipeline (the input a
2-worker MultiWorkerMirroredStrategy job gives its workers). Prints RESULT <json> at the end.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplab_tf import workdir as workdir_lib  # noqa: E402
from deeplab_tf.data import train_dataset  # noqa: E402
from deeplab_tf.training.local_cluster import make_cluster  # noqa: E402
from deeplab_tf.training.trainer import build_model, train  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402
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


def two_cpu_replicas():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def per_replica_input(strategy):
    """`strategy` whose distribute_datasets_from_function calls the dataset function once per replica, with
    input_pipeline_id = replica id of num_replicas pipelines: what each worker of a MultiWorkerMirroredStrategy
    job with one replica per worker gets (the default gives one pipeline's consecutive batches to the replicas)."""
    distribute = strategy.distribute_datasets_from_function
    options = tf.distribute.InputOptions(experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA)
    strategy.distribute_datasets_from_function = lambda dataset_fn, options_=None: distribute(dataset_fn, options)
    return strategy


def save_initial_model(tfrecord_dir, workdir):
    """A fresh model whose batch-norm moving statistics are those of one training batch (bn_momentum 0),
    so that it can also start a run with frozen statistics (the paper's second stage)."""
    config = small_config(tfrecord_dir)
    config.model.bn_momentum = 0.0
    keras.utils.set_random_seed(0)
    model = build_model(config)
    images, _ = next(iter(train_dataset(config.dataset.train_pattern, batch_size=4, crop_size=(65, 65), seed=0)))
    model(images, training=True)
    tf.train.Checkpoint(model=model).save(os.path.join(workdir_lib.checkpoint_dir(workdir), "ckpt"))
    workdir_lib.save_model_config(workdir, model)
    print("RESULT " + json.dumps({"workdir": workdir}), flush=True)


def main(kind, tfrecord_dir, workdir, config_json=None):
    if kind == "init":
        return save_initial_model(tfrecord_dir, workdir)
    if kind == "mirrored_per_replica":
        config = ConfigDict(json.load(open(config_json)))
        strategy = per_replica_input(two_cpu_replicas())
    elif kind == "mirrored":
        config = small_config(tfrecord_dir, strategy="mirrored", steps=3)
        config.model.sync_bn = True
        strategy = two_cpu_replicas()
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
