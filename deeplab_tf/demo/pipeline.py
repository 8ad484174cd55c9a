"""The demo, end to end: embedded dataset -> TFRecords -> train -> evaluate -> visualise -> export.

Every stage goes through the library code the binaries use, writes into one workspace folder and
is skipped on a re-run when its output is already there (training resumes from its checkpoint, so
a larger `steps` continues it). See WORKSPACE.md for the layout.
"""

import glob
import json
import os
import shutil
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from deeplab_tf import export, visualization, workdir as workdir_lib
from deeplab_tf.data.sources.voc import convert_voc2012
from deeplab_tf.demo import BATCH_SIZE, CROP_SIZE, STEPS, dataset, montage
from deeplab_tf.evaluation import evaluator, metrics, visualizer
from deeplab_tf.training.config import default_config
from deeplab_tf.training.trainer import train

PAPER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def demo_config(tfrecord_dir, *, steps=STEPS, batch_size=BATCH_SIZE, crop_size=CROP_SIZE):
    """The paper's recipe scaled to two CPU cores: ResNet-50 at output stride 16, ASPP, poly LR.

    From random initialisation (nothing is downloaded), so the learning rate is higher than the
    paper's 0.007 fine-tuning from ImageNet, and there is no weight decay to fight it.
    """
    config = default_config()
    config.dataset.name = dataset.NAME
    config.dataset.train_pattern = os.path.join(tfrecord_dir, "train-*")
    config.dataset.eval_pattern = os.path.join(tfrecord_dir, "val-*")
    config.dataset.eval_crop_size = dataset.EVAL_CROP_SIZE  # the trainer's closing evaluation, as the demo's
    config.model.backbone = "resnet_v1_50"
    config.model.output_stride = 16
    config.model.multi_grid = ()
    config.model.weight_decay = 0.0
    # Half the paper's 256 channels per ASPP branch: its three 3x3 convolutions over 2048 channels cost as
    # much as the backbone at this crop and hold 14M of the 39M weights (README.md, "The demo").
    config.model.aspp_filters = 128
    # The paper's 0.9997 averages batch statistics over ~3K steps of its 30K. Here the weights still move
    # in the last tens of steps: statistics averaged over ~10 steps match the final weights; over ~100
    # (0.99) they lagged behind and scores varied from run to run.
    config.model.bn_momentum = 0.9
    # The release's slow start: a few steps at a low rate before the poly decay, so the first updates from
    # random weights do not throw the run somewhere else each time.
    config.train.update(
        steps=steps, batch_size=batch_size, crop_size=(crop_size, crop_size), base_learning_rate=0.02,
        warmup_steps=30, warmup_learning_rate=0.002, min_scale=0.5, max_scale=1.5, log_every_steps=10,
        summary_every_steps=20, image_summary_every_steps=100, shuffle_buffer=512,
        # The demo uses only the last checkpoint (weights and momentum: 250 MB); a signal saves one too.
        keep_checkpoints=1, checkpoint_every_steps=steps, checkpoint_every_minutes=5.0)
    return config


def train_demo(tfrecord_dir, workdir, *, steps=STEPS, log=print, **config_kwargs):
    """Trains the demo's model (`demo_config(tfrecord_dir, steps=steps, **config_kwargs)`) into `workdir`.

    Two calls start from the same weights and see the same batches: the trainer seeds the initial
    weights, shuffles and augmentations with config.train.seed. (At the demo's size the runs still
    part in the last bits from the first updates on: see README.md, "The demo".)

    Returns:
        (the config, the trainer's summary dict).
    """
    config = demo_config(tfrecord_dir, steps=steps, **config_kwargs)
    return config, train(config, workdir, log=log)


class Interrupted(Exception):
    """The training stage was stopped by a signal (it saved a checkpoint first)."""


class Workspace:
    """The demo's folders under one root."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.data = os.path.join(self.root, "data")
        self.tfrecords = os.path.join(self.root, "tfrecords")
        self.workdir = os.path.join(self.root, "runs", "demo")
        self.vis = os.path.join(self.root, "vis")
        self.exports = os.path.join(self.root, "exports", "demo")
        self.montage = os.path.join(self.root, "montage.png")

    def derived(self):
        return [self.tfrecords, self.workdir, self.vis, self.exports]


def _stage(log, number, title):
    log(f"\n[{number}/5] {title}")
    return time.monotonic()


def _evaluate(workdir, eval_pattern, info, *, output_stride, scales, flip, eval_crop_size, log):
    """Evaluates the latest checkpoint, or reads the JSON an earlier run wrote for it."""
    _, prefix = workdir_lib.resolve_checkpoint(workdir)
    output_dir = evaluator.default_output_dir(workdir, output_stride=output_stride, scales=scales, flip=flip,
                                              eval_crop_size=eval_crop_size)
    cached = os.path.join(output_dir, f"metrics-{workdir_lib.checkpoint_step(prefix)}.json")
    if os.path.exists(cached):
        with open(cached) as f:
            return json.load(f), cached
    progress = evaluator.ProgressPrinter(f"  eval OS {output_stride}{' multi-scale + flip' if flip else ''}",
                                         stream=_LogStream(log))
    return evaluator.evaluate_checkpoint(prefix, eval_pattern, dataset_info=info, output_stride=output_stride,
                                         scales=scales, flip=flip, eval_crop_size=eval_crop_size,
                                         output_dir=output_dir, progress=progress)


class _LogStream:
    """A file-like object that sends whole lines to `log`."""

    def __init__(self, log):
        self._log = log

    def write(self, text):
        if text.strip():
            self._log(text.rstrip("\n"))

    def flush(self):
        pass


def _serve_one_image(saved_model_dir, image_path):
    """Runs the exported SavedModel's serving signature on one encoded image file."""
    serving = tf.saved_model.load(saved_model_dir).signatures[export.SERVING_SIGNATURE]
    with open(image_path, "rb") as f:
        outputs = serving(image_bytes=tf.constant([f.read()]))
    height, width = int(outputs["heights"][0]), int(outputs["widths"][0])
    return outputs["labels"][0, :height, :width].numpy()


def prepare_data(space, splits, *, log=print):
    """The scenes in the VOC layout and their TFRecords in `space` (a `Workspace`), each reused when there.

    Returns:
        the VOC2012 folder.
    """
    voc, generated = dataset.build(space.data, splits=splits)
    if generated:
        for path in space.derived():  # Everything derived from an older dataset is stale.
            shutil.rmtree(path, ignore_errors=True)
    log(f"  {'generated' if generated else 'reusing'} {voc}")
    if not glob.glob(os.path.join(space.tfrecords, "val-*")):
        convert_voc2012(voc, space.tfrecords, splits=("train", "val"), num_shards=2)
        log(f"  wrote {space.tfrecords}")
    else:
        log(f"  reusing {space.tfrecords}")
    return voc


def _write_montage(voc, space, count):
    """`count` of the predicted val scenes as image | ground truth | OS 8 prediction rows in <workspace>/montage.png."""
    # The predicted scenes come in the TFRecord shards' order, not val.txt's: take them from the PNGs.
    image_ids = sorted(name[:-len(".png")] for name in os.listdir(os.path.join(space.vis, "index")))[:count]
    scenes = [(np.asarray(Image.open(os.path.join(voc, "JPEGImages", i + ".jpg")).convert("RGB")),
               np.asarray(Image.open(os.path.join(voc, "SegmentationClass", i + ".png"))),
               np.asarray(Image.open(os.path.join(space.vis, "index", i + ".png")))) for i in image_ids]
    return montage.write_montage(space.montage, scenes, colormap=dataset.INFO.colormap,
                                 class_names=dataset.CLASS_NAMES, prediction_title="prediction (OS 8)")


def run_demo(root, *, steps=STEPS, num_train_images=None, num_val_images=None, eval_scales=PAPER_SCALES,
             num_vis_images=8, num_montage_images=4, log=print):
    """Runs the whole demo in `root`; returns a dict of the results and artefact paths."""
    space = Workspace(root)
    info = dataset.INFO
    splits = {"train": num_train_images or dataset.SPLITS["train"], "val": num_val_images or dataset.SPLITS["val"]}
    start = time.monotonic()

    t = _stage(log, 1, f"Demo dataset ({splits['train']} train + {splits['val']} val synthetic scenes, VOC layout) "
                       "and TFRecords through the PASCAL VOC converter")
    voc = prepare_data(space, splits, log=log)
    log(f"  ({time.monotonic() - t:.0f} s)")

    t = _stage(log, 2, f"Training DeepLabV3 (ResNet-50, output stride 16, {steps} steps)")
    config, summary = train_demo(space.tfrecords, space.workdir, steps=steps, log=lambda line: log("  " + line))
    if summary["interrupted"]:  # Scoring a half-trained model would report numbers nobody asked for.
        raise Interrupted(f"stopped by {summary['interrupted']} at step {summary['step']}, saved in "
                          f"{summary['checkpoint']}: run the same command to resume.")
    log(f"  {summary['checkpoint']} ({time.monotonic() - t:.0f} s)")

    canvas = dataset.EVAL_CROP_SIZE
    t = _stage(log, 3, f"Evaluation on the val split, {evaluator.protocol_description(canvas)} as the original "
                       f"release evaluates: OS 16, OS 8, OS 8 with multi-scale inputs and flips")
    settings = [("OS 16", 16, (1.0,), False, canvas), ("OS 8", 8, (1.0,), False, canvas),
                (f"OS 8, scales {','.join(f'{s:g}' for s in eval_scales)} + flip", 8, tuple(eval_scales), True,
                 canvas),
                ("OS 16, images at their own size", 16, (1.0,), False, None)]
    evaluations = []
    for name, output_stride, scales, flip, eval_crop_size in settings:
        results, path = _evaluate(space.workdir, config.dataset.eval_pattern, info, output_stride=output_stride,
                                  scales=scales, flip=flip, eval_crop_size=eval_crop_size, log=log)
        evaluations.append((name, results, path))
        log(f"  {name}: mIOU {results['mean_iou']:.4f} -> {path}")
    log(f"  ({time.monotonic() - t:.0f} s)")

    t = _stage(log, 4, "Colourised predictions (OS 8) of the first val images, and a montage of a few")
    model, prefix, _ = workdir_lib.load_model(space.workdir, output_stride=8, fold_batch_norm=True)
    if not os.path.isdir(os.path.join(space.vis, "overlay")):
        _, examples = visualizer.split_examples(config.dataset.eval_pattern)
        examples = (example for _, example in zip(range(num_vis_images), examples))
        visualizer.visualize(model, examples, space.vis, colormap=info.colormap, eval_crop_size=canvas)
    montage_png = _write_montage(voc, space, min(num_montage_images, num_vis_images))
    log(f"  {space.vis}/{{index,color,overlay}}/, {montage_png} ({time.monotonic() - t:.0f} s)")

    t = _stage(log, 5, "SavedModel export (OS 8) and one request to it")
    version_dir = os.path.join(space.exports, "1")
    settings_path = os.path.join(version_dir, export.SETTINGS_FILE)
    exported = json.load(open(settings_path)) if os.path.exists(settings_path) else {}
    if (exported.get("checkpoint"), exported.get("eval_crop_size")) != (prefix, list(canvas)):
        # On the canvas the demo evaluates on, as deeplab-export does for its workdir: served labels are the scored ones.
        export.export_version(model, space.exports, version=1, overwrite=True, class_names=info.class_names,
                              checkpoint=prefix, eval_crop_size=canvas)
    image_id = open(os.path.join(voc, "ImageSets", "Segmentation", "val.txt")).readline().strip()
    image_path = os.path.join(voc, "JPEGImages", image_id + ".jpg")
    served = _serve_one_image(version_dir, image_path)
    served_png = os.path.join(space.root, "served_prediction.png")
    Image.fromarray(visualization.label_to_color_image(served, info.colormap)).save(served_png)
    log(f"  {version_dir}: {image_path} -> labels {served.shape[0]}x{served.shape[1]}, classes "
        f"{sorted(int(c) for c in np.unique(served))} -> {served_png} ({time.monotonic() - t:.0f} s)")

    return {
        "workspace": space.root, "voc": voc, "tfrecords": space.tfrecords, "workdir": space.workdir,
        "checkpoint": prefix, "vis": space.vis, "montage": montage_png, "saved_model": version_dir,
        "served_image": image_path,
        "served_prediction": served_png, "served_shape": list(served.shape), "evaluations": evaluations,
        "seconds": time.monotonic() - start,
    }


def format_report(result):
    """The closing summary: mIOU per setting, the per-class table, artefacts, next commands."""
    name, best, _ = max(result["evaluations"], key=lambda item: item[1]["mean_iou"])
    chance = 1.0 / len(dataset.CLASS_NAMES)
    canvas = dataset.EVAL_CROP_SIZE
    lines = ["", "=" * 78, "DeepLabv3 demo: results on the val split",
             f"(images padded to {canvas[0]}x{canvas[1]}, the original release's protocol, unless the row says "
             "otherwise)", "",
             f"  {'setting':<44} {'mIOU':>8} {'pixel acc':>10}"]
    for setting, results, _ in result["evaluations"]:
        lines.append(f"  {setting:<44} {results['mean_iou']:>8.4f} {results['pixel_accuracy']:>10.4f}")
    lines += [f"  (a uniform guess scores about {chance:.2f} IoU per class)", "",
              f"Look first: {result['montage']} (val scenes: image | ground truth | prediction at OS 8)", "",
              f"Per class, {name}:", metrics.format_metrics_table(best), "", "Artefacts:"]
    rows = [("dataset (VOC layout)", result["voc"]), ("TFRecords", result["tfrecords"]),
            ("checkpoint", result["checkpoint"]), ("TensorBoard", f"tensorboard --logdir {result['workdir']}"),
            ("eval JSON", os.path.join(result["workdir"], "eval_os*", "metrics-*.json")),
            ("predictions", os.path.join(result["vis"], "{index,color,overlay}")), ("montage", result["montage"]),
            ("SavedModel", result["saved_model"]),
            ("served prediction", f"{result['served_prediction']} ({result['served_shape'][0]}x"
                                  f"{result['served_shape'][1]}, from {os.path.basename(result['served_image'])})")]
    lines += [f"  {label:<20} {path}" for label, path in rows]
    workdir, tfrecords = result["workdir"], result["tfrecords"]
    lines += ["", "Go further:",
              f"  deeplab-eval --checkpoint={workdir} --eval_pattern='{tfrecords}/val-*' --dataset={dataset.NAME} "
              f"--eval_output_stride=8 --eval_scales=0.5,0.75,1.0,1.25,1.5,1.75 --flip "
              f"--eval_crop_size={canvas[0]},{canvas[1]}",
              f"  deeplab-vis --checkpoint={workdir} --image_dir=<your images> --output_dir=<folder> "
              f"--dataset={dataset.NAME}",
              f"  saved_model_cli show --all --dir {result['saved_model']}",
              "  README.md: PASCAL VOC / Cityscapes with the paper's recipe, your own data, distributed training.",
              f"Finished in {result['seconds'] / 60:.1f} min.", "=" * 78]
    return "\n".join(lines)
