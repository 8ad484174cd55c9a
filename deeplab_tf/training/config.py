"""The training configuration: the paper's defaults (section 4.1), as an ml_collections ConfigDict.

Experiment files in `experiments/` start from `default_config()` and change what their table
varies; every field can be overridden on the command line (`--config.train.steps=1000`).
"""

import ml_collections

from deeplab_tf.data.registry import get_dataset_info
from deeplab_tf.modeling.resnet import BACKBONES, max_output_stride
from deeplab_tf.training.class_weights import requested_weights
from deeplab_tf.training.optimizers import OPTIMIZERS
from deeplab_tf.training.strategies import STRATEGIES

# Section 4.3: the hard classes bootstrapped on PASCAL VOC (bicycle, chair, dining table, potted
# plant, sofa).
VOC_HARD_CLASSES = (2, 9, 11, 16, 18)


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
    ))
    return config


def check_config(config, *, num_replicas):
    """Raises ValueError with the field and the fix for a configuration that cannot train."""
    model, train = config.model, config.train
    if train.strategy not in STRATEGIES:
        raise ValueError(f"config.train.strategy={train.strategy!r} is unknown; choose one of {', '.join(STRATEGIES)}.")
    if model.backbone not in BACKBONES:
        raise ValueError(f"config.model.backbone={model.backbone!r} is unknown; choose one of {', '.join(BACKBONES)}.")
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
    if min(train.min_resize_value, train.max_resize_value, train.resize_factor) < 0:
        raise ValueError("config.train.min_resize_value, max_resize_value and resize_factor must be >= 0 (0: off).")
    if train.precision not in ("float32", "mixed_bfloat16", "mixed_float16"):
        raise ValueError(f"config.train.precision={train.precision!r}: use float32, mixed_bfloat16 or mixed_float16.")
    if train.optimizer not in OPTIMIZERS:
        raise ValueError(f"config.train.optimizer={train.optimizer!r} is unknown; choose one of {', '.join(OPTIMIZERS)}.")
    if train.steps <= 0:
        raise ValueError(f"config.train.steps must be positive, got {train.steps}.")
    if train.class_weights:
        num_classes = config.dataset.num_classes or get_dataset_info(config.dataset.name).num_classes
        requested_weights(train.class_weights, num_classes)
