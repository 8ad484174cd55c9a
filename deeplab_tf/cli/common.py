"""Flags shared by deeplab-eval, deeplab-vis and deeplab-export: the checkpoint, the dataset and the
inference options (output stride, scales, flips, sliding windows, eval crop). What a flag leaves unset comes
from the checkpoint's workdir (its config.json) where the run recorded it: the dataset, its class count and
colours, the evaluation canvas.

Nothing here imports TensorFlow at import time: a binary's --help stays quick.
"""

import math
import os

from absl import app, flags

from deeplab_tf.cli.usage import exit_on_user_error, require  # noqa: F401  (the binaries' own)
from deeplab_tf.data import dataset_info_for, dataset_info_from_spec, get_dataset_info
from deeplab_tf.constants import PRECISIONS

CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None,
    "A training workdir (its latest checkpoint), its checkpoints/ folder or a checkpoint prefix "
    "such as <workdir>/checkpoints/ckpt-30000.")
DEFAULT_DATASET = "pascal_voc_seg"
DATASET = flags.DEFINE_string(
    "dataset", None,
    "Registered dataset (pascal_voc_seg, cityscapes, coco_voc, ade20k): classes, names, colormap. Default: the "
    f"one the checkpoint's workdir trained on (its config.json), else {DEFAULT_DATASET}.")
DATASET_SPEC = flags.DEFINE_string(
    "dataset_spec", None, "JSON dataset spec of your own data; replaces --dataset (docs/data.md).")
OUTPUT_STRIDE = flags.DEFINE_integer(
    "eval_output_stride", None,
    "Output stride to run the model at; default: the one it was trained at (16 in the paper's "
    "recipe). The paper's val numbers use 8.")
flags.register_validator(
    "eval_output_stride", lambda value: value is None or (value >= 4 and value & (value - 1) == 0),
    "--eval_output_stride: a power of two from 4 up, e.g. 8 or 16 (the paper's), or unset for the trained one")
SCALES = flags.DEFINE_list(
    "eval_scales", ["1.0"],
    "Input scales whose probabilities are averaged; the paper's: 0.5,0.75,1.0,1.25,1.5,1.75.")
FLIP = flags.DEFINE_boolean("flip", False, "Also average in the left-right flipped images.")
WINDOW_SIZE = flags.DEFINE_list(
    "window_size", None,
    "Run the model on overlapping tiles of this size (N or H,W, e.g. 769) instead of whole "
    "images, to bound memory on large images; default: whole images, as the paper.")
EVAL_CROP_SIZE = flags.DEFINE_list(
    "eval_crop_size", None,
    "The original release's evaluation protocol: pad every image bottom/right to this canvas (N or H,W; "
    "the paper's: 513,513 on PASCAL VOC, 1025,2049 on Cityscapes) with the backbone's pad value and crop "
    "the prediction back. deeplab-eval refuses an image larger than the canvas (results go to "
    "eval_os<N>_crop<H>x<W>); deeplab-vis and deeplab-export grow such an image's canvas sides to the "
    "smallest output_stride * k + 1 holding it. Default (or none): each image at its own size; "
    "deeplab-export's default is the workdir's config.json.")
MIN_RESIZE_VALUE = flags.DEFINE_integer(
    "min_resize_value", None,
    "deeplab-eval: resize every image and label first so the shorter side is this (the longer side "
    "capped by --max_resize_value, sides of the form --resize_factor * k + 1), and score at that size, as "
    "the original release evaluates ADE20K (513, 513, 16). Default: each image at its stored size.",
    lower_bound=1)
MAX_RESIZE_VALUE = flags.DEFINE_integer(
    "max_resize_value", None, "With --min_resize_value: the most the longer side may be.", lower_bound=1)
RESIZE_FACTOR = flags.DEFINE_integer(
    "resize_factor", None, "With --min_resize_value: resized sides are a multiple of this plus one.",
    lower_bound=1)
OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None,
    "deeplab-eval: folder for the metrics JSON and TensorBoard summaries (default "
    "<workdir>/eval_os<N>[_crop<H>x<W>][_ms][_flip]); deeplab-vis: folder for the PNGs (required).")
PRECISION = flags.DEFINE_enum(
    "precision", "float32", list(PRECISIONS),
    "Compute dtype: mixed_bfloat16 runs the convolutions in bfloat16 (about 2x faster on CPUs with "
    "AMX, and on GPU/TPU; much slower on CPUs without bfloat16 units).")
ATROUS_RATES = flags.DEFINE_list(
    "atrous_rates", None,
    "A checkpoint of the original TF1 release only (its train_logdir or model.ckpt-N prefix): ASPP rates at the "
    "output stride it runs at, as given to the release's eval.py (its variables do not record them); default "
    "6,12,18 at 16, 12,24,36 at 8.")
MULTI_GRID = flags.DEFINE_list(
    "multi_grid", None,
    "A checkpoint of the original TF1 release only: block4's unit rates as given to its train.py, e.g. 1,2,4 "
    "(the paper's); default 1,1,1 as the release's.")
TFLITE = flags.DEFINE_string(
    "tflite", None,
    "deeplab-eval, deeplab-vis: run the int8 TFLite file of deeplab-export --int8_tflite_path instead of "
    "--checkpoint, on the canvas it was exported at and at one scale (--flip allowed); deeplab-eval writes to "
    "eval_os<N>_crop<H>x<W>[_flip]_int8 in the workdir it was exported from.")
MAX_IMAGES = flags.DEFINE_integer(
    "max_images", None, "Process only the first this many images (a quick look).", lower_bound=1)

def recorded_run(checkpoint):
    """(path of the run's config.json, the config it records) for the checkpoint's workdir; (None, None) when
    there is none (a checkpoint of the original release, a workdir from before config.json)."""
    from deeplab_tf import workdir  # Imports TensorFlow: only once a binary runs.

    try:
        run = workdir.resolve_checkpoint(checkpoint)[0]
    except FileNotFoundError:
        return None, None  # The binary's model loading names the missing checkpoint.
    recorded = workdir.recorded_config(run)
    return (os.path.join(run, workdir.RUN_CONFIG), recorded) if recorded else (None, None)


def dataset_info(checkpoint=None):
    """The DatasetInfo of --dataset_spec, --dataset, or else of the dataset the checkpoint's workdir trained on
    (its config.json: the name and class count), else PASCAL VOC's.

    Raises:
        app.UsageError: an unknown --dataset or a bad --dataset_spec.
        ValueError: --dataset contradicts the workdir's dataset (one line naming both).
    """
    path, recorded = recorded_run(checkpoint) if checkpoint else (None, None)
    trained = (recorded or {}).get("dataset", {})
    name, num_classes = trained.get("name"), trained.get("num_classes", 0)
    if DATASET.value and name and DATASET.value != name:
        raise ValueError(f"--dataset={DATASET.value}, but {path} records training on {name}: drop --dataset to "
                         f"use the run's, or give the checkpoint of a {DATASET.value} run.")
    try:
        if DATASET_SPEC.value:
            return dataset_info_from_spec(DATASET_SPEC.value)
        if DATASET.value:
            return dataset_info_for(DATASET.value, num_classes)
    except KeyError as error:
        raise app.UsageError(f"--dataset: {error.args[0]}") from None
    except (OSError, ValueError, TypeError) as error:
        raise app.UsageError(f"--dataset_spec={DATASET_SPEC.value}: {error}") from None
    if not name:
        return get_dataset_info(DEFAULT_DATASET)
    try:
        return dataset_info_for(name, num_classes)
    except KeyError:
        raise ValueError(f"{path} records training on dataset {name!r}, which is not registered here: give its "
                         f"spec with --dataset_spec.") from None


def eval_crop_size(checkpoint):
    """(canvas, where it comes from): --eval_crop_size when given (None for none), else the evaluation canvas
    the checkpoint's workdir records in its config.json (None without one: each image at its own size)."""
    if EVAL_CROP_SIZE.present:
        return _size(EVAL_CROP_SIZE, "513,513"), "--eval_crop_size"
    from deeplab_tf import workdir

    path, recorded = recorded_run(checkpoint)
    crop = workdir.recorded_eval_crop_size(os.path.dirname(path)) if path else None
    return crop, (f"the eval_crop_size of {path}" if crop else "no --eval_crop_size, none recorded")


def tflite_model():
    """(the `export.TFLiteModel` of --tflite, the checkpoint it was exported from: its run's config.json gives
    the dataset).

    Raises:
        app.UsageError: a flag the file cannot honour (it is one network at a fixed size), named.
        ValueError: the file is missing or not an int8 export (the message names --tflite).
    """
    if CHECKPOINT.value:
        raise app.UsageError("give --checkpoint (a float model) or --tflite (an int8 file), not both")
    for flag, unset in ((SCALES, ["1.0"]), (WINDOW_SIZE, None), (OUTPUT_STRIDE, None), (PRECISION, "float32"),
                        (ATROUS_RATES, None), (MULTI_GRID, None)):
        if flag.value != unset:
            raise app.UsageError(f"--{flag.name}: --tflite runs the int8 file as exported, one network at a fixed "
                                 "size and output stride; drop the flag, or evaluate the float --checkpoint.")
    from deeplab_tf.export.interpreter import TFLiteModel

    try:
        model = TFLiteModel(TFLITE.value)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"--tflite: {error}") from None
    if EVAL_CROP_SIZE.present and tuple(_size(EVAL_CROP_SIZE, "513,513") or ()) != model.eval_crop_size:
        raise app.UsageError(f"--eval_crop_size: {TFLITE.value} takes {model.eval_crop_size[0]}x"
                             f"{model.eval_crop_size[1]} images (its canvas); drop the flag or export at that canvas.")
    return model, model.settings["checkpoint"]


def _size(flag, example):
    """[height, width] of a flag given as N or H,W in pixels, None if unset or none; a usage error otherwise."""
    if not flag.value or [value.lower() for value in flag.value] == ["none"]:
        return None
    try:
        size = [int(value) for value in flag.value]
    except ValueError:
        size = []
    if len(size) not in (1, 2) or min(size) <= 0:
        raise app.UsageError(f"--{flag.name}: give N or H,W in pixels such as {example}, or none, got "
                             f"{','.join(flag.value)!r}")
    return (size * 2)[:2]


def inference_options(checkpoint):
    """`inference.predict`'s keyword arguments (scales, flip, window_size, eval_crop_size) from the flags, the
    canvas from the checkpoint's workdir when --eval_crop_size is not given (`eval_crop_size`)."""
    try:
        scales = tuple(float(scale) for scale in SCALES.value)
    except ValueError:
        scales = ()
    if not scales or not all(math.isfinite(scale) and scale > 0 for scale in scales):
        raise app.UsageError(f"--eval_scales: expected a comma list of positive numbers such as "
                             f"0.5,0.75,1.0, got {','.join(SCALES.value)!r}")
    return {"scales": scales, "flip": FLIP.value, "window_size": _size(WINDOW_SIZE, "769"),
            "eval_crop_size": eval_crop_size(checkpoint)[0]}


def _positive_ints(flag, example):
    """The flag's comma list as positive ints, None if unset; a usage error naming it otherwise."""
    if flag.value is None:
        return None
    try:
        values = tuple(int(value) for value in flag.value)
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise app.UsageError(f"--{flag.name}: give positive integers such as {example}, got {','.join(flag.value)!r}")
    return values


def release_options():
    """`workdir.load_model`'s atrous_rates and multi_grid for a checkpoint of the original release."""
    return {"atrous_rates": _positive_ints(ATROUS_RATES, "6,12,18"), "multi_grid": _positive_ints(MULTI_GRID, "1,2,4")}


def resize_options():
    """`evaluator.evaluate`'s `resize` from --min_resize_value, --max_resize_value, --resize_factor; None if
    unset."""
    if not MIN_RESIZE_VALUE.value:
        for flag in (MAX_RESIZE_VALUE, RESIZE_FACTOR):
            if flag.value:
                raise app.UsageError(f"--{flag.name} needs --min_resize_value, e.g. --min_resize_value=513")
        return None
    return {"min_resize_value": MIN_RESIZE_VALUE.value, "max_resize_value": MAX_RESIZE_VALUE.value,
            "resize_factor": RESIZE_FACTOR.value}
