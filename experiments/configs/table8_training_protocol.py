"""Table 8 (appendix A): the new training protocol and each of its three changes taken away:
batch norm frozen, labels downsampled instead of logits upsampled, the old 321 crop.

All at output stride 16 with the final ASPP model.
"""

from experiments.configs import base

SETTINGS = {
    "baseline": {},
    "frozen_bn": {"train.fine_tune_batch_norm": False},
    "downsample_labels": {"train.upsample_logits": False},
    "crop321": {"train.crop_size": (321, 321)},
}


def get_config(setting=None):
    return base.make(__file__, SETTINGS, setting)
