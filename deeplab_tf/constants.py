"""Constants shared by the model, the input pipeline and the tools."""

# Per-channel ImageNet mean (RGB, 0-255) that the original DeepLab release subtracts for its plain
# ResNet checkpoints (resnet_v1_50, resnet_v1_101). The model normalises its inputs itself, so images
# travel through the pipeline in 0-255 and crops are padded with this value (exactly 0 once subtracted).
MEAN_RGB = (123.15, 115.90, 103.06)

# Centre of the [-1, 1] range the release maps the inputs of its `_beta` checkpoints to (x / 127.5 - 1):
# their pad value, for the same reason.
UNIT_RANGE_CENTRE = (127.5, 127.5, 127.5)

# Label value excluded from the loss and the metrics (PASCAL VOC's object boundaries, Cityscapes'
# void classes, the padding of training crops).
IGNORE_LABEL = 255
