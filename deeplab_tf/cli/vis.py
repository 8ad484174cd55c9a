"""deeplab-vis: segments images with a trained checkpoint and writes the predictions as PNGs.

    deeplab-vis --checkpoint=runs/voc_os16 --image_dir=photos --output_dir=vis
    deeplab-vis --checkpoint=runs/cityscapes --dataset=cityscapes --vis_pattern='/data/cs/val-*' \
        --output_dir=vis --eval_output_stride=8 --cityscapes_label_ids
    deeplab-vis --checkpoint=runs/voc_os16 --image_dir=VOC2012/JPEGImages --image_ids=test.txt \
        --output_dir=voc_test --submission=voc2012 --eval_output_stride=8 --eval_scales=0.5,0.75,1.0,1.25,1.5,1.75 \
        --flip --eval_crop_size=513,513

Writes <output_dir>/index/<name>.png (class indices: the format evaluation servers take),
<output_dir>/color/<name>.png (the colourised prediction) and <output_dir>/overlay/<name>.png, each
at the image's size. Images of any mode (greyscale, RGBA, palette) are read as RGB. With
--eval_crop_size, an image larger than the canvas is segmented on a canvas grown to hold it (a line names
it), as the SavedModel deeplab-export writes serves it; deeplab-eval refuses such an image.
--tflite=<file> draws with the int8 TFLite file of deeplab-export --int8_tflite_path instead of a
checkpoint (on its fixed canvas: a larger image is refused).
With --submission=voc2012|cityscapes it writes only what that benchmark's test server takes, and the
archive to upload (see evaluation/submission.py).
"""

import itertools
import json

from absl import app, flags

from deeplab_tf.cli import entry, tensorflow_start  # noqa: F401  (before TensorFlow loads)

from deeplab_tf import visualization
from deeplab_tf.cli import common
from deeplab_tf.data.errors import check_output_dir
from deeplab_tf.evaluation import submission

# --help lists the shared flags this binary takes, not only its own.
for _name in ("checkpoint", "dataset", "dataset_spec", "eval_output_stride", "eval_scales", "flip", "window_size",
              "eval_crop_size", "output_dir", "precision", "max_images", "atrous_rates", "multi_grid", "tflite"):
    flags.declare_key_flag(_name)
IMAGE_DIR = flags.DEFINE_string("image_dir", None, "Folder of images (sub-folders too) to segment.")
IMAGE_IDS = flags.DEFINE_string(
    "image_ids", None,
    "With --image_dir: a text file of the image ids to segment, one a line (e.g. VOC2012's "
    "ImageSets/Segmentation/test.txt, whose JPEGImages also hold the other tasks' test images).")
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
SUBMISSION = flags.DEFINE_enum(
    "submission", None, list(submission.SERVERS),
    "Write a test-server submission instead of the PNGs above: voc2012 writes "
    "results/VOC2012/Segmentation/<comp>_test_cls/<id>.png and a .tar.gz of results/; cityscapes "
    "writes results/<city>_<seq>_<frame>.png of label ids and a .zip. The inference flags choose the "
    "protocol; every image of the input is written and counted.")
VOC_COMPETITION = flags.DEFINE_enum(
    "voc_competition", "comp6", list(submission.VOC_COMPETITIONS),
    "VOC competition of --submission=voc2012: comp6 = trained with outside data (SBD's trainaug, "
    "ImageNet/COCO pretraining, as the paper), comp5 = VOC2012 data only.")

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
        return visualization.get_colormap(palette or COLORMAP.value or info.colormap, num_classes=info.num_classes)
    except ValueError as error:
        raise app.UsageError(f"--palette: {error}")


def _require_classes(flag, num_classes, dataset, info):
    """A usage error unless the dataset (so the model) has `num_classes` classes."""
    if info.num_classes != num_classes:
        raise app.UsageError(f"{flag} needs a {dataset} model ({num_classes} classes); dataset "
                             f"{info.name!r} has {info.num_classes} classes: add --dataset={dataset}")


def _check_submission_flags(info):
    """--submission writes the server's own format of every image: no palette, no partial split."""
    server = SUBMISSION.value
    _require_classes(f"--submission={server}", submission.NUM_CLASSES[server],
                     "pascal_voc_seg" if server == "voc2012" else "cityscapes", info)
    if common.MAX_IMAGES.value:
        raise app.UsageError("--max_images: a --submission must hold every image of the input; drop it")
    if PALETTE.value or COLORMAP.value:
        raise app.UsageError("--submission writes the server's own format; drop --palette and --colormap")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    tflite = None
    if common.TFLITE.value:  # an int8 file instead of a checkpoint; its run's config.json gives the dataset
        with common.exit_on_user_error("deeplab-vis"):
            tflite, checkpoint = common.tflite_model()
    else:
        checkpoint = common.require(common.CHECKPOINT, "runs/voc_os16")
    output_dir = common.require(common.OUTPUT_DIR, "vis")
    if bool(IMAGE_DIR.value) == bool(VIS_PATTERN.value):
        raise app.UsageError("give exactly one of --image_dir (a folder of images) and "
                             "--vis_pattern (a TFRecord split)")
    if IMAGE_IDS.value and not IMAGE_DIR.value:
        raise app.UsageError("--image_ids selects images of --image_dir; give --image_dir too")
    # Here, not at the top: --help must not wait for TensorFlow.
    from deeplab_tf.evaluation import evaluator, visualizer
    from deeplab_tf.workdir import load_model

    with common.exit_on_user_error("deeplab-vis"):
        info = common.dataset_info(checkpoint)
    if CITYSCAPES_LABEL_IDS.value:
        _require_classes("--cityscapes_label_ids", _CITYSCAPES_TRAIN_CLASSES, "cityscapes", info)
    if SUBMISSION.value:
        _check_submission_flags(info)
    colormap = _colormap(info)
    if common.resize_options():  # the PNGs must keep each image's own size (servers, overlays)
        raise app.UsageError("--min_resize_value is a deeplab-eval protocol; deeplab-vis writes each prediction "
                             "at its image's size: drop the resize flags.")
    with common.exit_on_user_error("deeplab-vis"):
        options = common.inference_options(checkpoint)
        if tflite:
            options["eval_crop_size"] = tflite.eval_crop_size
        if IMAGE_DIR.value:
            image_ids = visualizer.read_image_ids(IMAGE_IDS.value) if IMAGE_IDS.value else None
            # An output folder inside the image folder would be segmented again by every rerun.
            total, examples = visualizer.folder_examples(IMAGE_DIR.value, image_ids, exclude=output_dir)
        else:
            total, examples = visualizer.split_examples(VIS_PATTERN.value)
        if common.MAX_IMAGES.value:
            total = min(total, common.MAX_IMAGES.value)
            examples = itertools.islice(examples, total)
        check_output_dir(output_dir)  # before the model loads: a refusal costs nothing
        if SUBMISSION.value:
            submission.check_empty(output_dir)
        model = tflite or load_model(checkpoint, output_stride=common.OUTPUT_STRIDE.value,
                                     num_classes=info.num_classes, precision=common.PRECISION.value,
                                     fold_batch_norm=True, **common.release_options())[0]
        options.update(total=total, progress=evaluator.ProgressPrinter("deeplab-vis"),
                       log=lambda line: print(f"deeplab-vis: {line}", flush=True))
        if SUBMISSION.value:
            predictions = visualizer.predictions(model, examples, **options)
            written, archive = submission.write_submission(
                predictions, output_dir, SUBMISSION.value, expected=total,
                competition=VOC_COMPETITION.value)
        else:
            written = visualizer.visualize(model, examples, output_dir, colormap=colormap,
                                           train_id_to_label_id=CITYSCAPES_LABEL_IDS.value, **options)
    if SUBMISSION.value:
        folder = submission.results_dir(output_dir, SUBMISSION.value, VOC_COMPETITION.value)
        print(f"Wrote {written} {SUBMISSION.value} submission files to {folder}/; upload {archive}")
    else:
        print(f"Wrote {written} predictions to {output_dir}/{{index,color,overlay}}/")


def run():
    entry.run(main, __name__, inference_only=True)


if __name__ == "__main__":
    run()
