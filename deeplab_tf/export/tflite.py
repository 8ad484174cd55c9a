"""TFLite conversion of an exported SavedModel's float-image signature."""

import json
import os

import tensorflow as tf
from tensorflow.lite.python.convert_phase import ConverterError  # not exported as tf.lite.ConverterError

from deeplab_tf.export.signatures import FLOAT_SIGNATURE, SETTINGS_FILE


def export_tflite(saved_model_dir, path, *, float16_weights=False):
    """Converts the `predict_images` signature of an exported SavedModel to a TFLite file.

    `serving_default` cannot be converted: TFLite has no image decoding or ragged-tensor ops. Image
    sizes stay dynamic (resize the interpreter's input to each image). The converter folds the casts
    of half-precision SavedModel weights, so the TFLite weights are float32 unless `float16_weights`
    (TFLite has no bfloat16 weights).

    Raises:
        ValueError: the SavedModel computes in bfloat16, which TFLite has no kernels for.
        RuntimeError: with the converter's message, when TFLite cannot convert the model.
    """
    settings_path = os.path.join(saved_model_dir, SETTINGS_FILE)
    if tf.io.gfile.exists(settings_path):
        with tf.io.gfile.GFile(settings_path) as f:
            compute_dtype = json.load(f).get("compute_dtype", "float32")
        if compute_dtype != "float32":
            raise ValueError(f"{saved_model_dir} computes in {compute_dtype}, which TFLite has no kernels for: "
                             f"convert an export made with the default precision (float32).")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[FLOAT_SIGNATURE])
    if float16_weights:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    write_flatbuffer(convert(converter, f"{saved_model_dir} ({FLOAT_SIGNATURE})"), path)
    return path


def convert(converter, source):
    """`converter.convert()`, its failure a RuntimeError naming `source` (what was converted).

    Raises:
        RuntimeError: with the converter's message, when TFLite cannot convert the model.
    """
    try:
        return converter.convert()
    except ConverterError as error:
        raise RuntimeError(f"TFLite cannot convert {source}: {error}") from error


def write_flatbuffer(flatbuffer, path):
    """Writes the TFLite `flatbuffer` (bytes) to `path`."""
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(flatbuffer)
