"""deeplab-train: trains DeepLabV3 from an experiment config.

    deeplab-train --config=experiments/configs/voc_recipe.py:stage1_trainaug_os16 \
        --workdir=runs/voc_recipe/stage1_trainaug_os16 \
        --config.dataset.train_pattern='tfrecords/voc2012/trainaug-*' \
        --config.train.init_checkpoint=weights/resnet_v1_101.ckpt

Any config field can be overridden with --config.<section>.<field>=value. Under a parameter-server
cluster (TF_CONFIG with chief, worker and ps tasks), worker and ps processes start their server
and wait; the chief trains. One trainer at a time uses a workdir (its lock, `<workdir>/train.lock`, is
released however the run ends; a crashed trainer's lock is taken over on this host).
"""

import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from deeplab_tf.cli import entry, tensorflow_start  # noqa: F401  (before TensorFlow loads)


class _UnusableRecordedConfig(Exception):
    """--config names a workdir or config.json that cannot be run again; not a ValueError, which absl would print
    as two lines of usage error."""


class _ConfigOrRunParser(flags.ArgumentParser):
    """--config: an experiment's Python file (`file.py[:setting]`, ml_collections' own parser), or a run's workdir or
    its config.json, whose recorded config is run again (a JSON file executed as Python failed on its first `true`)."""

    def __init__(self, file_parser):
        self._file_parser = file_parser

    def parse(self, argument):
        if not (argument.endswith(".json") or os.path.isdir(argument)):
            return self._file_parser.parse(argument)
        from deeplab_tf.training.config import recorded_run_config

        try:
            config = recorded_run_config(argument)
        except (ValueError, FileNotFoundError) as error:
            raise _UnusableRecordedConfig(f"--config={argument}: {error}") from None
        config.lock()
        return config

    def flag_type(self):
        return self._file_parser.flag_type()


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config: a Python file with get_config() (file.py[:setting]), or a run's workdir or "
    "its config.json to run the config it recorded again. --config.<section>.<field>=value overrides apply to either.")
flags.FLAGS["config"].parser = _ConfigOrRunParser(flags.FLAGS["config"].parser)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, summaries and the config; resumed if it exists.")
_BREAK_LOCK = flags.DEFINE_bool(
    "break_lock", False, "Train even if the workdir's lock names a trainer that looks alive (e.g. one on another "
    "host that is gone). Two live trainers in one workdir mix their checkpoints.")
_EXAMPLE_CONFIG = "experiments/configs/voc_recipe.py:stage1_trainaug_os16"


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
    # Here, not at the top: --help must not wait for TensorFlow.
    from deeplab_tf.training.strategies import (LostPeerError, check_own_port, serves_parameter_servers,
                                                task_from_tf_config, tf_config)

    try:
        task_type, task_index = task_from_tf_config()
        if serves_parameter_servers():
            check_own_port()
            _serve_cluster_task(task_type, task_index)
            return
    except ValueError as error:  # a mistake in TF_CONFIG
        sys.exit(f"deeplab-train: {error}")
    if _CONFIG.value is None:
        raise app.UsageError(f"--config is required, e.g. --config={_EXAMPLE_CONFIG}")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required: where checkpoints and summaries go.")

    import tensorflow as tf

    from deeplab_tf.training.trainer import train
    from deeplab_tf.workdir import WorkdirError

    tf.get_logger().setLevel("WARNING")  # The coordinator logs every join at INFO.

    try:
        train(_CONFIG.value, _WORKDIR.value, run_info={"argv": sys.argv, "tf_config": tf_config()},
              break_lock=_BREAK_LOCK.value)
    except (ValueError, FileNotFoundError, FloatingPointError, WorkdirError, LostPeerError) as error:
        print(f"deeplab-train: {error}", file=sys.stderr)
        sys.exit(1)


def _unknown_override(error, argv):
    """One line for a --config.<path>=value naming no field: ml_collections raises a KeyError/AttributeError
    whose text is "'<field>'" and, when a field is close, 'Did you mean "<field>"'."""
    while error.args and isinstance(error.args[0], Exception):  # AttributeError(KeyError(text))
        error = error.args[0]
    text = str(error.args[0] if error.args else error)
    field = re.search(r"'(\w+)'", text)
    if not field:
        return None
    name = field.group(1)
    flag = next((arg.split("=", 1)[0] for arg in argv if re.match(rf"--config\.(\w+\.)*{name}(\.|=|$)", arg)), None)
    if flag is None:
        return None
    path = flag[2:].split(".")
    section = ".".join(path[:path.index(name, 1)])
    closest = re.search(r'Did you mean "(\w+)"', text)
    hint = (f"; did you mean --{section}.{closest.group(1)}?" if closest
            else f": see the fields of {section} in the config file.")
    return f"{flag}: {section} has no field {name!r}{hint}"


def _parse_flags(argv):
    """absl's flag parsing, with an unknown config override or an unusable recorded config reported in one line
    instead of a traceback."""
    try:
        return entry.parse_flags(argv)
    except _UnusableRecordedConfig as error:
        message = str(error)
    except (AttributeError, KeyError) as error:
        message = _unknown_override(error, argv)
        if message is None:
            raise
    print(f"deeplab-train: {message}", file=sys.stderr)
    sys.exit(1)


def run():
    entry.run(main, __name__, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
