"""Table 3: ResNet-101 with 0-3 cascaded blocks and the multi-grid unit rates (r1, r2, r3) of block4
and every cascaded block, at output stride 16, no ASPP.

`block7_mg1_2_1` is the paper's best cascaded model, which Table 4 evaluates at output stride 8,
multi-scale and flipped.
"""

from experiments.configs import base

MULTI_GRIDS = ((1, 1, 1), (1, 2, 1), (1, 2, 3), (1, 2, 4), (2, 2, 2))
SETTINGS = {
    f"block{4 + blocks}_mg{'_'.join(map(str, grid))}": {"model.num_cascaded_blocks": blocks, "model.multi_grid": grid}
    for blocks in range(4) for grid in MULTI_GRIDS
}


def get_config(setting=None):
    return base.make(__file__, SETTINGS, setting, base.CASCADE)
