"""What every experiment config shares: section 4.1's protocol, changed by flat overrides.

`default_config()` already is the paper's protocol with its best ASPP model (ResNet-101, output
stride 16, multi-grid (1, 2, 4), ASPP (6, 12, 18) + image pooling; VOC trainaug, 30K steps, batch 16,
crop 513, learning rate 0.007, batch norm trained, logits upsampled): the first stage of section 4.1
and the last row of Table 5. A table's module lists, for each of its settings, only the fields that
table varies, as `{"model.output_stride": 8}`, and returns `make(...)`.

Paths (TFRecords, ImageNet checkpoints, earlier stages' workdirs) are relative, like the
`--config=experiments/configs/<table>.py:<setting>` path itself: run deeplab-train from the
repository root, or override them (`--config.dataset.train_pattern='/data/voc/trainaug-*'`).
"""

import os

from deeplab_tf.training.config import default_config

# Where the converters in datasets/ write (their documented --output_dir), one glob per split.
VOC_TRAINAUG = "tfrecords/voc2012/trainaug-*"
VOC_TRAINVAL = "tfrecords/voc2012/trainval-*"
COCO_VOC_TRAIN = "tfrecords/coco_voc/train-*"
CITYSCAPES_TRAIN_FINE = "tfrecords/cityscapes/train-*"

# "Crop size 513 during both training and test": the original release pads every PASCAL VOC image
# (at most 500 x 500) to this canvas for evaluation (its eval_crop_size); Cityscapes sets its own.
VOC_EVAL_CROP_SIZE = (513, 513)

# Section 4.2's cascaded models: logits right on the last block, no ASPP, no multi-grid (Tables 1-2;
# Table 3 then varies the multi-grid).
CASCADE = {"model.head": "cascade", "model.multi_grid": (1, 1, 1)}


def imagenet_checkpoint(backbone):
    """TF-slim's ImageNet checkpoint of `backbone` as unpacked under weights/ (resnet_v1_101.ckpt)."""
    return f"weights/{backbone}.ckpt"


def workdir(config_file, setting):
    """The README's --workdir of a setting, runs/<module>/<setting>: later stages start from it."""
    return f"runs/{os.path.splitext(os.path.basename(config_file))[0]}/{setting}"


def make(config_file, settings, setting, common=None):
    """`default_config()` with the `common` overrides, then those of `settings[setting]`.

    Unless a setting says otherwise it trains on VOC trainaug from the backbone's ImageNet checkpoint
    and evaluates (config.dataset.eval_pattern) on the 513 x 513 canvas.
    """
    name = os.path.basename(config_file)
    if setting not in settings:
        problem = "needs a setting" if setting is None else f"has no setting {setting!r}"
        raise ValueError(
            f"{name} {problem}: give one after a colon, e.g. --config=experiments/configs/{name}:"
            f"{next(iter(settings))}; choose one of {', '.join(settings)}.")
    overrides = {**(common or {}), **settings[setting]}
    config = default_config()
    backbone = overrides.get("model.backbone", config.model.backbone)
    config.update_from_flattened_dict({
        "dataset.train_pattern": VOC_TRAINAUG,
        "dataset.eval_crop_size": VOC_EVAL_CROP_SIZE,
        "train.init_checkpoint": imagenet_checkpoint(backbone),
        **overrides,
    })
    return config
