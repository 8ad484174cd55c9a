"""An int8 TFLite file run as a model, so deeplab-eval and deeplab-vis score and draw it on their own paths.

`TFLiteModel(path)(images)` returns the file's logits as a DeepLabV3 returns them: float32 [B, H, W, C] at
the input size, which must be the file's fixed input size (its evaluation canvas: `inference.predict` pads
each image to it with the pad value the file records). It runs inside `tf.function`s through
`tf.numpy_function`, one image at a time.
"""

import os
import warnings

import numpy as np
import tensorflow as tf

from deeplab_tf.export.int8 import read_settings


def _interpreter(path, num_threads):
    """TensorFlow's TFLite interpreter (deprecated since TF 2.20 for LiteRT's, which runs the same files:
    docs/export.md), without its deprecation warning on every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "\\s*Warning: tf.lite.Interpreter is deprecated")
        return tf.lite.Interpreter(model_path=path, num_threads=num_threads)


class TFLiteModel:
    """The int8 file of `deeplab-export --int8_tflite_path`, called as a model: images -> logits.

    Attributes:
        path: the file.
        settings: what the export stored in it (`int8.read_settings`).
        num_classes, output_stride, backbone_name: the network's, as a DeepLabV3 has them.
        eval_crop_size: (height, width) the file takes.
    """

    def __init__(self, path, *, num_threads=None):
        """Loads the file.

        Args:
            path: a .tflite file written by `deeplab-export --int8_tflite_path`.
            num_threads: the interpreter's threads; default the cores this process may use.

        Raises:
            FileNotFoundError: no such file.
            ValueError: a TFLite file without the int8 export's settings (e.g. --tflite_path's float file),
                or not a TFLite file.
        """
        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
            raise FileNotFoundError(f"{path}: no such file; give the .tflite file deeplab-export "
                                    "--int8_tflite_path wrote.")
        try:
            self.settings = read_settings(path)
        except Exception:  # noqa: BLE001  (flatbuffers raises anything on bytes that are not a model)
            self.settings = None
        if not self.settings or self.settings.get("quantization") != "int8":
            raise ValueError(f"{path} is not an int8 model written by deeplab-export --int8_tflite_path (a float "
                             "--tflite_path file takes any image size and returns labels: run it as docs/export.md "
                             "shows).")
        self.path = path
        self.num_classes = self.settings["num_classes"]
        self.output_stride = self.settings["output_stride"]
        self.backbone_name = self.settings["backbone"]
        self.eval_crop_size = tuple(self.settings["eval_crop_size"])
        self._interpreter = _interpreter(path, num_threads or len(os.sched_getaffinity(0)))
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]

    def _logits(self, images):
        """float32 logits [B, H, W, C] of float32 images [B, H, W, 3] (numpy), one image at a time."""
        outputs = []
        for image in images:
            self._interpreter.set_tensor(self._input, image[np.newaxis])
            self._interpreter.invoke()
            outputs.append(self._interpreter.get_tensor(self._output)[0])
        return np.stack(outputs)

    def __call__(self, images, training=False):
        """float32 logits [B, H, W, C] of images [B, H, W, 3] (RGB, 0..255) of the file's input size.

        Raises:
            InvalidArgumentError: the images are not of that size (the message names it and the fix).
        """
        del training  # always inference
        height, width = self.eval_crop_size
        check = tf.debugging.assert_equal(
            tf.shape(images)[1:3], tf.constant([height, width]),
            message=f"{self.path} takes {height}x{width} images (its canvas; the image is padded to it): a larger "
                    f"image needs an int8 export at a larger --eval_crop_size, and multi-scale inputs need the "
                    f"float model")
        with tf.control_dependencies([check]):
            images = tf.cast(images, tf.float32)
        logits = tf.numpy_function(self._logits, [images], tf.float32, stateful=True)
        logits.set_shape([images.shape[0], height, width, self.num_classes])
        return logits
