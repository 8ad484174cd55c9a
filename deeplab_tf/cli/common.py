"""Flags and the exit path shared by deeplab-eval and deeplab-vis: the checkpoint, the dataset and
the inference options (output stride, scales, flips, sliding windows, eval crop)."""

import math

from absl import app, flags

from deeplab_tf.cli.usage import exit_on_user_error, require  # noqa: F401  (the binaries' own)
from deeplab_tf.data import dataset_info_from_spec, get_dataset_info
from deeplab_tf.modeling.precision import PRECISIONS

CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None,
    "A training workdir (its latest checkpoint), its checkpoints/ folder or a checkpoint prefix "
    "such as <workdir>/checkpoints/ckpt-30000.")
DATASET = flags.DEFINE_string(
    "dataset", "pascal_voc_seg",
    "Registered dataset (pascal_voc_seg, cityscapes, coco_voc, ade20k): classes, names, colormap.")
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
MAX_IMAGES = flags.DEFINE_integer(
    "max_images", None, "Process only the first this many images (a quick look).", lower_bound=1)

def dataset_info():
    """The DatasetInfo of --dataset_spec or else --dataset."""
    try:
        if DATASET_SPEC.value:
            return dataset_info_from_spec(DATASET_SPEC.value)
        return get_dataset_info(DATASET.value)
    except KeyError as error:
        raise app.UsageError(f"--dataset: {error.args[0]}") from None
    except (OSError, ValueError, TypeError) as error:
        raise app.UsageError(f"--dataset_spec={DATASET_SPEC.value}: {error}") from None


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


def inference_options():
    """`inference.predict`'s keyword arguments (scales, flip, window_size, eval_crop_size) from the flags."""
    try:
        scales = tuple(float(scale) for scale in SCALES.value)
    except ValueError:
        scales = ()
    if not scales or not all(math.isfinite(scale) and scale > 0 for scale in scales):
        raise app.UsageError(f"--eval_scales: expected a comma list of positive numbers such as "
                             f"0.5,0.75,1.0, got {','.join(SCALES.value)!r}")
    return {"scales": scales, "flip": FLIP.value, "window_size": _size(WINDOW_SIZE, "769"),
            "eval_crop_size": _size(EVAL_CROP_SIZE, "513,513")}


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
