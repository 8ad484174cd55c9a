"""Table 1: ResNet-50 with block7 (block5-7 cascaded after block4, no ASPP) at output stride 8 to 256.

Output stride 256 is the network without any atrous convolution; every halving of it makes one more
block atrous. Multi-grid (1, 1, 1); otherwise section 4.1's protocol.
"""

from experiments.configs import base

COMMON = {**base.CASCADE, "model.backbone": "resnet_v1_50", "model.num_cascaded_blocks": 3}
SETTINGS = {f"os{stride}": {"model.output_stride": stride} for stride in (8, 16, 32, 64, 128, 256)}


def get_config(setting=None):
    return base.make(__file__, SETTINGS, setting, COMMON)
