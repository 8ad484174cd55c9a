"""deeplab-demo: DeepLabv3 end to end on an embedded dataset, with nothing to download.

    deeplab-demo                        # ./deeplab_demo
    deeplab-demo --workspace=/tmp/demo --steps=800

Costs, measured over three runs on 2 cores of an AMD EPYC: about 12 minutes of CPU time (user + sys
735-742 s, so about 6 minutes on 2 free cores: not measured, those runs shared them), 2.3 GiB peak memory
and a 370 MiB workspace (one checkpoint and the SavedModel). README.md, "The demo", has the numbers to expect.

Builds synthetic scenes in the PASCAL VOC layout, converts them to TFRecords, trains DeepLabV3
(ResNet-50, output stride 16), evaluates at output stride 16 and 8 and with multi-scale inputs and
flips, writes colourised predictions and montage.png (image | ground truth | prediction), exports a
SavedModel, runs it on one image and prints a report. Re-running reuses what is built; a larger --steps
continues the training.
"""

import os
import sys

from absl import app, flags, logging

from deeplab_tf import demo
from deeplab_tf.cli import entry, tensorflow_start  # noqa: F401  (before TensorFlow loads)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_WORKSPACE = flags.DEFINE_string("workspace", "deeplab_demo", "Folder for the data, runs, predictions and export.")
_STEPS = flags.DEFINE_integer("steps", demo.STEPS, f"Training steps (batch {demo.BATCH_SIZE}, crop {demo.CROP_SIZE}).")
_NUM_TRAIN = flags.DEFINE_integer("num_train_images", None, "Training scenes (default 240).")
_NUM_VAL = flags.DEFINE_integer("num_val_images", None, "Validation scenes (default 40).")
_EVAL_SCALES = flags.DEFINE_list("eval_scales", ["0.5", "0.75", "1.0", "1.25", "1.5", "1.75"],
                                 "Input scales of the multi-scale evaluation (the paper's six).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        scales = tuple(float(s) for s in _EVAL_SCALES.value)
    except ValueError:
        raise app.UsageError(f"--eval_scales={','.join(_EVAL_SCALES.value)}: give numbers, e.g. 0.75,1.0,1.25")
    if _STEPS.value <= 0:
        raise app.UsageError(f"--steps={_STEPS.value}: give a positive number of training steps.")

    import tensorflow as tf

    from deeplab_tf.demo import pipeline

    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.ERROR)  # The stages print their own progress.
    try:
        result = pipeline.run_demo(_WORKSPACE.value, steps=_STEPS.value, num_train_images=_NUM_TRAIN.value,
                                   num_val_images=_NUM_VAL.value, eval_scales=scales,
                                   log=lambda line: print(line, flush=True))
    except (OSError, ValueError, FloatingPointError, pipeline.Interrupted) as error:
        print(f"deeplab-demo: {error}", file=sys.stderr)
        sys.exit(1)
    print(pipeline.format_report(result), flush=True)


def run():
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
