"""Export for serving: a SavedModel for TensorFlow Serving, and TFLite.

    decoding.py     image bytes -> the pixels deeplab-vis reads (formats, EXIF orientation, size checks)
    signatures.py   the serving module, its two signatures, numbered versions (export_version)
    tflite.py       the float-image signature converted to TFLite
    int8.py         the network quantized to int8 for TFLite (post-training, calibrated on training images)
    interpreter.py  an int8 TFLite file run as a model (deeplab-eval --tflite, deeplab-vis --tflite)

See docs/export.md for the signatures, the recorded settings and serving. The names load their module on
first use, so deeplab-export's --help does not wait for TensorFlow.
"""

from deeplab_tf._lazy import lazy_exports
from deeplab_tf.constants import DEFAULT_MAX_IMAGE_PIXELS, WEIGHTS_DTYPES  # noqa: F401

_EXPORTS = {name: "signatures" for name in ("FLOAT_SIGNATURE", "LABEL_PADDING", "SERVING_SIGNATURE", "SETTINGS_FILE",
                                            "disk_size", "export_saved_model", "export_version", "next_version")}
_EXPORTS.update(export_tflite="tflite", export_int8_tflite="int8", TFLiteModel="interpreter")

__all__ = sorted([*_EXPORTS, "DEFAULT_MAX_IMAGE_PIXELS", "WEIGHTS_DTYPES"])

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
