"""deeplab-export: a trained checkpoint -> a SavedModel for TensorFlow Serving (and optionally TFLite).

    deeplab-export --checkpoint=runs/voc_os16 --export_dir=/models/deeplab \
        --eval_output_stride=8 --eval_scales=0.5,0.75,1.0,1.25,1.5,1.75 --flip

writes the next version, /models/deeplab/<n>/, the layout `tensorflow_model_server
--model_base_path=/models/deeplab` polls.

    deeplab-export --checkpoint=runs/voc_os16 --int8_tflite_path=deeplab_int8.tflite

writes the network quantized to int8 (weights and activations) for TFLite, at the eval canvas, calibrated
on the first --calibration_images images of the run's training split; deeplab-eval --tflite scores it. The output stride, scales, flip, window size and eval canvas
are fixed at export and recorded in the SavedModel; the canvas defaults to the one the workdir's
config.json evaluates on (--eval_crop_size=none: each image at its own size). See docs/export.md for
the signatures and for serving it.
"""

import os
import sys
import time

from absl import app, flags

from deeplab_tf.cli import entry, tensorflow_start  # noqa: F401  (before TensorFlow loads)

from deeplab_tf import export
from deeplab_tf.cli import common
from deeplab_tf.data.errors import check_output_dir

# --help lists the shared flags this binary takes, not only its own.
for _name in ("checkpoint", "dataset", "dataset_spec", "eval_output_stride", "eval_scales", "flip", "window_size",
              "eval_crop_size", "precision", "atrous_rates", "multi_grid"):
    flags.declare_key_flag(_name)
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "Base directory of the exported versions (TF Serving's --model_base_path).")
_VERSION = flags.DEFINE_integer(
    "version", None, "Version number to write; default one more than the largest existing.", lower_bound=1)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace an existing --version.")
_INCLUDE_PROBABILITIES = flags.DEFINE_boolean(
    "include_probabilities", False, "Also output per-class probabilities (C times the labels' size).")
_MAX_IMAGE_PIXELS = flags.DEFINE_integer(
    "max_image_pixels", export.DEFAULT_MAX_IMAGE_PIXELS,
    "Refuse larger images (InvalidArgument) to bound the server's memory.", lower_bound=1)
_WEIGHTS_DTYPE = flags.DEFINE_enum(
    "weights_dtype", "float32", export.WEIGHTS_DTYPES,
    "Store the float32 weights in this dtype (half precision halves the SavedModel; --precision sets the "
    "compute dtype, and with mixed_bfloat16 the weights are bfloat16 already).")
_TFLITE_PATH = flags.DEFINE_string(
    "tflite_path", None, "Also convert the float-image signature to this TFLite file (float16 weights "
    "unless --weights_dtype=float32).")
_INT8_TFLITE_PATH = flags.DEFINE_string(
    "int8_tflite_path", None,
    "Write the network quantized to int8 (weights and activations, post-training) to this TFLite file: float "
    "pixels in, float logits out, at the fixed --eval_crop_size canvas (default the run's). Score it with "
    "deeplab-eval --tflite=<file>. Without --export_dir only this file is written.")
_CALIBRATION_PATTERN = flags.DEFINE_string(
    "calibration_pattern", None,
    "With --int8_tflite_path: TFRecord glob of the images that set the int8 activation ranges; default the "
    "run's training split (config.dataset.train_pattern of its config.json).")
_CALIBRATION_IMAGES = flags.DEFINE_integer(
    "calibration_images", 100, "With --int8_tflite_path: calibrate on the first this many images of "
    "--calibration_pattern (file order).", lower_bound=1)


def _class_names(checkpoint):
    """The class names of --dataset/--dataset_spec, or of the dataset the checkpoint's workdir trained on; None
    without either (names class_<i>)."""
    if common.DATASET.value or common.DATASET_SPEC.value or common.recorded_run(checkpoint)[1]:
        return common.dataset_info(checkpoint).class_names or None
    return None


def _check_tflite_path(flag, file_name):
    """A usage error unless a file can be written at the flag's path (its folder is created if needed)."""
    path = flag.value
    if os.path.isdir(path):
        raise app.UsageError(f"--{flag.name}={path} is a folder: give a file path, e.g. "
                             f"--{flag.name}={os.path.join(path, file_name)}")
    folder = os.path.dirname(path) or "."
    check_output_dir(folder, name=f"--{flag.name}={path}: its folder {folder}")


def _int8_options(checkpoint, options, export_dir):
    """`export.export_int8_tflite`'s canvas and calibration split from the flags and the run's config.json; usage
    errors naming the flag for what an int8 file cannot take."""
    from deeplab_tf.evaluation import evaluator

    if not export_dir and (options["scales"] != (1.0,) or options["flip"] or options["window_size"]):
        raise app.UsageError("--eval_scales, --flip and --window_size set the SavedModel's inference (--export_dir); "
                             "the int8 file is the network at one scale: give --flip to deeplab-eval and -vis.")
    canvas, source = common.eval_crop_size(checkpoint)
    if not canvas:
        raise app.UsageError(f"--int8_tflite_path needs a fixed input size, and {checkpoint} records no evaluation "
                             "canvas: give --eval_crop_size=513 (N or H,W, at least as large as your images).")
    path, recorded = common.recorded_run(checkpoint)
    pattern = _CALIBRATION_PATTERN.value or (recorded or {}).get("dataset", {}).get("train_pattern")
    if not pattern:
        raise app.UsageError(f"--calibration_pattern is required: {checkpoint} records no training split, e.g. "
                             "--calibration_pattern='/data/voc_tfrecord/train-*'")
    try:
        evaluator.count_examples(pattern, max_images=1)  # before anything is written
    except ValueError as error:
        flag = "--calibration_pattern" if _CALIBRATION_PATTERN.value else f"config.dataset.train_pattern of {path}"
        raise ValueError(f"{flag}={pattern}: {error}") from None
    return {"eval_crop_size": canvas, "calibration_pattern": pattern,
            "calibration_images": _CALIBRATION_IMAGES.value}, source


def _calibration_note(settings):
    """The report's words on the calibration images: their count, split and names (the first ten)."""
    names = settings["calibration"]["images"]
    shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more, all named in the file)" if len(names) > 10 else "")
    return f"calibrated on {len(names)} images of {settings['calibration']['pattern']}: {shown}"


def _report(path, seconds, note=""):
    print(f"deeplab-export: wrote {path} in {seconds:.1f} s ({export.disk_size(path) / 1e6:.1f} MB){note}",
          flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    checkpoint = common.require(common.CHECKPOINT, "runs/voc_os16")
    export_dir = _EXPORT_DIR.value if _INT8_TFLITE_PATH.value else common.require(_EXPORT_DIR, "/models/deeplab")
    if _TFLITE_PATH.value and not export_dir:
        raise app.UsageError("--tflite_path converts the SavedModel: give --export_dir too.")
    for flag in (_TFLITE_PATH, _INT8_TFLITE_PATH):
        if flag.value and common.PRECISION.value != "float32":
            raise app.UsageError(f"--{flag.name} needs --precision=float32: TFLite has no bfloat16 kernels.")
    # Here, not at the top: --help must not wait for TensorFlow.
    from deeplab_tf import workdir
    from deeplab_tf.evaluation import evaluator

    with common.exit_on_user_error("deeplab-export"):
        options = common.inference_options(checkpoint)
        class_names = _class_names(checkpoint)
        # Before a SavedModel version is written, not after.
        if _TFLITE_PATH.value:
            _check_tflite_path(_TFLITE_PATH, "deeplab.tflite")
        if _INT8_TFLITE_PATH.value:
            _check_tflite_path(_INT8_TFLITE_PATH, "deeplab_int8.tflite")
            int8_options, int8_source = _int8_options(checkpoint, options, export_dir)
        source = common.eval_crop_size(checkpoint)[1]
        model, prefix, _ = workdir.load_model(
            checkpoint, output_stride=common.OUTPUT_STRIDE.value,
            num_classes=len(class_names) if class_names else None, precision=common.PRECISION.value,
            fold_batch_norm=True, **common.release_options())
        try:
            if export_dir:
                start = time.perf_counter()
                version_dir, _ = export.export_version(
                    model, export_dir, version=_VERSION.value, overwrite=_OVERWRITE.value, **options,
                    include_probabilities=_INCLUDE_PROBABILITIES.value, weights_dtype=_WEIGHTS_DTYPE.value,
                    max_image_pixels=_MAX_IMAGE_PIXELS.value, class_names=class_names, checkpoint=prefix)
                _report(version_dir, time.perf_counter() - start,
                        f", {evaluator.protocol_description(options['eval_crop_size'])} ({source})")
            if _TFLITE_PATH.value:
                start = time.perf_counter()
                export.export_tflite(version_dir, _TFLITE_PATH.value,
                                     float16_weights=_WEIGHTS_DTYPE.value != "float32")
                _report(_TFLITE_PATH.value, time.perf_counter() - start)
            if _INT8_TFLITE_PATH.value:
                start = time.perf_counter()
                settings = export.export_int8_tflite(model, _INT8_TFLITE_PATH.value, **int8_options,
                                                     class_names=class_names, checkpoint=prefix)
                canvas = "x".join(map(str, settings["eval_crop_size"]))
                _report(_INT8_TFLITE_PATH.value, time.perf_counter() - start,
                        f", int8, {canvas} input ({int8_source}), {_calibration_note(settings)}")
        except (FileExistsError, RuntimeError) as error:
            sys.exit(f"deeplab-export: {error}")


def run():
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
