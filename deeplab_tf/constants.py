"""Constants shared by the model, the input pipeline and the tools."""

# Per-channel ImageNet mean (RGB, 0-255) that the original DeepLab release subtracts for its ResNet
# checkpoints. The model subtracts it itself, so images travel through the pipeline in 0-255 and the
# training crop is padded with this value (which becomes exactly 0 after the subtraction).
MEAN_RGB = (123.15, 115.90, 103.06)

# Label value excluded from the loss and the metrics (PASCAL VOC's object boundaries, Cityscapes'
# void classes, the padding of training crops).
IGNORE_LABEL = 255
