"""Table 10 (appendix A): training output stride 8, 16 or 32, each with the largest batch the paper
could fit (6, 16, 24). The table's evaluation output strides (16 and 8) are deeplab-eval flags.
"""

from experiments.configs import base

SETTINGS = {
    "train_os8": {"model.output_stride": 8, "train.batch_size": 6},
    "train_os16": {},
    "train_os32": {"model.output_stride": 32, "train.batch_size": 24},
}


def get_config(setting=None):
    return base.make(__file__, SETTINGS, setting)
