"""deeplab-vis: segments images with a trained checkpoint and writes the predictions as PNGs.

    deeplab-vis --checkpoint=runs/voc_os16 --image_dir=photos --output_dir=vis
    deeplab-vis --checkpoint=runs/cityscapes --dataset=cityscapes --vis_pattern='/data/cs/val-*' \
        --output_dir=vis --eval_output_stride=8 --cityscapes_label_ids

Writes <output_dir>/index/<name>.png (class indices: the format evaluation servers take),
<output_dir>/color/<name>.png (the colourised prediction) and <output_dir>/overlay/<name>.png, each
at the image's size. Images of any mode (greyscale, RGBA, palette) are read as RGB.
"""

import itertools
import json

from absl import app, flags

from deeplab_tf.cli import entry

from deeplab_tf import visualization
from deeplab_tf.cli import common
from deeplab_tf.evaluation import evaluator, visualizer
from deeplab_tf.workdir import load_model

IMAGE_DIR = flags.DEFINE_string("image_dir", None, "Folder of images (sub-folders too) to segment.")
VIS_PATTERN = flags.DEFINE_string("vis_pattern", None, "TFRecord glob of a split to segment instead.")
COLORMAP = flags.DEFINE_enum(
    "colormap", None, list(visualization.COLORMAPS),
    "Colours of the classes; default: the dataset's.")
PALETTE = flags.DEFINE_string(
    "palette", None,
    "Your own colours instead of --colormap: a JSON file or inline JSON list of [r, g, b] triples, "
    "one per class, e.g. '[[0,0,0],[0,128,0]]'.")
CITYSCAPES_LABEL_IDS = flags.DEFINE_boolean(
    "cityscapes_label_ids", False,
    "Write the index PNGs as Cityscapes label ids (7 road, 26 car, ...) instead of the 19 train "
    "ids, as cityscapesScripts' evaluation expects.")

_CITYSCAPES_TRAIN_CLASSES = 19


def _colormap(info):
    """The [256, 3] colormap of --palette, --colormap or the dataset."""
    if PALETTE.value and COLORMAP.value:
        raise app.UsageError("give at most one of --colormap and --palette")
    palette = PALETTE.value
    if palette and palette.lstrip().startswith("["):
        try:
            palette = json.loads(palette)
        except json.JSONDecodeError as error:
            raise app.UsageError(f"--palette: not a JSON list of [r, g, b] triples ({error})")
    try:
        return visualization.get_colormap(palette or COLORMAP.value or info.colormap)
    except ValueError as error:
        raise app.UsageError(f"--palette: {error}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    checkpoint = common.require(common.CHECKPOINT, "runs/voc_os16")
    output_dir = common.require(common.OUTPUT_DIR, "vis")
    if bool(IMAGE_DIR.value) == bool(VIS_PATTERN.value):
        raise app.UsageError("give exactly one of --image_dir (a folder of images) and "
                             "--vis_pattern (a TFRecord split)")
    info = common.dataset_info()
    if CITYSCAPES_LABEL_IDS.value and info.num_classes != _CITYSCAPES_TRAIN_CLASSES:
        raise app.UsageError(f"--cityscapes_label_ids needs a Cityscapes model (19 train ids); "
                             f"dataset {info.name!r} has {info.num_classes} classes: add "
                             "--dataset=cityscapes")
    colormap = _colormap(info)
    options = common.inference_options()
    with common.exit_on_user_error("deeplab-vis"):
        if IMAGE_DIR.value:
            total, examples = visualizer.folder_examples(IMAGE_DIR.value)
        else:
            total, examples = visualizer.split_examples(VIS_PATTERN.value)
        if common.MAX_IMAGES.value:
            total = min(total, common.MAX_IMAGES.value)
            examples = itertools.islice(examples, total)
        model, _, _ = load_model(checkpoint, output_stride=common.OUTPUT_STRIDE.value,
                                 num_classes=info.num_classes, precision=common.PRECISION.value,
                                 fold_batch_norm=True)
        written = visualizer.visualize(
            model, examples, output_dir, colormap=colormap,
            train_id_to_label_id=CITYSCAPES_LABEL_IDS.value, total=total,
            progress=evaluator.ProgressPrinter("deeplab-vis"), **options)
    print(f"Wrote {written} predictions to {output_dir}/{{index,color,overlay}}/")


def run():
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
