"""ADE20K SceneParsing, which the paper does not report: section 4.1's protocol (ResNet-101, output
stride 16, multi-grid (1, 2, 4), ASPP + image pooling, batch 16, learning rate 0.007, scales 0.5-2.0
in steps of 0.25, 513 x 513 crops, batch norm trained) on ADE20K train with the original release's
ADE20K adaptation (its g3doc/ade20k.md): 150K steps and 513 x 513 crops. 150 classes, "other"
ignored (datasets/build_ade20k_data.py).

Like the release, every image and label is first resized so that its sides fall in 513..513 with
sides of the form 16k + 1 (its min_resize_value = max_resize_value = 513, resize_factor = 16;
`preprocess.resize_to_range`, whose rule lowers the cap to 513 - 16: the longer side becomes 497)
before the random scaling, and the closing evaluation scores the resized images (mIOU at that size,
as the release's eval command), each on its own canvas since their sizes differ (eval_crop_size ()).
What the release does differently: it trains with batch 4 (for demonstration, its page says; batch norm needs more than 12).
"""

from experiments.configs import base

ADE20K_TRAIN = "tfrecords/ade20k/train-*"

COMMON = {
    "dataset.name": "ade20k",
    "dataset.train_pattern": ADE20K_TRAIN,
    "train.steps": 150000,
    "train.crop_size": (513, 513),
    "train.min_resize_value": 513,
    "train.max_resize_value": 513,
    "train.resize_factor": 16,
    "dataset.eval_crop_size": (),
}
SETTINGS = {"train": {}}


def get_config(setting=None):
    return base.make(__file__, SETTINGS, setting, COMMON)
