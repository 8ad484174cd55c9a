"""A training run's directory: its model config and checkpoints, and loading a model back from them.

Layout written by the trainer:

    <workdir>/model_config.json      DeepLabV3.get_config() of the trained model
    <workdir>/config.json            the full experiment config and flags
    <workdir>/checkpoints/ckpt-<n>.* tf.train.Checkpoint(model=..., optimizer=..., step=...)
    <workdir>/train.lock             PID, host and process of the trainer running in it (`TrainerLock`)
"""

import json
import os
import re
import socket
import time

import tensorflow as tf

from deeplab_tf.modeling import DeepLabV3
from deeplab_tf.modeling import folding, release
from deeplab_tf.modeling.aspp import default_atrous_rates
from deeplab_tf.modeling.precision import dtype_policy

MODEL_CONFIG = "model_config.json"
RUN_CONFIG = "config.json"
CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir):
    return os.path.join(workdir, CHECKPOINT_DIR)


def save_model_config(workdir, model):
    """Writes the model's config next to the checkpoints so eval/vis/export can rebuild it."""
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(os.path.join(workdir, MODEL_CONFIG), "w") as f:
        json.dump(model.get_config(), f, indent=2)


# The files of one checkpoint: a user may point at one of them instead of their common prefix.
_CHECKPOINT_FILE_SUFFIX = re.compile(r"\.(index|data-\d+-of-\d+)$")


def resolve_checkpoint(path):
    """A workdir, a checkpoint directory or a checkpoint prefix -> (workdir, checkpoint prefix)."""
    if tf.io.gfile.isdir(path):
        directory = checkpoint_dir(path) if tf.io.gfile.isdir(checkpoint_dir(path)) else path
        prefix = tf.train.latest_checkpoint(directory)
        if prefix is None:
            raise FileNotFoundError(f"No checkpoint in {directory!r}: has training saved one yet?")
    else:
        prefix = _CHECKPOINT_FILE_SUFFIX.sub("", path)
        if not tf.io.gfile.exists(prefix + ".index"):
            raise FileNotFoundError(
                f"No checkpoint {prefix!r} (expected {prefix}.index): give a workdir, its checkpoints/ "
                f"directory or a prefix like <workdir>/checkpoints/ckpt-1000.")
        directory = os.path.dirname(prefix)
    workdir = os.path.dirname(directory) if os.path.basename(directory) == CHECKPOINT_DIR else directory
    return workdir, prefix


class CheckpointReadError(ValueError):
    """A checkpoint's files cannot be read (cut short by a copy or a full disk, or corrupt)."""


class CheckpointDeletedError(FileNotFoundError):
    """A checkpoint was deleted while it was read: a trainer keeps only its newest `keep_checkpoints`."""


def checkpoint_step(prefix):
    """The training step of a checkpoint: the N of the trainer's ``ckpt-N`` prefixes, else 0."""
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else 0


def earlier_checkpoints(prefix):
    """The prefixes of the checkpoints beside `prefix` with a lower step, newest first."""
    others = (path[:-len(".index")] for path in tf.io.gfile.glob(os.path.join(os.path.dirname(prefix), "*.index")))
    return sorted((other for other in others if checkpoint_step(other) < checkpoint_step(prefix)),
                  key=checkpoint_step, reverse=True)


def checkpoint_deleted(prefix):
    """Whether checkpoint `prefix` is gone or going, as a trainer's CheckpointManager deletes its oldest: its
    index or a data shard is missing. A checkpoint whose files are all there but unreadable was cut short instead."""
    data = tf.io.gfile.glob(prefix + ".data-*")
    return not tf.io.gfile.exists(prefix + ".index") or not data or len(data) < int(data[0].rsplit("-of-", 1)[1])


def restore(checkpoint, prefix):
    """`checkpoint.restore(prefix)`; a checkpoint whose files cannot be read raises `CheckpointReadError`
    naming it (TensorFlow's reader says only "Read less bytes than requested", an IndexError), one deleted
    while it was read `CheckpointDeletedError`."""
    try:
        return checkpoint.restore(prefix)
    except (IndexError, tf.errors.OpError) as error:
        if checkpoint_deleted(prefix):
            raise CheckpointDeletedError(
                f"checkpoint {prefix} was deleted while it was read (the trainer keeps only its newest "
                f"config.train.keep_checkpoints): give a newer one") from None
        message = error.message if isinstance(error, tf.errors.OpError) else str(error)
        raise CheckpointReadError(f"checkpoint {prefix} cannot be read ({message}): its files are cut short or "
                                  f"corrupt (a copy, or a save on a full disk, that did not finish)") from None


def save_run_config(config, workdir, extra=None):
    """Writes the experiment config (a ConfigDict) and `extra` facts (the command line, TF_CONFIG) to
    `<workdir>/config.json`."""
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(os.path.join(workdir, RUN_CONFIG), "w") as f:
        f.write(json.dumps({"config": json.loads(config.to_json_best_effort()), **(extra or {})}, indent=2))


def recorded_config(workdir):
    """The experiment config deeplab-train recorded in `<workdir>/config.json` (a dict), or None without one."""
    path = os.path.join(workdir, RUN_CONFIG)
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.load(f).get("config")
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{path} is not the JSON deeplab-train writes ({error}): restore it or remove it.") from None


def recorded_eval_crop_size(workdir):
    """The evaluation canvas (height, width) the run's config.json records (config.dataset.eval_crop_size),
    or None when it records none (an empty list: each image at its own size) or there is no config.json.

    Raises:
        ValueError: the recorded value is not [height, width] in pixels (the message names the file).
    """
    crop = (recorded_config(workdir) or {}).get("dataset", {}).get("eval_crop_size")
    if not crop:
        return None
    if not (isinstance(crop, list) and len(crop) == 2 and all(isinstance(side, int) and side > 0 for side in crop)):
        raise ValueError(f"{os.path.join(workdir, RUN_CONFIG)}: config.dataset.eval_crop_size is {crop!r}, not "
                         "[height, width] in pixels: fix it, or give the canvas (--eval_crop_size).")
    return tuple(crop)


def load_model_config(workdir):
    path = os.path.join(workdir, MODEL_CONFIG)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} is missing: the workdir was not written by deeplab-train, so the "
                                f"model cannot be rebuilt.")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def build_model_for_inference(model_config, *, output_stride=None, precision="float32"):
    """Rebuilds the trained model at another output stride (train at 16, evaluate at 8).

    ASPP rates derived from the output stride are re-derived; explicit ones scale by the stride ratio,
    so each rate keeps covering the same image area. `precision` is the Keras dtype policy to compute
    in ("mixed_bfloat16": bfloat16 convolutions on float32 weights; the logits stay float32).
    """
    config = dict(model_config)
    trained_stride = config["output_stride"]
    if output_stride and output_stride != trained_stride:
        config["output_stride"] = output_stride
        if config.get("atrous_rates"):
            config["atrous_rates"] = default_atrous_rates(
                output_stride, [r * trained_stride / 16 for r in config["atrous_rates"]])
    config["dropout_rate"] = 0.0
    with dtype_policy(precision):
        return DeepLabV3.from_config(config)


def load_model(path, *, output_stride=None, num_classes=None, precision="float32", fold_batch_norm=False,
               atrous_rates=None, multi_grid=None):
    """Builds the model of a training run, or of a checkpoint of the original release, and restores its weights.

    Args:
        path: a workdir, its checkpoints/ directory or a checkpoint prefix; or the original release's
            train_logdir or checkpoint prefix (`deeplab_tf.modeling.release`).
        output_stride: build at this output stride instead of the trained one (a release checkpoint: 16
            unless given, as the release's eval.py).
        num_classes: if given, check the checkpoint has this many classes.
        precision: dtype policy to compute in (see `build_model_for_inference`).
        fold_batch_norm: return the inference form, with batch norm folded into the convolutions
            (`deeplab_tf.modeling.folding.fold_batch_norm`: faster, cannot train).
        atrous_rates, multi_grid: a release checkpoint's ASPP rates at `output_stride` and block4's unit rates,
            as given to the release's eval.py (its names do not record them); not for our own workdirs.

    Returns:
        (model, checkpoint prefix, model config dict).
    """
    workdir, prefix = resolve_checkpoint(path)
    from_release = not tf.io.gfile.exists(os.path.join(workdir, MODEL_CONFIG)) and release.is_release_checkpoint(prefix)
    if from_release:
        model_config = release.release_model_config(prefix, output_stride=output_stride or 16,
                                                    atrous_rates=atrous_rates, multi_grid=multi_grid)
    elif atrous_rates or multi_grid:
        raise ValueError(f"--atrous_rates and --multi_grid describe a checkpoint of the original release; {prefix} "
                         f"is deeplab-train's, whose workdir records its model: drop them.")
    else:
        model_config = load_model_config(workdir)
    if num_classes is not None and model_config["num_classes"] != num_classes:
        raise ValueError(
            f"The checkpoint {prefix} has {model_config['num_classes']} classes but the dataset given has "
            f"{num_classes} (--dataset or --dataset_spec): give the dataset it was trained on.")
    model = build_model_for_inference(model_config, output_stride=output_stride, precision=precision)
    if from_release:
        release.load_release_checkpoint(model, prefix)
    else:
        try:
            status = restore(tf.train.Checkpoint(model=model), prefix)
        except CheckpointReadError as error:
            earlier = earlier_checkpoints(prefix)
            raise CheckpointReadError(f"{error}; " + (f"use an earlier one: --checkpoint={earlier[0]}" if earlier else
                                                      "there is no earlier checkpoint beside it")) from None
        status.expect_partial().assert_existing_objects_matched()
    return (folding.fold_batch_norm(model) if fold_batch_norm else model), prefix, model_config


# --- one live trainer per workdir --------------------------------------------------------------------

LOCK_FILE = "train.lock"


class WorkdirError(RuntimeError):
    """The workdir cannot be used as it is (another live trainer, a full disk); the message says what to do."""


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, but another user's.
        return True
    return True


def _process_identity(pid):
    """"<boot id>:<start time>" of a process on Linux (unique across PID reuse and reboots), else None."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip()
        with open(f"/proc/{pid}/stat") as f:
            # Field 22, the start time in clock ticks after boot; the 2nd (the name, in parentheses) may hold spaces.
            start_ticks = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{boot_id}:{start_ticks}"


def _still_running(lock):
    """Whether the trainer that wrote `lock` on this host runs: its PID is alive and, where the lock and Linux
    tell, the same process. A restarted container numbers its processes as before and a rebooted machine
    reuses PIDs, so a live PID alone can be another process, even the trainer that now reads the lock."""
    pid = int(lock["pid"])
    if not _process_alive(pid):
        return False
    recorded, current = lock.get("process"), _process_identity(pid)
    if recorded is None or current is None:  # Without both, only our own PID is known to be no other trainer.
        return pid != os.getpid()
    return recorded == current


def _read_lock(path):
    """The lock's {"pid", "host", "since", "process"}, or {} if it is unreadable (half-written by a killed
    trainer)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class TrainerLock:
    """`<workdir>/train.lock`: refuses a second live trainer in one workdir, so two runs never interleave
    their checkpoints.

    The lock holds the trainer's PID and host (and, on Linux, which process that PID was). A lock whose
    trainer no longer runs on this host (crashed or killed; its PID dead or now another process's) is
    taken over with a note; a lock from another host cannot be judged and needs
    `break_lock=True` (deeplab-train --break_lock). Released when the block ends, however it ends.
    Workdirs that are not local paths (gs://...) are not locked.
    """

    def __init__(self, workdir, *, break_lock=False, log=print):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._workdir, self._break_lock, self._log = workdir, break_lock, log
        self._owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "process": _process_identity(os.getpid())}
        self._held = False

    def __enter__(self):
        if "://" in self._workdir:
            return self
        os.makedirs(self._workdir, exist_ok=True)
        while not self._create():
            self._take_over(_read_lock(self.path))
        self._held = True
        return self

    def _create(self):
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as f:
            json.dump(self._owner, f)
        return True

    def _take_over(self, other):
        """Removes a lock left by a dead trainer (or any lock, with break_lock); refuses a live one."""
        pid, host = other.get("pid"), other.get("host")
        held_by = f"deeplab-train PID {pid} on host {host} (since {other.get('since')})"
        if self._break_lock:
            self._log(f"--break_lock: taking over {self.path} from {held_by}.")
        elif not other or (host == self._owner["host"] and not _still_running(other)):
            self._log(f"Taking over {self.path}: {held_by if other else 'an unreadable lock'} is no longer running.")
        else:
            raise WorkdirError(
                f"{self._workdir} is in use by {held_by}: wait for it to finish or stop it, or train into another "
                f"--workdir; if that trainer is no longer running (another host), rerun with --break_lock.")
        try:
            os.remove(self.path)
        except FileNotFoundError:  # Another starting trainer removed it first: race for the new lock.
            pass

    def __exit__(self, *exc):
        # Leave the lock alone if someone broke it and holds it now.
        if self._held and _read_lock(self.path).get("pid") == self._owner["pid"]:
            os.remove(self.path)
        self._held = False
