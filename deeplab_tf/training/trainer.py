"""The training loop: the paper's protocol (section 4.1) under any tf.distribute strategy.

Reads top to bottom: strategy -> model and optimizer in its scope -> resume or initialise -> input
pipeline -> the loop (synchronous strategies step by step; ParameterServerStrategy schedules steps on
its workers through a ClusterCoordinator, the paper's asynchronous replicas) -> checkpoints, logs,
TensorBoard summaries. A restarted job resumes at its last checkpoint with the same learning-rate
position; SIGTERM / Ctrl-C saves before exiting; a NaN loss stops without saving.
"""

import dataclasses
import math
import os
import re
import shutil
import signal
import time

import keras
import numpy as np
import tensorflow as tf

from deeplab_tf import data, visualization, workdir as workdir_lib
from deeplab_tf.constants import ASSUME_FROZEN_WEIGHTS
from deeplab_tf.data import faults
from deeplab_tf.modeling import DeepLabV3, release, resnet
from deeplab_tf.modeling.checkpoints import checkpoint_prefix, load_slim_backbone
from deeplab_tf.modeling.precision import dtype_policy
from deeplab_tf.training.class_weights import resolve_class_weights
from deeplab_tf.training.config import check_config, check_init_checkpoint, check_inputs
from deeplab_tf.training.optimizers import make_optimizer
from deeplab_tf.training.schedules import PolyLearningRate
from deeplab_tf.training.step import make_train_step
from deeplab_tf.training.strategies import is_parameter_server, lost_peer_error, make_strategy, own_workdir


def num_classes_of(config):
    return config.dataset.num_classes or data.get_dataset_info(config.dataset.name).num_classes


def build_model(config):
    """DeepLabV3 from the config's model section (and the dataset's number of classes), computing in
    config.train.precision."""
    model = config.model
    with dtype_policy(config.train.precision):
        return DeepLabV3(
            num_classes=num_classes_of(config), backbone=model.backbone, output_stride=model.output_stride,
            multi_grid=tuple(model.multi_grid) or None, num_cascaded_blocks=model.num_cascaded_blocks,
            head=model.head, atrous_rates=tuple(model.atrous_rates) or None, image_pooling=model.image_pooling,
            aspp_filters=model.aspp_filters, dropout_rate=model.dropout_rate, bn_momentum=model.bn_momentum,
            bn_epsilon=model.bn_epsilon, sync_bn=model.sync_bn, weight_decay=model.weight_decay,
            fine_tune_batch_norm=config.train.fine_tune_batch_norm)


def _is_slim_checkpoint(path):
    """A TF-slim ImageNet checkpoint: a prefix, or a folder holding one (a model-zoo tarball unpacks to a lone
    `resnet_v1_101.ckpt` with no `checkpoint` file) rather than a deeplab-train workdir."""
    try:
        names = [name for name, _ in tf.train.list_variables(checkpoint_prefix(path))]
    except (FileNotFoundError, tf.errors.NotFoundError, ValueError):
        return False
    return any(name.startswith("resnet_v1") for name in names)


def _check_release_structure(model, info):
    """One line naming the config field where the model cannot hold a release checkpoint's weights."""
    fields = [("model.backbone", model.backbone_name, info.backbone, ""), ("model.head", model.head, info.head, "")]
    if model.head == info.head == "aspp":
        fields += [("model.image_pooling", model.image_pooling, info.image_pooling, ""),
                   ("model.aspp_filters", model.aspp_filters, info.aspp_filters, " filters"),
                   ("model.atrous_rates", len(model.resolved_atrous_rates), info.num_atrous_rates, " atrous rates")]
    for field, ours, theirs, unit in fields:
        if ours != theirs:
            raise ValueError(f"config.train.init_checkpoint={info.prefix} (the original release's) has {field}="
                             f"{theirs}{unit}, config.{field} gives {ours}{unit}: set it as the release's train.py "
                             f"was run.")


def initialize_from(model, path, *, exclude=("logits",), optimizer=None, global_step=None):
    """Initialises `model` from an ImageNet TF-slim checkpoint, a checkpoint of the original release, or an
    earlier stage's workdir/checkpoint.

    From an earlier stage or the release, variables are matched by their path (the release's by its names);
    those matching an `exclude` regex (e.g. `logits` when the number of classes changes) keep their initial
    values. With `optimizer` and `global_step` (config.train.init_continue) the momentum slots and the step
    are taken too, to continue that training. Returns a printable summary.
    """
    check_init_checkpoint(path)
    if release.is_release_checkpoint(path):
        _check_release_structure(model, release.inspect_release_checkpoint(path))
        return release.load_release_checkpoint(model, path, exclude=exclude, optimizer=optimizer,
                                               global_step=global_step).summary()
    if optimizer is not None:
        raise ValueError(f"config.train.init_continue needs a checkpoint with an optimizer state (the original "
                         f"release's); {path} is not one: to continue one of our runs, train in its --workdir.")
    if _is_slim_checkpoint(path):
        return load_slim_backbone(model.backbone, path).summary()
    source, prefix, _ = workdir_lib.load_model(path)
    source_variables = {v.path: v for v in source.weights}
    loaded, excluded, mismatched = 0, [], []
    for variable in model.weights:
        if any(re.search(pattern, variable.path) for pattern in exclude):
            excluded.append(variable.path)
            continue
        other = source_variables.get(variable.path)
        if other is None or tuple(other.shape) != tuple(variable.shape):
            mismatched.append(variable.path)
            continue
        variable.assign(other)
        loaded += 1
    lines = [f"Initialised {loaded} variables from {prefix}."]
    if excluded:
        lines.append(f"Excluded by config.train.init_exclude: {', '.join(excluded)}")
    if mismatched:
        lines.append(f"Not in the checkpoint or of another shape (kept initial values): {', '.join(mismatched)}")
    return "\n".join(lines)


def resize_options(train_cfg):
    """The pipelines' resize-to-range keyword arguments from config.train (0: off)."""
    return dict(min_resize_value=train_cfg.min_resize_value, max_resize_value=train_cfg.max_resize_value,
                resize_factor=train_cfg.resize_factor)


def _evaluate_after_training(config, checkpoint):
    """Scores `checkpoint` on config.dataset.eval_pattern at the trained output stride, one scale, on the
    config.dataset.eval_crop_size canvas if set."""
    from deeplab_tf.evaluation import evaluator

    info = data.get_dataset_info(config.dataset.name)
    if info.num_classes != num_classes_of(config):
        info = dataclasses.replace(info, num_classes=num_classes_of(config), class_names=(), colormap="pascal")
    crop = tuple(config.dataset.eval_crop_size) or None
    results, path = evaluator.evaluate_checkpoint(checkpoint, config.dataset.eval_pattern, dataset_info=info,
                                                  eval_crop_size=crop, resize=resize_options(config.train))
    return (f"Evaluation at output stride {results['output_stride']}: mIOU {results['mean_iou']:.4f} on "
            f"{config.dataset.eval_pattern} -> {path} ({evaluator.protocol_description(crop, results['resize'])})")


def _check_finite(model, step, manager):
    """Refuses to checkpoint weights that already overflowed (the loss is computed before the update)."""
    if not all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.trainable_variables):
        raise FloatingPointError(
            f"The weights became NaN/Inf at step {step}; training stopped without saving. The last good "
            f"checkpoint is {manager.latest_checkpoint or 'none (no checkpoint yet)'}. Lower "
            f"config.train.base_learning_rate.")


class _StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop checks, so it can save before exiting."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # Not the main thread: leave signals alone.
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _save_checkpoint(manager, step):
    """`manager.save` at `step`; when the write fails (a full disk), removes the partial files so the disk
    is not left full for the rerun, keeps the earlier checkpoints, and says how to resume."""
    try:
        return manager.save(checkpoint_number=step)
    except tf.errors.OpError as error:
        if not (isinstance(error, tf.errors.ResourceExhaustedError) or "No space left" in error.message):
            raise
        prefix = os.path.join(manager.directory, f"ckpt-{step}")
        partials = tf.io.gfile.glob(prefix + "_temp*")
        if prefix not in manager.checkpoints:
            partials += tf.io.gfile.glob(prefix + ".*")
        for partial in partials:
            (tf.io.gfile.rmtree if tf.io.gfile.isdir(partial) else tf.io.gfile.remove)(partial)
        raise workdir_lib.WorkdirError(
            f"could not write checkpoint {prefix} ({faults.op_error_summary(error)}); the partial files were "
            f"removed and {manager.latest_checkpoint or 'no earlier checkpoint'} is kept: free disk space in "
            f"{manager.directory}, then run the same command to resume.") from None


def _restore_newest_readable(checkpoint, latest, log):
    """Restores `latest`, or the newest earlier checkpoint whose files can be read when its own cannot (a copy or
    a save on a full disk cut it short): a resumed run loses the steps since that one, not the run. Returns the
    prefix restored, or None without checkpoints. The unreadable files are left where they are (the next save of
    that step replaces them)."""
    if latest is None:
        return None
    for prefix in [latest, *workdir_lib.earlier_checkpoints(latest)]:
        try:
            workdir_lib.restore(checkpoint, prefix).assert_existing_objects_matched()
            return prefix
        except workdir_lib.CheckpointReadError as error:
            log(f"{error}; trying the checkpoint before it.")
    raise workdir_lib.CheckpointReadError(
        f"no checkpoint in {os.path.dirname(latest)} can be read: restore them from a copy, or train into a new "
        f"--workdir")


def _format_eta(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _sample_triptych(model, images, labels, colormap):
    """[image | ground truth | prediction] strips for TensorBoard."""
    predictions = tf.argmax(model(images, training=False), axis=-1)
    strips = []
    for image, label, prediction in zip(images.numpy(), labels.numpy(), predictions.numpy()):
        strips.append(np.concatenate([
            image.astype(np.uint8),
            visualization.label_to_color_image(label, colormap),
            visualization.label_to_color_image(prediction, colormap)], axis=1))
    return np.stack(strips)


def _check_same_optimizer(name, workdir):
    """Refuses to resume a run with the other momentum form: its slots hold another quantity (-lr * a vs a)."""
    recorded = (workdir_lib.recorded_config(workdir) or {}).get("train", {})
    # Runs recorded before config.train.optimizer existed trained with Keras' form.
    previous = recorded.get("optimizer", "keras_sgd") if recorded else name
    if previous != name:
        raise ValueError(f"{workdir} was trained with config.train.optimizer={previous}, whose momentum slots "
                         f"{name} would misread: resume with --config.train.optimizer={previous}.")


def _is_chief(strategy):
    """False only for the tasks of a multi-worker cluster other than its chief (worker 0 without a chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().jobs or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def train(config, workdir, *, strategy=None, run_info=None, log=print, break_lock=False):
    """Trains DeepLabV3 as `config` says, checkpointing into `workdir`; returns a small summary dict.

    Args:
        config: a ConfigDict from `deeplab_tf.training.config.default_config()` (or an experiment).
        workdir: where checkpoints, summaries and the config go; an existing one is resumed.
        strategy: a tf.distribute strategy; by default built from `config.train.strategy`.
        run_info: extra JSON-able facts to store with the config (e.g. the command-line flags).
        log: where progress lines go.
        break_lock: take the workdir's lock even if its holder looks alive (see `workdir.TrainerLock`).

    Raises:
        workdir.WorkdirError: another live trainer holds the workdir, or a checkpoint could not be written.
        ValueError: TF_ONEDNN_ASSUME_FROZEN_WEIGHTS is on in this process (the weights would not train).
    """
    if os.environ.get(ASSUME_FROZEN_WEIGHTS, "").strip().lower() in ("1", "true"):
        raise ValueError(f"{ASSUME_FROZEN_WEIGHTS} is on in this process's environment: oneDNN would keep every "
                         "convolution's first weights and training would not learn. Unset it for training; it is "
                         "for processes that only run inference.")
    strategy = strategy or make_strategy(config.train.strategy, tpu=config.train.tpu)
    # MultiWorkerMirroredStrategy: every worker runs this function; all resume from workdir's checkpoint,
    # only the chief writes into workdir.
    resume_dir, own = workdir_lib.checkpoint_dir(workdir), own_workdir(strategy, workdir)
    check_config(config, num_replicas=strategy.num_replicas_in_sync)
    check_inputs(config, resuming=tf.train.latest_checkpoint(resume_dir) is not None, log=log)
    if own != workdir:  # A non-chief synchronous worker: its checkpoints are scratch, ~1 GB even for a small model.
        try:
            return _train(config, own, strategy, resume_dir=resume_dir, run_info=run_info, log=log)
        finally:
            shutil.rmtree(own, ignore_errors=True)
    if not _is_chief(strategy):
        return _train(config, workdir, strategy, resume_dir=resume_dir, run_info=run_info, log=log)
    with workdir_lib.TrainerLock(workdir, break_lock=break_lock, log=log):
        return _train(config, workdir, strategy, resume_dir=resume_dir, run_info=run_info, log=log)


def _train(config, workdir, strategy, *, resume_dir, run_info, log):
    log(f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s) in sync.")
    train_cfg = config.train
    info = data.get_dataset_info(config.dataset.name)
    # Initial weights come from Keras' global generator: seeded, a run from scratch is repeatable. Not under
    # ParameterServerStrategy, where the global TF seed would give every asynchronous worker's (unseeded)
    # input pipeline the same random stream.
    if not is_parameter_server(strategy):
        keras.utils.set_random_seed(train_cfg.seed)
    with strategy.scope():
        model = build_model(config)
        schedule = PolyLearningRate(
            train_cfg.base_learning_rate, train_cfg.steps, power=train_cfg.learning_rate_power,
            end_learning_rate=train_cfg.end_learning_rate, warmup_steps=train_cfg.warmup_steps,
            warmup_learning_rate=train_cfg.warmup_learning_rate)
        # The global step is a tf.Variable of its own: Keras increments optimizer.iterations by a read
        # then a write, which loses counts when asynchronous workers race; assign_add is atomic.
        global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                                  aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        optimizer = make_optimizer(train_cfg.optimizer, learning_rate=lambda: schedule(global_step),
                                   momentum=train_cfg.momentum)
        if train_cfg.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        # Must happen inside the scope, or the first distributed step fails on a placeholder.
        optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, global_step=global_step)
    manager = tf.train.CheckpointManager(checkpoint, workdir_lib.checkpoint_dir(workdir),
                                         max_to_keep=train_cfg.keep_checkpoints)
    latest = _restore_newest_readable(checkpoint, tf.train.latest_checkpoint(resume_dir), log)
    if latest:
        _check_same_optimizer(train_cfg.optimizer, workdir)
        log(f"Resuming from {latest} at step {int(global_step.numpy())}.")
    elif train_cfg.init_checkpoint:
        continued = dict(optimizer=optimizer, global_step=global_step) if train_cfg.init_continue else {}
        log(initialize_from(model, train_cfg.init_checkpoint, exclude=tuple(train_cfg.init_exclude), **continued))
    else:
        log("Training from random initialisation (no config.train.init_checkpoint).")
    workdir_lib.save_model_config(workdir, model)
    workdir_lib.save_run_config(config, workdir, run_info)

    ps = is_parameter_server(strategy)
    train_patterns = config.dataset.train_pattern.split(",")  # Several globs, e.g. fine + coarse.
    pad_value = resnet.pad_value(config.model.backbone)  # What the backbone's normalisation maps to 0.

    def dataset_fn(input_context):
        return data.train_dataset(
            train_patterns, batch_size=train_cfg.batch_size, crop_size=tuple(train_cfg.crop_size),
            min_scale=train_cfg.min_scale, max_scale=train_cfg.max_scale, scale_step=train_cfg.scale_step,
            flip=train_cfg.flip, ignore_label=config.dataset.ignore_label,
            bootstrap_classes=tuple(config.dataset.bootstrap_classes),
            bootstrap_factor=config.dataset.bootstrap_factor, shuffle_buffer=train_cfg.shuffle_buffer,
            # Asynchronous workers all have input pipeline 0: unseeded, they draw different batches.
            seed=None if ps else train_cfg.seed, input_context=input_context, pad_value=pad_value,
            **resize_options(train_cfg))

    def data_faults():
        return faults.naming_faulty_records(train_patterns, num_classes=num_classes_of(config),
                                            ignore_label=config.dataset.ignore_label, log=log)

    with data_faults():
        class_weights = resolve_class_weights(config, workdir, num_classes=num_classes_of(config), log=log)
    step_fn = make_train_step(model, optimizer, global_step=global_step, ignore_label=config.dataset.ignore_label,
                              top_k_percent_pixels=train_cfg.top_k_percent_pixels,
                              upsample_logits=train_cfg.upsample_logits, class_weights=class_weights)
    summary_writer = tf.summary.create_file_writer(os.path.join(workdir, "train"))
    with data_faults():
        sample_images, sample_labels = next(iter(data.train_dataset(
            train_patterns, batch_size=min(2, train_cfg.batch_size),
            crop_size=tuple(train_cfg.crop_size), seed=train_cfg.seed, shuffle_buffer=8,
            ignore_label=config.dataset.ignore_label, pad_value=pad_value, **resize_options(train_cfg))))
    colormap = visualization.get_colormap(info.colormap)

    if ps:
        coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
        per_worker_iterator = iter(coordinator.create_per_worker_dataset(
            tf.function(lambda: strategy.distribute_datasets_from_function(dataset_fn))))

        @tf.function
        def worker_fn(iterator):
            return strategy.run(step_fn, args=next(iterator))

        def run_steps(count):
            try:
                results = [coordinator.schedule(worker_fn, args=(per_worker_iterator,)) for _ in range(count)]
                coordinator.join()
                return {k: float(v) for k, v in results[-1].fetch().items()}
            except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
                # A lost worker is rescheduled around; a lost ps holds the variables: say so in one line.
                if "/job:ps/" not in error.message:
                    raise
                raise lost_peer_error(error, tf.train.latest_checkpoint(resume_dir), lost_job="ps") from None
    else:
        iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

        @tf.function(jit_compile=train_cfg.xla or None)
        def distributed_step(iterator):
            outputs = strategy.run(step_fn, args=next(iterator))
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in outputs.items()}

        def run_steps(count):
            try:
                for _ in range(count):
                    outputs = distributed_step(iterator)
                return {k: float(v) for k, v in outputs.items()}
            except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as error:
                # A synchronous multi-worker step fails this way when a peer died: say so in one line.
                if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
                    raise
                raise lost_peer_error(error, tf.train.latest_checkpoint(resume_dir)) from None

    step = first_step = int(global_step.numpy())
    chunk = train_cfg.steps_per_schedule if ps else 1
    last_save_time, last_saved_step = time.time(), step
    window_start, window_steps = time.time(), 0
    stop = _StopRequest()
    outputs = {}
    with stop, summary_writer.as_default(), data_faults():
        while step < train_cfg.steps and stop.signal is None:
            outputs = run_steps(min(chunk, train_cfg.steps - step))
            new_step = int(global_step.numpy())
            window_steps += new_step - step
            step = new_step
            if not all(math.isfinite(v) for v in outputs.values()):
                raise FloatingPointError(
                    f"The loss became {outputs['total_loss']} at step {step}; training stopped without saving. "
                    f"The last good checkpoint is {manager.latest_checkpoint or 'none (no checkpoint yet)'}. "
                    f"Lower config.train.base_learning_rate or check the labels (values outside "
                    f"[0, num_classes) other than the ignore label).")
            if step % train_cfg.log_every_steps < chunk or step >= train_cfg.steps:
                elapsed = time.time() - window_start
                seconds_per_step = elapsed / max(window_steps, 1)
                lr = float(schedule(step))
                log(f"step {step}/{train_cfg.steps} | loss {outputs['loss']:.4f} | total {outputs['total_loss']:.4f} | "
                    f"lr {lr:.6f} | {seconds_per_step:.2f} s/step | "
                    f"{train_cfg.batch_size / seconds_per_step:.1f} img/s | "
                    f"ETA {_format_eta(seconds_per_step * (train_cfg.steps - step))}")
                window_start, window_steps = time.time(), 0
            if step % train_cfg.summary_every_steps < chunk:
                for name, value in outputs.items():
                    tf.summary.scalar(f"train/{name}", value, step=step)
                tf.summary.scalar("train/learning_rate", float(schedule(step)), step=step)
            if step % train_cfg.image_summary_every_steps < chunk:
                tf.summary.image("train/image_label_prediction",
                                 _sample_triptych(model, sample_images, sample_labels, colormap), step=step)
            due = (step - last_saved_step >= train_cfg.checkpoint_every_steps
                   or time.time() - last_save_time >= 60 * train_cfg.checkpoint_every_minutes)
            if due and step < train_cfg.steps:
                _check_finite(model, step, manager)
                _save_checkpoint(manager, step)
                last_save_time, last_saved_step = time.time(), step
        if step != last_saved_step or manager.latest_checkpoint is None:
            _check_finite(model, step, manager)
            _save_checkpoint(manager, step)
    if stop.signal:
        log(f"{stop.signal} received: saved {manager.latest_checkpoint} at step {step}; run the same command "
            f"to resume.")
    else:
        log(f"Training finished at step {step}: {manager.latest_checkpoint}")
        if config.dataset.eval_pattern and step > first_step:
            log(_evaluate_after_training(config, manager.latest_checkpoint))
    return {"step": step, "checkpoint": manager.latest_checkpoint, "interrupted": stop.signal, **outputs}
