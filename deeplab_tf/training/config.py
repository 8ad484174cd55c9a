"""The training configuration: the paper's defaults (section 4.1), as an ml_collections ConfigDict.

Experiment files in `experiments/` start from `default_config()` and change what their table
varies; every field can be overridden on the command line (`--config.train.steps=1000`).
"""

import difflib
import math
import numbers
import os
import re

import ml_collections
import tensorflow as tf

from deeplab_tf.data import faults
from deeplab_tf.data.errors import DataError
from deeplab_tf.data.pipeline import list_files
from deeplab_tf.data.registry import dataset_names, get_dataset_info
from deeplab_tf.modeling.deeplab import HEADS
from deeplab_tf.modeling.resnet import BACKBONES, max_output_stride
from deeplab_tf.training.class_weights import requested_weights
from deeplab_tf.training.optimizers import OPTIMIZERS
from deeplab_tf.training.strategies import STRATEGIES
from deeplab_tf.workdir import RUN_CONFIG, recorded_config

# Section 4.3: the hard classes bootstrapped on PASCAL VOC (bicycle, chair, dining table, potted
# plant, sofa).
VOC_HARD_CLASSES = (2, 9, 11, 16, 18)
# How many batches' worth of the first training records `check_inputs` reads for a labelled pixel: a few, to stay cheap.
_LABEL_CHECK_BATCHES = 4


def default_config():
    config = ml_collections.ConfigDict()

    config.dataset = ml_collections.ConfigDict(dict(
        name="pascal_voc_seg",       # Registry name (num_classes, ignore label, class names).
        train_pattern="",            # TFRecord glob(s) of the training split, e.g. <dir>/trainaug-*; commas join globs.
        eval_pattern="",             # TFRecord glob scored after training (trained OS, one scale), if set.
        eval_crop_size=(),           # (H, W) canvas the evaluation pads each image to, as the release; (): own size.
        num_classes=0,               # 0: from the registry.
        ignore_label=255,
        bootstrap_classes=(),        # Hard classes duplicated in each epoch (section 4.3).
        bootstrap_factor=1,
    ))

    config.model = ml_collections.ConfigDict(dict(
        backbone="resnet_v1_101",
        output_stride=16,
        multi_grid=(1, 2, 4),
        num_cascaded_blocks=0,
        head="aspp",
        atrous_rates=(),             # Empty: (6, 12, 18) scaled by 16 / output_stride.
        image_pooling=True,
        aspp_filters=256,
        dropout_rate=0.1,
        bn_momentum=0.9997,
        bn_epsilon=1e-5,
        sync_bn=False,
        weight_decay=1e-4,
    ))

    config.train = ml_collections.ConfigDict(dict(
        strategy="default",
        tpu="",
        steps=30000,
        batch_size=16,               # Global batch, over all replicas.
        crop_size=(513, 513),
        min_scale=0.5,
        max_scale=2.0,
        scale_step=0.25,             # 0: continuous scales.
        flip=True,
        # Resize every image so its sides fall in [min, max] (sizes factor * k + 1) before the random
        # scale, and in the closing evaluation (its mIOU then at that size), as the release does for
        # ADE20K (513, 513, 16). 0: off (PASCAL VOC, Cityscapes).
        min_resize_value=0,
        max_resize_value=0,
        resize_factor=0,
        base_learning_rate=0.007,
        learning_rate_power=0.9,
        end_learning_rate=0.0,
        warmup_steps=0,
        warmup_learning_rate=1e-4,
        momentum=0.9,
        # "momentum": TF1's MomentumOptimizer, the original release's (a <- m a + g; w <- w - lr a);
        # "keras_sgd": Keras SGD's form (v <- m v - lr g; w <- w + v). Equal at a constant rate; a run keeps its form.
        optimizer="momentum",
        init_continue=False,         # Also take init_checkpoint's global step and momentum (continue its training).
        fine_tune_batch_norm=True,
        upsample_logits=True,        # Table 8: upsample logits rather than downsample labels.
        top_k_percent_pixels=1.0,
        class_weights=(),            # (): unweighted (the paper); one weight per class; or "inverse_frequency".
        init_checkpoint="",          # ImageNet TF-slim checkpoint or an earlier stage's workdir.
        init_exclude=("logits",),    # Regexes of variable paths not taken from an earlier stage.
        precision="float32",         # float32 | mixed_bfloat16 | mixed_float16.
        xla=False,
        seed=0,
        shuffle_buffer=1000,
        checkpoint_every_steps=1000,
        checkpoint_every_minutes=10.0,
        keep_checkpoints=5,
        log_every_steps=10,
        summary_every_steps=100,
        image_summary_every_steps=1000,
        steps_per_schedule=10,       # parameter_server: steps scheduled between joins.
        # Train on records whose first batches have no labelled pixel (every label the ignore label: masks saved
        # inverted, a wrong value map) with a warning, rather than refusing them.
        allow_unlabelled_batches=False,
    ))
    return config


# --- what each field takes ---------------------------------------------------------------------------

def _integer(low, high=None):
    """Whole numbers (not booleans) in [low, high]."""
    return lambda value: (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low
                          and (high is None or value <= high))


def _real(condition):
    """Finite numbers (not booleans) meeting `condition`."""
    return lambda value: (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                          and condition(value))


def _sequence(item, lengths=None):
    """Tuples (JSON's lists) of `lengths` items, each passing `item`."""
    return lambda value: (isinstance(value, (tuple, list)) and (lengths is None or len(value) in lengths)
                          and all(item(v) for v in value))


def _regex(value):
    """A string that compiles as a regular expression."""
    if not isinstance(value, str):
        return False
    try:
        re.compile(value)
    except re.error:
        return False
    return True


def _is(kind):
    return lambda value: isinstance(value, kind)


def _one_of(options):
    """(accepts, problem) of a field naming one of `options`."""
    return lambda value: isinstance(value, str) and value in options, f"is unknown; choose one of {', '.join(options)}"


def _size(*lengths):
    """N, or a tuple of `lengths` whole numbers from 1 (`--config.train.crop_size=81` arrives as (81,))."""
    return lambda value: _integer(1)(value) or _sequence(_integer(1), lengths)(value)


_SIZE_TEXT = "N or H,W in pixels, e.g. 513 or 513,513"
_FROM_1 = _integer(1), "is not a whole number from 1 up"
_FROM_0 = _integer(0), "is not a whole number from 0 up (0: off)"
_BOOL = _is(bool), "is not True or False"
_TEXT = _is(str), "is not a string"
_FRACTION = _real(lambda v: 0 <= v < 1), "is not a number in [0, 1)"
_NON_NEGATIVE = _real(lambda v: v >= 0), "is not a number >= 0"
_POSITIVE = _real(lambda v: v > 0), "is not a number > 0"


def _field_checks():
    """{"section.field": (accepts(value), what is wrong otherwise)} for every field of `default_config()`."""
    return {
        "dataset.name": _one_of(dataset_names()),
        "dataset.train_pattern": _TEXT,
        "dataset.eval_pattern": _TEXT,
        "dataset.eval_crop_size": (_size(0, 1, 2), f"is not () (each image at its own size) or {_SIZE_TEXT}"),
        "dataset.num_classes": (_integer(0, 256), "is not 0 (the dataset's) or a number of classes up to 256"),
        "dataset.ignore_label": (_integer(0, 255), "is not a label value in 0..255 (labels are 8-bit PNGs)"),
        "dataset.bootstrap_classes": (_sequence(_integer(0, 255)), "is not a tuple of class ids, e.g. 2,9,11"),
        "dataset.bootstrap_factor": _FROM_1,
        "model.backbone": _one_of(BACKBONES),
        "model.output_stride": (lambda v: _integer(4)(v) and v & (v - 1) == 0,
                                "is not a power of two from 4 up, e.g. 8 or 16"),
        "model.multi_grid": (_sequence(_integer(1), (0, 3)), "is not () or three unit rates, e.g. 1,2,4"),
        "model.num_cascaded_blocks": (_integer(0, 3), "is not a number of blocks in 0..3 (block5..block7)"),
        "model.head": _one_of(HEADS),
        "model.atrous_rates": (_sequence(_integer(1)), "is not () or ASPP rates, e.g. 6,12,18"),
        "model.image_pooling": _BOOL,
        "model.aspp_filters": _FROM_1,
        "model.dropout_rate": _FRACTION,
        "model.bn_momentum": (_real(lambda v: 0 <= v <= 1), "is not a number in [0, 1]"),
        "model.bn_epsilon": _POSITIVE,
        "model.sync_bn": _BOOL,
        "model.weight_decay": _NON_NEGATIVE,
        "train.strategy": _one_of(STRATEGIES),
        "train.tpu": _TEXT,
        "train.steps": _FROM_1,
        "train.batch_size": _FROM_1,
        "train.crop_size": (_size(1, 2), f"is not {_SIZE_TEXT}"),
        "train.min_scale": _POSITIVE,
        "train.max_scale": _POSITIVE,
        "train.scale_step": _NON_NEGATIVE,
        "train.flip": _BOOL,
        "train.min_resize_value": _FROM_0,
        "train.max_resize_value": _FROM_0,
        "train.resize_factor": _FROM_0,
        "train.base_learning_rate": _POSITIVE,
        "train.learning_rate_power": _NON_NEGATIVE,
        "train.end_learning_rate": _NON_NEGATIVE,
        "train.warmup_steps": _FROM_0,
        "train.warmup_learning_rate": _NON_NEGATIVE,
        "train.momentum": _FRACTION,
        "train.optimizer": _one_of(OPTIMIZERS),
        "train.init_continue": _BOOL,
        "train.fine_tune_batch_norm": _BOOL,
        "train.upsample_logits": _BOOL,
        "train.top_k_percent_pixels": (_real(lambda v: 0 < v <= 1), "is not a fraction in (0, 1]"),
        "train.class_weights": (lambda v: True, ""),  # check_config: `requested_weights` says what it takes
        "train.init_checkpoint": _TEXT,
        "train.init_exclude": (_sequence(_regex), "is not a tuple of regular expressions, e.g. logits"),
        "train.precision": _one_of(("float32", "mixed_bfloat16", "mixed_float16")),
        "train.xla": _BOOL,
        "train.seed": (_integer(0, 2 ** 32 - 1), "is not a whole number in 0..2**32-1"),
        "train.shuffle_buffer": _FROM_1,
        "train.checkpoint_every_steps": _FROM_1,
        "train.checkpoint_every_minutes": _POSITIVE,
        "train.keep_checkpoints": _FROM_1,
        "train.log_every_steps": _FROM_1,
        "train.summary_every_steps": _FROM_1,
        "train.image_summary_every_steps": _FROM_1,
        "train.steps_per_schedule": _FROM_1,
        "train.allow_unlabelled_batches": _BOOL,
    }


def _fields(config, prefix=""):
    """("section.field", value) of every field of a (nested) ConfigDict or dict."""
    for key, value in config.items():
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            yield from _fields(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def recorded_run_config(path):
    """The config a run recorded in `<workdir>/config.json`, to rerun it: `path` is the workdir or that file.

    The fields take `default_config()`'s types (JSON keeps tuples as lists), so command-line overrides and
    `check_config` treat them as a config file's. Raises ValueError naming the file and the field it records that
    this config does not have or cannot hold, FileNotFoundError without such a file.
    """
    workdir = os.path.dirname(path) if os.path.basename(path) == RUN_CONFIG else path
    recorded = recorded_config(workdir)
    if recorded is None:
        raise FileNotFoundError(f"{path} is neither a workdir holding a {RUN_CONFIG} nor such a file: give a "
                                f"workdir deeplab-train wrote, or its {RUN_CONFIG}.")
    config, file = default_config(), os.path.join(workdir, RUN_CONFIG)
    known = dict(_fields(config))
    for field, value in _fields(recorded):
        if field not in known:
            raise ValueError(f"{file} records config.{field}, which deeplab-train's config does not have: remove it "
                             f"from the file.")
        section, name = field.split(".")
        try:
            config[section][name] = value
        except TypeError:
            raise ValueError(f"{file} records config.{field}={value!r}, but the field holds "
                             f"{type(config[section][name]).__name__} values: fix it in the file.") from None
    return config


def check_fields(config):
    """Raises ValueError naming the field, its value and what it takes for a field `default_config()` does not
    have, lacks, or holds a value of the wrong type, sign, length or name. Sizes given as N become (N, N)."""
    known, values = dict(_fields(default_config())), dict(_fields(config))
    for path in values:
        if path not in known:
            close = difflib.get_close_matches(path, known, n=1)
            raise ValueError(f"config.{path} is not a field of deeplab-train's config" +
                             (f"; did you mean config.{close[0]}?" if close else ": see default_config()."))
    for path in known:
        if path not in values:
            raise ValueError(f"config.{path} is missing: start the config from "
                             f"deeplab_tf.training.config.default_config().")
    for path, (accepts, problem) in _field_checks().items():  # tests/test_training.py: one for every field
        if not accepts(values[path]):
            raise ValueError(f"config.{path}={values[path]!r} {problem}.")
    with config.ignore_type():  # N means N x N, as in the binaries' N or H,W flags
        for section, name in (("train", "crop_size"), ("dataset", "eval_crop_size")):
            size = (config[section][name],) if _integer(1)(config[section][name]) else config[section][name]
            if len(size) == 1:
                config[section][name] = (size[0], size[0])


def check_config(config, *, num_replicas):
    """Raises ValueError with the field and the fix for a configuration that cannot train (`check_fields`, then
    how the fields go together)."""
    check_fields(config)
    model, train = config.model, config.train
    if not config.dataset.train_pattern:
        raise ValueError("config.dataset.train_pattern is empty: give the TFRecord glob of the training split, "
                         "e.g. --config.dataset.train_pattern=/data/voc_tfrecord/trainaug-*")
    limit = max_output_stride(model.num_cascaded_blocks)
    if model.output_stride > limit:
        raise ValueError(f"config.model.output_stride={model.output_stride} needs more cascaded blocks "
                         f"(at most {limit} with num_cascaded_blocks={model.num_cascaded_blocks}).")
    smallest = 2 * model.output_stride + 1
    if min(train.crop_size) < smallest:
        raise ValueError(
            f"config.train.crop_size={tuple(train.crop_size)} is too small for output_stride={model.output_stride}: "
            f"the feature map would be under 3x3. Use a crop of at least {smallest} (e.g. "
            f"{model.output_stride * (min(train.crop_size) // model.output_stride + 2) + 1}) or a smaller "
            f"output stride.")
    if train.batch_size % num_replicas:
        raise ValueError(f"config.train.batch_size={train.batch_size} does not split over {num_replicas} replicas; "
                         f"use a multiple of {num_replicas}.")
    per_replica = train.batch_size // num_replicas
    if train.fine_tune_batch_norm and not model.sync_bn and per_replica < 2:
        raise ValueError(
            f"Training batch norm with {per_replica} image per replica cannot estimate batch statistics: raise "
            f"config.train.batch_size (the paper uses 16), set config.model.sync_bn=True, or freeze batch norm "
            f"with config.train.fine_tune_batch_norm=False.")
    if train.max_resize_value and not train.min_resize_value:
        raise ValueError(f"config.train.max_resize_value={train.max_resize_value} needs config.train.min_resize_value "
                         f"(the size of the shorter side, e.g. {train.max_resize_value}).")
    if train.min_scale > train.max_scale:
        raise ValueError(f"config.train.min_scale={train.min_scale} is above config.train.max_scale={train.max_scale}: "
                         f"swap them (the paper's: 0.5 and 2.0).")
    num_classes = config.dataset.num_classes or get_dataset_info(config.dataset.name).num_classes
    outside = [c for c in config.dataset.bootstrap_classes if c >= num_classes]
    if outside:
        raise ValueError(f"config.dataset.bootstrap_classes={tuple(config.dataset.bootstrap_classes)} names class "
                         f"{outside[0]}, but the dataset has {num_classes} classes (0..{num_classes - 1}).")
    if train.class_weights:
        requested_weights(train.class_weights, num_classes)


def check_init_checkpoint(path):
    """FileNotFoundError naming config.train.init_checkpoint when `path` is neither a checkpoint prefix nor a
    folder."""
    if not (tf.io.gfile.exists(path) or tf.io.gfile.exists(path + ".index")):
        raise FileNotFoundError(f"config.train.init_checkpoint={path!r} does not exist: give an ImageNet TF-slim "
                                f"checkpoint (resnet_v1_101.ckpt), a checkpoint of the original release or an "
                                f"earlier stage's workdir.")


def check_inputs(config, *, resuming=False, log=print):
    """Checks the inputs before the workdir is made: ValueError naming config.dataset.train_pattern or eval_pattern
    when it matches no file (the eval pattern was found after the training), FileNotFoundError naming
    config.train.init_checkpoint when a run that does not resume would start from a missing one (found after the
    workdir and its lock were made), DataError when the first batches of the training records hold no labelled
    pixel (a warning with config.train.allow_unlabelled_batches): such a run trained to the end at loss 0."""
    if config.train.init_checkpoint and not resuming:
        check_init_checkpoint(config.train.init_checkpoint)
    for pattern in (config.dataset.train_pattern, config.dataset.eval_pattern):
        if pattern:
            list_files(pattern.split(","))
    patterns = config.dataset.train_pattern.split(",")
    with faults.naming_faulty_records(patterns, log=log):
        unlabelled = faults.unlabelled_start(patterns, ignore_label=config.dataset.ignore_label,
                                             num_records=_LABEL_CHECK_BATCHES * config.train.batch_size)
    if unlabelled and not config.train.allow_unlabelled_batches:
        raise DataError(f"{unlabelled}; or set config.train.allow_unlabelled_batches=True to train on them anyway.")
    if unlabelled:
        log(f"Warning: {unlabelled}. Training on them: config.train.allow_unlabelled_batches=True.")
