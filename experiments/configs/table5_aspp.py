"""Table 5: ASPP on ResNet-101 block4 at output stride 16: the multi-grid, a fourth atrous branch
(rate 24) and the image-level features.

`mg1_2_4_image_pooling` is the paper's final model (the default config); Table 6 evaluates it at
output stride 8, multi-scale and flipped.
"""

from experiments.configs import base

NO_POOLING = {"model.image_pooling": False}
SETTINGS = {
    "mg1_1_1": {**NO_POOLING, "model.multi_grid": (1, 1, 1)},
    "mg1_2_1": {**NO_POOLING, "model.multi_grid": (1, 2, 1)},
    "mg1_2_4": NO_POOLING,
    "mg1_2_4_rate24": {**NO_POOLING, "model.atrous_rates": (6, 12, 18, 24)},
    "mg1_2_4_image_pooling": {},
}


def get_config(setting=None):
    return base.make(__file__, SETTINGS, setting)
