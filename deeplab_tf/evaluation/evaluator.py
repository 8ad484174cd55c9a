"""Evaluation of a trained model on a split, of a checkpoint, and of every new checkpoint of a run.

The paper's protocol (section 4.2): predictions compared with the labels at the labels' own
resolution, pixels labelled `ignore_label` left out, and one confusion matrix summed over the whole
split before any score is computed (`metrics`). Each image runs at its own size, or, with
`eval_crop_size`, padded to that fixed canvas as the original release evaluated ("crop size 513 during
both training and test"); only the image's own pixels are scored either way. Multi-scale inputs,
left-right flips and sliding windows are `inference.predict`'s options.

Results of a checkpoint go to ``<workdir>/eval_os<N>[_resize<M>][_crop<H>x<W>][_ms][_flip][_bf16|_int8]/`` (or a given folder):
one ``metrics-<step>.json`` per checkpoint and TensorBoard scalars at the checkpoint's training step, so
that runs evaluated with different inference settings show side by side and never mix.
"""

import os
import sys
import time

import numpy as np
import tensorflow as tf
from absl import logging

from deeplab_tf import workdir as workdir_lib
from deeplab_tf.constants import IGNORE_LABEL, MEAN_RGB
from deeplab_tf.data import eval_dataset, faults
from deeplab_tf.data.pipeline import list_files
from deeplab_tf.evaluation import inference
from deeplab_tf.evaluation import metrics as metrics_lib
from deeplab_tf.modeling.resnet import pad_value


def count_examples(file_pattern, *, max_images=None):
    """Number of records in the TFRecord files matching `file_pattern`, at most `max_images`
    (the files are read, not decoded).

    Raises:
        ValueError: no file matches the pattern or the files hold no record (the message names
            the pattern); `data.DataError` naming the shard: a truncated or corrupt file.
    """
    records = tf.data.TFRecordDataset(list_files(file_pattern))  # skips folders such as .incomplete/
    with faults.naming_faulty_records(file_pattern):
        count = int(records.take(max_images or -1).reduce(tf.constant(0, tf.int64),
                                                          lambda count, _: count + 1))
    if count == 0:
        raise ValueError(f"the TFRecord files matching {file_pattern!r} hold no example: the split "
                         "is empty; check the conversion's report or the pattern.")
    return count


def model_pad_value(model):
    """The pad value of `model`'s backbone (`resnet.pad_value`); the ImageNet mean, as the release's
    default, for a model that names no backbone."""
    backbone = getattr(model, "backbone_name", None)
    return pad_value(backbone) if backbone else MEAN_RGB


def canvas_options(model, images, eval_crop_size, *, grow_canvas=False):
    """`inference.predict`'s canvas arguments for `model` on `images`: none without `eval_crop_size`, else
    the canvas and `model_pad_value(model)`.

    Args:
        model: the segmentation model (its `output_stride` and backbone name, where it has them).
        images: the [B, H, W, 3] images to segment.
        eval_crop_size: (height, width) of the canvas, or None.
        grow_canvas: give an image larger than `eval_crop_size` `inference.canvas_for`'s grown canvas
            (deeplab-vis, `segment`, the served model) instead of an error (deeplab-eval, the release's
            measurement).
    """
    if not eval_crop_size:
        return {}
    canvas = tuple(eval_crop_size)
    if grow_canvas:
        # A model that names no output stride (any callable) gets sides of the image's own length.
        canvas = inference.canvas_for(tf.shape(images)[1:3], canvas, getattr(model, "output_stride", 1))
    return {"eval_crop_size": canvas, "pad_value": model_pad_value(model)}


def make_predict_fn(model, *, scales=(1.0,), flip=False, window_size=None, eval_crop_size=None, output="labels",
                    grow_canvas=False):
    """`inference.predict` of one image, traced once for every image size.

    With `eval_crop_size` the image is padded to that canvas with `model_pad_value(model)`; an image larger
    than it is an error, or with `grow_canvas` padded to `inference.canvas_for`'s canvas.

    Returns:
        A function float32 [1, H, W, 3] (RGB, 0..255) -> int32 labels [1, H, W] (or float32
        probabilities [1, H, W, C] with ``output="probabilities"``).
    """
    return tf.function(
        lambda images: inference.predict(model, images, scales=scales, flip=flip, output=output,
                                         window_size=window_size,
                                         **canvas_options(model, images, eval_crop_size, grow_canvas=grow_canvas)),
        input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])


class ProgressPrinter:
    """A `progress` callback printing "images done/total, img/s" every `interval_secs` and at the end.

    The rate counts from the first image on, so it leaves out tracing and the first run's set-up.
    A new evaluation (image 1 again) starts over, so one printer serves the evaluation loop.
    """

    def __init__(self, prefix="eval", *, stream=None, interval_secs=10.0):
        self._prefix, self._stream, self._interval = prefix, stream or sys.stderr, interval_secs
        self._first = self._last_print = None

    def __call__(self, done, total):
        now = time.monotonic()
        if done == 1:
            self._first = self._last_print = now
        if done < total and now - self._last_print < self._interval:
            return
        self._last_print = now
        rate = f", {(done - 1) / (now - self._first):.2f} img/s" if done > 1 else ""
        print(f"{self._prefix}: {done}/{total} images{rate}", file=self._stream, flush=True)


def evaluate(model, file_pattern, *, num_classes, ignore_label=IGNORE_LABEL, scales=(1.0,),
             flip=False, window_size=None, eval_crop_size=None, class_names=None, max_images=None,
             progress=None, resize=None):
    """Segments every image of a TFRecord split and scores the split's confusion matrix.

    Args:
        model: callable ``model(images, training=False)`` -> logits at the input size, e.g. a
            DeepLabV3 (evaluated as it is built: at its own output stride).
        file_pattern: TFRecord glob (or list of globs) of the split.
        num_classes: number of classes of the dataset (and of the model's logits).
        ignore_label: label value left out of the counts.
        scales, flip, window_size: inference options, see `inference.predict`.
        eval_crop_size: (height, width) canvas every image is padded to, the original protocol
            (`inference.predict`); None evaluates each image at its own size.
        class_names: names for the per-class entries (default "class_<i>").
        max_images: evaluate only the first this many images (a quick look, not a score).
        progress: optional callable ``progress(images_done, images_total)`` called after each
            image, e.g. a `ProgressPrinter`.
        resize: `eval_dataset`'s resize-to-range keyword arguments (min_resize_value,
            max_resize_value, resize_factor): image and label are resized first and the metric is
            computed at that size, as the release evaluates ADE20K; None: the stored size.

    Returns:
        `metrics.segmentation_metrics` of the summed confusion matrix, plus ``num_images`` and
        ``confusion_matrix`` (rows ground truth, columns prediction, as lists of ints).

    Raises:
        ValueError: the model has another number of classes, the pattern matches no file or only
            empty files, an image's label holds values outside [0, num_classes) other than
            `ignore_label`, or an image is larger than `eval_crop_size` (the message names the image).
    """
    if getattr(model, "num_classes", num_classes) != num_classes:
        raise ValueError(f"the model predicts {model.num_classes} classes but the split has "
                         f"{num_classes}: evaluate it on the dataset it was trained for.")
    total = count_examples(file_pattern, max_images=max_images)
    predict_labels = make_predict_fn(model, scales=scales, flip=flip, window_size=window_size,
                                     eval_crop_size=eval_crop_size)

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32),
                                  tf.TensorSpec([1, None, None], tf.int32)])
    def confusion_of(images, labels):
        return metrics_lib.confusion_matrix(labels, predict_labels(images),
                                            num_classes=num_classes, ignore_label=ignore_label)

    confusion = np.zeros([num_classes, num_classes], np.int64)
    # An undecodable record is named with its shard and the fix, not left as TensorFlow's bare error.
    with faults.naming_faulty_records(file_pattern, num_classes=num_classes, ignore_label=ignore_label):
        for done, example in enumerate(eval_dataset(file_pattern, **(resize or {})).take(total), start=1):
            try:
                confusion += confusion_of(example["image"], example["label"]).numpy()
            except tf.errors.InvalidArgumentError as error:
                name = example["filename"][0].numpy().decode("utf-8", "replace")
                raise ValueError(f"image {name!r} of {file_pattern!r}: "
                                 f"{faults.op_error_summary(error)}") from None
            if progress:
                progress(done, total)
    metrics = metrics_lib.segmentation_metrics(confusion, class_names=class_names)
    metrics.update(num_images=total, confusion_matrix=confusion.tolist())
    return metrics


def resize_description(resize):
    """The resize-to-range of `evaluate`'s `resize` for reports ("resized to 513-513, factor 16"); "" if off."""
    if not resize_range(resize):
        return ""
    factor = f", factor {resize['resize_factor']}" if resize.get("resize_factor") else ""
    return f"resized to {resize['min_resize_value']}-{resize.get('max_resize_value') or 'any'}{factor}, "


def resize_range(resize):
    """`resize` if it resizes (a min_resize_value set), else None."""
    return dict(resize) if resize and resize.get("min_resize_value") else None


def protocol_description(eval_crop_size, resize=None):
    """How the images were evaluated, for reports: "images padded to 513x513" or "images at their own size",
    after "resized to <min>-<max>, factor <f>, " when `resize` is on."""
    if eval_crop_size:
        return f"{resize_description(resize)}images padded to {eval_crop_size[0]}x{eval_crop_size[1]}"
    return f"{resize_description(resize)}images at their own size"


def default_output_dir(workdir, *, output_stride, scales=(1.0,), flip=False, precision="float32",
                       eval_crop_size=None, resize=None):
    """``<workdir>/eval_os<N>``, with ``_resize<min>`` for images resized to a range, ``_crop<H>x<W>`` for
    the eval-crop protocol, ``_ms`` for multi-scale inputs, ``_flip`` for flips, ``_bf16`` for bfloat16 and ``_int8``
    for an int8 TFLite file (`evaluate_tflite`)."""
    resize = resize_range(resize)
    suffix = ((f"_resize{resize['min_resize_value']}" if resize else "")
              + (f"_crop{eval_crop_size[0]}x{eval_crop_size[1]}" if eval_crop_size else "")
              + ("_ms" if tuple(scales) != (1.0,) else "") + ("_flip" if flip else "")
              + {"mixed_bfloat16": "_bf16", "int8": "_int8"}.get(precision, ""))
    return os.path.join(workdir, f"eval_os{output_stride}{suffix}")


def write_results(output_dir, results, *, step):
    """Writes `results` (metrics plus settings) as ``metrics-<step>.json`` and TensorBoard scalars
    (tags from `metrics.summary_scalars`) at `step`; returns the JSON path."""
    tf.io.gfile.makedirs(output_dir)
    path = os.path.join(output_dir, f"metrics-{step}.json")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(metrics_lib.metrics_to_json(results))
    writer = tf.summary.create_file_writer(output_dir)
    with writer.as_default():
        for tag, value in metrics_lib.summary_scalars(results).items():
            tf.summary.scalar(tag, value, step=step)
    writer.close()
    return path


def evaluate_checkpoint(checkpoint, file_pattern, *, dataset_info, output_stride=None,
                        scales=(1.0,), flip=False, window_size=None, eval_crop_size=None,
                        output_dir=None, max_images=None, progress=None, precision="float32", resize=None,
                        atrous_rates=None, multi_grid=None):
    """Evaluates one checkpoint on a split and records the result at the checkpoint's step.

    Args:
        checkpoint: a workdir (its latest checkpoint), its checkpoints/ directory or a prefix.
        file_pattern: TFRecord glob of the split.
        dataset_info: the split's `data.DatasetInfo` (classes, class names, ignore label).
        output_stride: rebuild the model at this output stride (the paper trains at 16 and
            evaluates at 8); None keeps the trained one.
        scales, flip, window_size: inference options, see `inference.predict`.
        eval_crop_size: see `evaluate`; recorded in the results and the default folder name.
        output_dir: where to write; default `default_output_dir` of the checkpoint's workdir.
        max_images, progress, resize: see `evaluate`; `resize` is recorded in the results.
        precision: "float32", or "mixed_bfloat16" to compute in bfloat16 (about 2x faster on CPUs
            with bfloat16 matrix units such as AMX; slower on CPUs without them).
        atrous_rates, multi_grid: a checkpoint of the original release's model (`workdir.load_model`).

    Returns:
        (results, JSON path): results are `evaluate`'s metrics plus the checkpoint, step, split
        and inference settings, and the seconds taken (tracing included).
    """
    count_examples(file_pattern)  # a wrong pattern or an empty split fails before loading
    workdir, prefix = workdir_lib.resolve_checkpoint(checkpoint)
    model, prefix, model_config = workdir_lib.load_model(
        prefix, output_stride=output_stride, num_classes=dataset_info.num_classes, precision=precision,
        fold_batch_norm=True, atrous_rates=atrous_rates, multi_grid=multi_grid)
    output_stride = output_stride or model_config["output_stride"]
    start = time.monotonic()
    metrics = evaluate(model, file_pattern, num_classes=dataset_info.num_classes,
                       ignore_label=dataset_info.ignore_label, scales=scales, flip=flip,
                       window_size=window_size, eval_crop_size=eval_crop_size,
                       class_names=dataset_info.class_names,
                       max_images=max_images, progress=progress, resize=resize)
    return _record(metrics, time.monotonic() - start, workdir, output_dir, checkpoint=prefix,
                   step=workdir_lib.checkpoint_step(prefix), dataset=dataset_info.name, eval_pattern=file_pattern,
                   output_stride=output_stride, scales=scales, flip=flip, window_size=window_size,
                   eval_crop_size=eval_crop_size, resize=resize, precision=precision)


def _record(metrics, seconds, workdir, output_dir, *, step, scales, flip, eval_crop_size, resize, **settings):
    """(results, JSON path): `metrics` with the settings they were measured with, written to `output_dir` or to
    `default_output_dir` of `workdir` at `step`."""
    results = {
        "step": step, **settings, "scales": list(scales), "flip": flip,
        "eval_crop_size": list(eval_crop_size) if eval_crop_size else None,  # None: each image at its size
        "resize": resize_range(resize),  # None: the stored size
        "seconds": seconds, **metrics,
    }
    output_dir = output_dir or default_output_dir(
        workdir, output_stride=settings["output_stride"], scales=scales, flip=flip, precision=settings["precision"],
        eval_crop_size=eval_crop_size, resize=resize)
    return results, write_results(output_dir, results, step=step)


def evaluate_tflite(model, file_pattern, *, dataset_info, flip=False, output_dir=None, max_images=None, progress=None,
                    resize=None):
    """Evaluates the int8 TFLite file of `deeplab-export --int8_tflite_path` as `evaluate_checkpoint` evaluates a
    checkpoint: on the canvas it was exported at (its fixed input size), at one scale.

    Args:
        model: the `deeplab_tf.export.TFLiteModel` of the .tflite file.
        file_pattern, dataset_info, flip, max_images, progress, resize: see `evaluate_checkpoint`.
        output_dir: where to write; default ``eval_os<N>_crop<H>x<W>[_flip]_int8`` in the workdir of the checkpoint
            the file was exported from, or beside the file when that workdir is gone.

    Returns:
        `evaluate_checkpoint`'s (results, JSON path), with precision "int8" and the file as the checkpoint.
    """
    source = model.settings["checkpoint"]
    try:
        workdir = workdir_lib.resolve_checkpoint(source)[0] if source else os.path.dirname(model.path)
    except FileNotFoundError:
        workdir = os.path.dirname(model.path)
    start = time.monotonic()
    metrics = evaluate(model, file_pattern, num_classes=dataset_info.num_classes,
                       ignore_label=dataset_info.ignore_label, flip=flip, eval_crop_size=model.eval_crop_size,
                       class_names=dataset_info.class_names, max_images=max_images, progress=progress, resize=resize)
    return _record(metrics, time.monotonic() - start, workdir, output_dir, checkpoint=model.path,
                   step=workdir_lib.checkpoint_step(source) if source else 0, dataset=dataset_info.name,
                   eval_pattern=file_pattern, output_stride=model.output_stride, scales=(1.0,), flip=flip,
                   window_size=None, eval_crop_size=model.eval_crop_size, resize=resize, precision="int8")


def evaluate_new_checkpoints(checkpoint_dir, file_pattern, *, timeout_secs, **kwargs):
    """The evaluation loop: evaluates each new checkpoint of a training run as it appears.

    Starts with the latest checkpoint (waiting for the first one if there is none yet) and ends
    once no new checkpoint has appeared for `timeout_secs`. A checkpoint the trainer deleted
    (``max_to_keep``) before it could be read is skipped with a warning.

    Args:
        checkpoint_dir: the run's workdir or its checkpoints/ directory.
        file_pattern: TFRecord glob of the split.
        timeout_secs: how long to wait for a new checkpoint before ending.
        **kwargs: `evaluate_checkpoint`'s keyword arguments.

    Yields:
        `evaluate_checkpoint`'s (results, JSON path) for each checkpoint evaluated.
    """
    if tf.io.gfile.exists(checkpoint_dir + ".index"):
        raise ValueError(f"{checkpoint_dir} is a single checkpoint; the evaluation loop needs the "
                         "run's workdir or its checkpoints/ folder.")
    if os.path.basename(os.path.normpath(checkpoint_dir)) != workdir_lib.CHECKPOINT_DIR:
        checkpoint_dir = workdir_lib.checkpoint_dir(checkpoint_dir)
    for prefix in tf.train.checkpoints_iterator(checkpoint_dir, timeout=timeout_secs):
        try:
            yield evaluate_checkpoint(prefix, file_pattern, **kwargs)
        except (FileNotFoundError, workdir_lib.CheckpointReadError):
            # Deleted: its files gone, or the folder's `checkpoint` file, which named it, lists it no more.
            state = tf.train.get_checkpoint_state(checkpoint_dir)
            listed = state is not None and prefix in state.all_model_checkpoint_paths
            if listed and not workdir_lib.checkpoint_deleted(prefix):
                raise
            logging.warning("Skipped %s: the trainer deleted it (config.train.keep_checkpoints) before it could "
                            "be read.", prefix)
