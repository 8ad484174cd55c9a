"""Loading a trained DeepLabV3 for inference from a training run or a `.keras` file."""

import keras

from deeplab_tf import workdir as workdir_lib
# mean_iou, keras_losses, optimizers and schedules are imported for their Keras registration: `import deeplab_tf`
# loads nothing, and the .keras file of a compiled model names their classes.
from deeplab_tf.evaluation import mean_iou  # noqa: F401
from deeplab_tf.modeling import folding
from deeplab_tf.modeling.deeplab import DeepLabV3
from deeplab_tf.training import keras_losses, optimizers, schedules  # noqa: F401


def load_model(path, *, output_stride=None, precision="float32", fold_batch_norm=True, atrous_rates=None,
               multi_grid=None):
    """A trained DeepLabV3, ready for inference (``model(images, training=False)`` or `predict`).

    Batch norm is folded into the convolutions by default, as deeplab-eval, deeplab-vis and the export
    run it: the same logits (to float rounding), about 15% faster, but no batch norm left to train. To
    fine-tune the loaded weights (`fit`), pass ``fold_batch_norm=False``.

    Args:
        path: a deeplab-train workdir (its latest checkpoint), its checkpoints/ folder, a checkpoint
            prefix (``runs/voc/checkpoints/ckpt-30000``), a ``.keras`` file saved by ``model.save``, or a
            checkpoint of the original TF1 release (its train_logdir or ``model.ckpt-30000`` prefix).
        output_stride: rebuild at this output stride (the paper trains at 16 and evaluates at 8); the
            ASPP rates follow it. Not for ``.keras`` files, which keep the stride they were saved with.
        precision: "float32" or "mixed_bfloat16" (bfloat16 convolutions; the logits stay float32).
        fold_batch_norm: see above.
        atrous_rates, multi_grid: for a checkpoint of the original release, the ASPP rates at `output_stride`
            (16 unless given) and block4's unit rates, as given to its train.py / eval.py (e.g. (6, 12, 18) and
            (1, 2, 4)); its variables do not record them.

    Returns:
        The `DeepLabV3`.

    Example:
        >>> model = load_model("runs/voc_os16", output_stride=8)
        >>> labels = predict(model, images, scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True)
    """
    if str(path).endswith(".keras"):
        if output_stride is not None or precision != "float32":
            raise ValueError(f"{path} is a .keras file: it loads as it was saved, without output_stride or "
                             f"precision; load the training workdir to change them.")
        model = keras.saving.load_model(path)
        if not isinstance(model, DeepLabV3):
            raise ValueError(f"{path} holds a {type(model).__name__}, not a deeplab_tf DeepLabV3: load it with "
                             f"keras.saving.load_model.")
        return folding.fold_batch_norm(model) if fold_batch_norm else model
    model, _, _ = workdir_lib.load_model(path, output_stride=output_stride, precision=precision,
                                         fold_batch_norm=fold_batch_norm, atrous_rates=atrous_rates,
                                         multi_grid=multi_grid)
    return model
