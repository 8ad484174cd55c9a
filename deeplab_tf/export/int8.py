"""Full-integer (int8) post-training quantization of the network for TFLite.

`export_int8_tflite` converts the batch-norm-folded network at one fixed input size (the evaluation
canvas) to TFLite with int8 weights and int8 activations in every operation, the activation ranges
calibrated on images of the training split. Its input stays float32 RGB pixels in 0..255 and its output
float32 logits at the canvas size, so an app and `deeplab_tf.export.interpreter.TFLiteModel` feed and read
it as they do the float model; the converter quantizes the input and dequantizes the logits at the two
ends (one pass over the canvas each, small next to the network).

The export's settings (canvas, pad value, output stride, classes, the calibration images) are stored in
the file itself, as a TFLite metadata entry named `SETTINGS_METADATA` (`read_settings`), so the file
alone is enough for deeplab-eval and deeplab-vis.
"""

import contextlib
import json
import warnings

import flatbuffers
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from deeplab_tf.evaluation.evaluator import count_examples, model_pad_value
from deeplab_tf.evaluation.inference import pad_to_canvas
from deeplab_tf.data import eval_dataset
from deeplab_tf.export.tflite import convert, write_flatbuffer
from deeplab_tf.modeling import layers

SETTINGS_METADATA = "deeplab_tf_settings"
DEFAULT_CALIBRATION_IMAGES = 100


def calibration_inputs(file_pattern, count, canvas, pad_value, names):
    """The converter's representative dataset: the first `count` images of a TFRecord split, in file order,
    each on the canvas as evaluation pads it (a larger image is cut to the canvas first).

    Args:
        file_pattern: TFRecord glob of the images (the training split).
        count: how many images to take (fewer if the split holds fewer).
        canvas: (height, width) of the network's input.
        pad_value: RGB value of the canvas padding (`evaluator.model_pad_value`).
        names: a list each image's file name is appended to as it is read.

    Yields:
        [float32 [1, height, width, 3]], pixels in 0..255.
    """
    for example in eval_dataset(file_pattern).take(count):
        names.append(example["filename"][0].numpy().decode("utf-8", "replace"))
        yield [pad_to_canvas(example["image"][:, :canvas[0], :canvas[1]], canvas, pad_value)]


@contextlib.contextmanager
def _direct_atrous():
    """Traces the atrous layers as one dilated convolution, which TFLite runs natively: `atrous_forward`'s
    taps are a workaround for oneDNN's kernels and would become dozens of small quantized ops."""
    choice, layers.ATROUS_FORWARD = layers.ATROUS_FORWARD, "direct"
    try:
        yield
    finally:
        layers.ATROUS_FORWARD = choice


def _frozen_network(model, canvas):
    """The model's logits at a fixed [1, height, width, 3] input as a concrete function of constants: with live
    variables the converter's calibration fails (READ_VARIABLE ... variable != nullptr)."""
    network = tf.function(lambda images: model(images, training=False),
                          input_signature=[tf.TensorSpec([1, *canvas, 3], tf.float32, name="images")])
    with _direct_atrous():
        concrete = network.get_concrete_function()
    return convert_variables_to_constants_v2(concrete)


def with_metadata(flatbuffer, name, data):
    """The TFLite `flatbuffer` (bytes) with a metadata entry `name` holding `data` (bytes)."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    buffer = schema.BufferT()
    buffer.data = list(data)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_settings(path):
    """The settings `export_int8_tflite` stored in the TFLite file `path` (a dict), None for a TFLite file
    without them (not written by it)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        model = schema.Model.GetRootAs(bytearray(f.read()), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == SETTINGS_METADATA:
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


def export_int8_tflite(model, path, *, eval_crop_size, calibration_pattern,
                       calibration_images=DEFAULT_CALIBRATION_IMAGES, class_names=None, checkpoint=None):
    """Writes `model` as a full-integer quantized TFLite file at a fixed input size.

    Args:
        model: a float32 DeepLabV3, batch norm folded (`workdir.load_model(..., fold_batch_norm=True)`), at the
            output stride to run at.
        path: the .tflite file to write.
        eval_crop_size: (height, width) of the input: the evaluation canvas images are padded to with the
            model's pad value (`inference.pad_to_canvas`), as deeplab-eval pads them.
        calibration_pattern: TFRecord glob of the images whose activations set the int8 ranges (the training
            split: the model's own input distribution).
        calibration_images: how many of its images, in file order.
        class_names: recorded in the file (default class_<i>).
        checkpoint: the checkpoint the weights came from, recorded in the file.

    Returns:
        The settings stored in the file (a dict; ``calibration["images"]`` names the images used).

    Raises:
        ValueError: the model is not float32, the canvas is not (height, width), or the pattern matches no
            record.
        RuntimeError: TFLite cannot quantize or convert the model.
    """
    if model.compute_dtype != "float32":
        raise ValueError(f"int8 quantization starts from a float32 model, not a {model.compute_dtype} one.")
    if eval_crop_size is None or len(eval_crop_size) != 2 or min(eval_crop_size) <= 0:
        raise ValueError(f"eval_crop_size must be (height, width) in pixels, got {eval_crop_size!r}: an int8 "
                         f"TFLite model has a fixed input size.")
    canvas = [int(side) for side in eval_crop_size]
    count = count_examples(calibration_pattern, max_images=calibration_images)
    pad_value = [float(value) for value in model_pad_value(model)]
    names = []
    # The model only keeps the frozen function's origin known (without it the converter warns).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen_network(model, canvas)], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: calibration_inputs(calibration_pattern, count, canvas, pad_value, names)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # every op int8, or fail
    with warnings.catch_warnings():  # float input and output are meant: the converter quantizes them itself
        warnings.filterwarnings("ignore", "Statistics for quantized inputs")
        flatbuffer = convert(converter, f"the int8 model of {checkpoint or 'the model'}")
    settings = {
        "quantization": "int8",
        "output_stride": model.output_stride,
        "backbone": model.backbone_name,
        "eval_crop_size": canvas,
        "pad_value": pad_value,
        "num_classes": model.num_classes,
        "class_names": list(class_names or (f"class_{i}" for i in range(model.num_classes))),
        "checkpoint": checkpoint,
        "calibration": {"pattern": calibration_pattern, "images": names},
        "model_config": model.get_config(),
    }
    write_flatbuffer(with_metadata(flatbuffer, SETTINGS_METADATA, json.dumps(settings).encode()), path)
    return settings
