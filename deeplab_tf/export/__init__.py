"""Export for serving: a SavedModel for TensorFlow Serving, and TFLite.

    decoding.py     image bytes -> the pixels deeplab-vis reads (formats, EXIF orientation, size checks)
    signatures.py   the serving module, its two signatures, numbered versions (export_version)
    tflite.py       the float-image signature converted to TFLite

See docs/export.md for the signatures, the recorded settings and serving.
"""

from deeplab_tf.export.signatures import (DEFAULT_MAX_IMAGE_PIXELS, FLOAT_SIGNATURE, LABEL_PADDING,
                                          SERVING_SIGNATURE, SETTINGS_FILE, WEIGHTS_DTYPES, disk_size,
                                          export_saved_model, export_version, next_version)
from deeplab_tf.export.tflite import export_tflite

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "FLOAT_SIGNATURE", "LABEL_PADDING", "SERVING_SIGNATURE", "SETTINGS_FILE",
           "WEIGHTS_DTYPES", "disk_size", "export_saved_model", "export_tflite", "export_version", "next_version"]
