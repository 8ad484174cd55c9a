"""deeplab-eval: mIOU of a trained checkpoint on a TFRecord split, per class and overall.

    deeplab-eval --checkpoint=runs/voc_os16 --eval_pattern='/data/voc_tfrecord/val-*'

The paper's val protocol (Table 4/6): --eval_output_stride=8 --eval_scales=0.5,0.75,1.0,1.25,1.5,1.75
--flip, on the release's fixed canvas --eval_crop_size=513,513 (1025,2049 on Cityscapes); ADE20K as the
release scores it: --min_resize_value=513 --max_resize_value=513 --resize_factor=16. Prints a
per-class table and the scores, and writes metrics-<step>.json and TensorBoard scalars to --output_dir
(default <workdir>/eval_os<N>[_crop<H>x<W>][_ms][_flip]). With --loop it evaluates every new checkpoint
of a running training job until none appears for --loop_timeout_secs. --tflite=<file> scores the int8 TFLite
file of deeplab-export --int8_tflite_path instead of a checkpoint (results in eval_os<N>_crop<H>x<W>_int8).
"""

import sys

from absl import app, flags

from deeplab_tf.cli import entry, tensorflow_start  # noqa: F401  (before TensorFlow loads)

from deeplab_tf.cli import common
from deeplab_tf.data.errors import check_output_dir

EVAL_PATTERN = flags.DEFINE_string("eval_pattern", None, "TFRecord glob of the split to evaluate.")
flags.adopt_module_key_flags(common)  # --help lists the shared flags this binary takes, not only its own.
LOOP = flags.DEFINE_boolean(
    "loop", False, "Evaluate the latest checkpoint, then each new one as training writes it.")
LOOP_TIMEOUT_SECS = flags.DEFINE_integer(
    "loop_timeout_secs", 3600, "With --loop: end once no new checkpoint appeared for this long.",
    lower_bound=0)


def _report(results, path):
    from deeplab_tf.evaluation import evaluator
    from deeplab_tf.evaluation.metrics import format_metrics_table

    print(format_metrics_table(results))
    print(f"step {results['step']}: mIOU {100 * results['mean_iou']:.2f}% over "
          f"{results['num_images']} images (output stride {results['output_stride']}, scales "
          f"{','.join(map(str, results['scales']))}{', flip' if results['flip'] else ''}, "
          f"{evaluator.protocol_description(results['eval_crop_size'], results['resize'])}, {results['precision']}, "
          f"{results['seconds']:.0f} s) -> {path}", flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from deeplab_tf.evaluation import evaluator  # Here: --help must not wait for TensorFlow.

    if common.TFLITE.value:
        return _evaluate_tflite()
    checkpoint = common.require(common.CHECKPOINT, "runs/voc_os16")
    eval_pattern = common.require(EVAL_PATTERN, "'/data/voc_tfrecord/val-*'")
    resize = common.resize_options()
    with common.exit_on_user_error("deeplab-eval"):
        kwargs = dict(common.inference_options(checkpoint), dataset_info=common.dataset_info(checkpoint),
                      output_stride=common.OUTPUT_STRIDE.value, output_dir=common.OUTPUT_DIR.value,
                      max_images=common.MAX_IMAGES.value, precision=common.PRECISION.value, resize=resize,
                      progress=evaluator.ProgressPrinter("deeplab-eval"), **common.release_options())
        if common.OUTPUT_DIR.value:
            check_output_dir(common.OUTPUT_DIR.value)  # before hours of evaluation, not after
        if LOOP.value:
            evaluated = 0
            for evaluated, (results, path) in enumerate(evaluator.evaluate_new_checkpoints(
                    checkpoint, eval_pattern, timeout_secs=LOOP_TIMEOUT_SECS.value, **kwargs), 1):
                _report(results, path)
            if not evaluated:
                sys.exit(f"deeplab-eval: no checkpoint appeared in {checkpoint} within "
                         f"--loop_timeout_secs={LOOP_TIMEOUT_SECS.value}; is training running?")
        else:
            _report(*evaluator.evaluate_checkpoint(checkpoint, eval_pattern, **kwargs))


def _evaluate_tflite():
    """deeplab-eval --tflite: the int8 file scored as a checkpoint is, on its canvas."""
    from deeplab_tf.evaluation import evaluator

    eval_pattern = common.require(EVAL_PATTERN, "'/data/voc_tfrecord/val-*'")
    if LOOP.value:
        raise app.UsageError("--loop follows a training run's checkpoints; --tflite is one file: drop --loop")
    resize = common.resize_options()
    with common.exit_on_user_error("deeplab-eval"):
        evaluator.count_examples(eval_pattern)  # a wrong pattern fails before the file loads
        model, checkpoint = common.tflite_model()
        if common.OUTPUT_DIR.value:
            check_output_dir(common.OUTPUT_DIR.value)
        _report(*evaluator.evaluate_tflite(
            model, eval_pattern, dataset_info=common.dataset_info(checkpoint), flip=common.FLIP.value,
            output_dir=common.OUTPUT_DIR.value, max_images=common.MAX_IMAGES.value, resize=resize,
            progress=evaluator.ProgressPrinter("deeplab-eval")))


def run():
    entry.run(main, __name__, inference_only=True)


if __name__ == "__main__":
    run()
