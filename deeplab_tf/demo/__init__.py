"""deeplab-demo's pieces: the embedded dataset, the pipeline, the montage.

The training length and batch shape live here, without TensorFlow, so deeplab-demo's flags and --help
state them without loading it.
"""

STEPS = 400
BATCH_SIZE = 8
CROP_SIZE = 113  # 7 * 16 + 1: the feature grid stays on pixel centres at output stride 16
