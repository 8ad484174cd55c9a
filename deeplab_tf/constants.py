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

# The Keras dtype policies our binaries and benchmarks offer (deeplab_tf.modeling.precision).
PRECISIONS = ("float32", "mixed_bfloat16")

# The dtypes an exported SavedModel may store its weights in (deeplab_tf.export).
WEIGHTS_DTYPES = ("float32", "bfloat16", "float16")
# The largest image the served model decodes: Cityscapes' full 2048x1024 frames fit twice; larger requests are
# refused before decoding.
DEFAULT_MAX_IMAGE_PIXELS = 2048 * 2048

# TensorFlow's oneDNN convolutions re-lay out a variable's weights for their kernels on every call and keep
# the result only for constants. Set to 1 (or true), the weights of every traced graph count as constants:
# laid out at the graph's first call, then reused (R101 at 513x513 here: 7-11% faster). A graph whose
# variables change after its first call goes on computing with its first weights, so deeplab-eval and
# deeplab-vis set it in their own process and the trainer refuses to run with it. TensorFlow reads it once,
# at the first convolution of the process.
ASSUME_FROZEN_WEIGHTS = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"
