r"""deeplab-convert-checkpoint: a deeplab-train checkpoint to the original TF1 release's layout, and back.

    deeplab-convert-checkpoint --to=release --checkpoint=runs/voc_recipe/stage1_trainaug_os16 \
        --output_dir=release/train_logdir
    deeplab-convert-checkpoint --to=deeplab_tf --checkpoint=release/train_logdir --output_dir=runs/imported \
        --output_stride=16 --atrous_rates=6,12,18 --multi_grid=1,2,4

--to=release writes <output_dir>/model.ckpt-<step> and its `checkpoint` file, so the release's eval.py,
vis.py (--checkpoint_dir) and export_model.py (--checkpoint_path) run on a model trained here.
--to=deeplab_tf makes a workdir from a release checkpoint (ResNet variants without a decoder): deeplab-eval,
-vis and -export use it as any run, and deeplab-train in it continues that training with its global step and
momentum accumulators. The release's checkpoints do not record the output stride, the ASPP rates or
multi-grid: pass the values its train.py ran with. Every tensor is copied exactly, both ways.
(deeplab-eval, -vis, -export and config.train.init_checkpoint also read a release checkpoint directly.)
"""

from absl import app, flags

from deeplab_tf.cli import entry, tensorflow_start  # noqa: F401  (before TensorFlow loads)

from deeplab_tf.cli.usage import exit_on_user_error, require

_TO = flags.DEFINE_enum("to", None, ["release", "deeplab_tf"], "Which way to convert.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "--to=release: a deeplab-train workdir, its checkpoints/ folder or a prefix; "
    "--to=deeplab_tf: the release's train_logdir or a model.ckpt-<N> prefix.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "--to=release: the train_logdir to write; --to=deeplab_tf: the new workdir.")
_OUTPUT_STRIDE = flags.DEFINE_enum(
    "output_stride", "16", ["8", "16", "32"], "--to=deeplab_tf: the release's --output_stride at training.")
_ATROUS_RATES = flags.DEFINE_list(
    "atrous_rates", None, "--to=deeplab_tf: the release's --atrous_rates at training (default 6,12,18 at "
    "output stride 16, 12,24,36 at 8).")
_MULTI_GRID = flags.DEFINE_list(
    "multi_grid", None, "--to=deeplab_tf: the release's --multi_grid at training, e.g. 1,2,4 (default 1,1,1).")


def _ints(flag, example):
    if flag.value is None:
        return None
    if not all(value.isdigit() and int(value) > 0 for value in flag.value):
        raise app.UsageError(f"--{flag.name}: give positive integers such as {example}, got {','.join(flag.value)!r}")
    return tuple(int(value) for value in flag.value)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    to = require(_TO, "release")
    checkpoint = require(_CHECKPOINT, "runs/voc_os16")
    output_dir = require(_OUTPUT_DIR, "release/train_logdir" if to == "release" else "runs/imported")
    rates, multi_grid = _ints(_ATROUS_RATES, "6,12,18"), _ints(_MULTI_GRID, "1,2,4")
    if to == "release" and (rates or multi_grid or _OUTPUT_STRIDE.present):
        raise app.UsageError("--output_stride, --atrous_rates and --multi_grid describe a release checkpoint "
                             "(--to=deeplab_tf); the workdir records its model: drop them.")
    from deeplab_tf import checkpoint_conversion  # Here: --help must not wait for TensorFlow.

    with exit_on_user_error("deeplab-convert-checkpoint"):
        if to == "release":
            prefix, note = checkpoint_conversion.workdir_to_release(checkpoint, output_dir)
        else:
            prefix, note = checkpoint_conversion.release_to_workdir(
                checkpoint, output_dir, output_stride=int(_OUTPUT_STRIDE.value), atrous_rates=rates,
                multi_grid=multi_grid), ""
    print(f"deeplab-convert-checkpoint: wrote {prefix}" + (f" ({note})" if note else ""), flush=True)


def run():
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
