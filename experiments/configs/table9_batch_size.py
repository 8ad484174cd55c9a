"""Table 9 (appendix A): batch size 4, 8, 12, 16 while training batch norm, at output stride 16.

The batch is global; to spread it over devices and still normalise over all of it, add
--config.train.strategy=mirrored --config.model.sync_bn=True.
"""

from experiments.configs import base

SETTINGS = {f"batch{size}": {"train.batch_size": size} for size in (4, 8, 12, 16)}


def get_config(setting=None):
    return base.make(__file__, SETTINGS, setting)
