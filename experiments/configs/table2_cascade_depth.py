"""Table 2: ResNet-50 and ResNet-101 with 0-3 cascaded blocks (block4 .. block7) at output stride 16.

No ASPP, multi-grid (1, 1, 1); otherwise section 4.1's protocol.
"""

from experiments.configs import base

SETTINGS = {
    f"resnet{depth}_block{4 + blocks}": {"model.backbone": f"resnet_v1_{depth}", "model.num_cascaded_blocks": blocks}
    for depth in (50, 101) for blocks in range(4)
}


def get_config(setting=None):
    return base.make(__file__, SETTINGS, setting, base.CASCADE)
