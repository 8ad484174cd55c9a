"""The original release's DeepLabv3 checkpoints (tensorflow/models `research/deeplab`, TF1), both ways.

The release's train.py saves a ResNet DeepLabv3 (no decoder) under these names:

    resnet_v1_{50,101}/...             the backbone as TF-slim names it (`_beta` variants under the plain scope)
    image_pooling/{weights,BatchNorm/*}
    aspp0/...  aspp1/... aspp<N>/...   the 1x1 branch and one 3x3 atrous branch per rate
    concat_projection/...              1x1 over the concatenation [image_pooling, aspp0, aspp1, ...]
    logits/semantic/{weights,biases}
    global_step, <variable>/Momentum   (TF1 MomentumOptimizer's accumulators)

Our ASPP concatenates the image-level branch last, so concat_projection's input channels are a permutation of
ours; everything else maps one to one. What the names and shapes do not record (the output stride, the ASPP
rates, multi-grid) must be given, as to the release's own eval.py.
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from deeplab_tf.modeling.aspp import default_atrous_rates
from deeplab_tf.modeling.checkpoints import LoadReport, checkpoint_prefix, conv_bn_names, slim_names

LOGITS = "logits/semantic"
MOMENTUM_SLOT = "Momentum"
GLOBAL_STEP = "global_step"
# Backbone depth from block3's unit count (slim's resnet_v1_50: 6, resnet_v1_101: 23).
_DEPTH_BY_BLOCK3_UNITS = {6: "50", 23: "101"}


class ReleaseCheckpointError(ValueError):
    """A release checkpoint this package cannot build (another variant, a decoder, a missing variable)."""


@dataclasses.dataclass(frozen=True)
class ReleaseCheckpoint:
    """What a release checkpoint's names and shapes say about the model that wrote it."""

    prefix: str
    backbone: str             # resnet_v1_50, resnet_v1_101 or their _beta variants.
    num_classes: int
    head: str                 # "aspp", or "cascade" (logits right on block4: the release without ASPP).
    image_pooling: bool
    num_atrous_rates: int     # ASPP's 3x3 branches (aspp1..aspp<N>).
    aspp_filters: int
    global_step: int
    has_momentum: bool


def _variable_names(prefix):
    try:
        return dict(tf.train.list_variables(prefix))
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as error:
        raise FileNotFoundError(f"No readable checkpoint at {prefix!r} ({error}).") from None


def is_release_checkpoint(path):
    """Whether `path` (a prefix or a folder holding one) is a DeepLab checkpoint of the original release."""
    try:
        names = _variable_names(checkpoint_prefix(path))
    except (FileNotFoundError, tf.errors.OpError):
        return False
    return any(name == f"{LOGITS}/weights" or name.startswith(("aspp0/", "concat_projection/", "decoder/"))
               for name in names)


def inspect_release_checkpoint(path):
    """Reads a release checkpoint's model from its variable names and shapes.

    Raises:
        ReleaseCheckpointError: a variant this package does not build (Xception, MobileNet, a decoder, ASPP
            with separable convolutions), naming the variables that show it and what to do.
    """
    prefix = checkpoint_prefix(path)
    shapes = _variable_names(prefix)

    def refuse(what, fix):
        raise ReleaseCheckpointError(f"{prefix} is a release checkpoint of {what}; this package builds the "
                                     f"paper's DeepLabv3 on resnet_v1_50/101 (or _beta): {fix}.")

    if any(name.startswith("decoder/") for name in shapes):
        refuse("DeepLabv3+ (it has decoder/ variables)", "retrain it without --decoder_output_stride")
    if any(re.match(r"aspp\d+_(depthwise|pointwise)/", name) for name in shapes):
        refuse("an ASPP with separable convolutions (the release's --aspp_with_separable_conv, on by default)",
               "retrain it with --noaspp_with_separable_conv, the paper's ASPP")
    scopes = {name.split("/")[0] for name in shapes if "/" in name}
    resnets = sorted(scope for scope in scopes if scope in ("resnet_v1_50", "resnet_v1_101"))
    if len(resnets) != 1:
        variant = next((s for s in sorted(scopes) if s.startswith(("xception", "MobilenetV", "mobilenet", "resnet"))),
                       "an unknown backbone")
        refuse(f"{variant} (its top scopes: {', '.join(sorted(scopes)[:8])})", "only ResNet checkpoints convert")
    scope = resnets[0]
    units = len({m.group(1) for name in shapes if (m := re.match(rf"{scope}/block3/unit_(\d+)/", name))})
    if _DEPTH_BY_BLOCK3_UNITS.get(units) != scope.rsplit("_", 1)[1]:
        refuse(f"a {scope} with {units} units in block3", "only the standard depths convert")
    backbone = scope + ("_beta" if f"{scope}/conv1_1/weights" in shapes else "")
    if f"{LOGITS}/weights" not in shapes:
        raise ReleaseCheckpointError(f"{prefix} has no {LOGITS}/weights: it is not a checkpoint of the release's "
                                     f"train.py (an ImageNet backbone loads as config.train.init_checkpoint).")
    logits_shape = shapes[f"{LOGITS}/weights"]
    if tuple(logits_shape[:2]) != (1, 1) or any(name.startswith(f"{LOGITS}_") for name in shapes):
        refuse("logits with several branches or a kernel larger than 1x1 (DeepLabv2's head)", "it has no ASPP")
    head = "aspp" if "aspp0/weights" in shapes else "cascade"
    if head == "aspp" and "concat_projection/weights" not in shapes:
        refuse("an ASPP without concat_projection", "retrain with --aspp_with_concat_projection")
    num_atrous = len([name for name in shapes if re.fullmatch(r"aspp([1-9]\d*)/weights", name)])
    global_step = tf.train.load_checkpoint(prefix).get_tensor(GLOBAL_STEP) if GLOBAL_STEP in shapes else 0
    return ReleaseCheckpoint(
        prefix=prefix, backbone=backbone, num_classes=int(logits_shape[3]), head=head,
        image_pooling="image_pooling/weights" in shapes, num_atrous_rates=num_atrous,
        aspp_filters=int(logits_shape[2]) if head == "aspp" else 256, global_step=int(global_step),
        has_momentum=any(name.endswith("/" + MOMENTUM_SLOT) for name in shapes))


def release_model_config(path, *, output_stride=16, atrous_rates=None, multi_grid=None):
    """The `DeepLabV3` config of a release checkpoint, at `output_stride`.

    Args:
        path: the release checkpoint's prefix, or its train_logdir.
        output_stride: the output stride to build at (the release's --output_stride).
        atrous_rates: ASPP rates at that output stride (the release's --atrous_rates); None: (6, 12, 18) at 16,
            scaled, when the checkpoint has three atrous branches.
        multi_grid: block4's unit rates (the release's --multi_grid), e.g. (1, 2, 4); None: (1, 1, 1).

    Raises:
        ReleaseCheckpointError: the rates or multi-grid do not fit the checkpoint (naming the flag).
    """
    info = path if isinstance(path, ReleaseCheckpoint) else inspect_release_checkpoint(path)
    if multi_grid is not None and len(multi_grid) != 3:
        raise ReleaseCheckpointError(f"--multi_grid={','.join(map(str, multi_grid))}: block4 has 3 units, give "
                                     f"3 rates (e.g. 1,2,4), as passed to the release's train.py.")
    if info.head == "cascade":
        if atrous_rates:
            raise ReleaseCheckpointError(f"--atrous_rates: {info.prefix} has no ASPP (logits on block4); drop it.")
    elif atrous_rates is not None and len(atrous_rates) != info.num_atrous_rates:
        raise ReleaseCheckpointError(
            f"--atrous_rates={','.join(map(str, atrous_rates))} gives {len(atrous_rates)} rates but {info.prefix} "
            f"has {info.num_atrous_rates} atrous ASPP branches (aspp1..aspp{info.num_atrous_rates}): give "
            f"{info.num_atrous_rates}, as passed to the release's train.py.")
    elif atrous_rates is None and info.num_atrous_rates != 3:
        raise ReleaseCheckpointError(
            f"{info.prefix} has {info.num_atrous_rates} atrous ASPP branches: give their rates at output stride "
            f"{output_stride} with --atrous_rates, as passed to the release's train.py.")
    elif atrous_rates is None:
        default_atrous_rates(output_stride)  # Raises when (6, 12, 18) does not scale to this stride.
    return dict(name="deeplab_v3", num_classes=info.num_classes, backbone=info.backbone, output_stride=output_stride,
                multi_grid=tuple(multi_grid) if multi_grid else None, num_cascaded_blocks=0, head=info.head,
                atrous_rates=tuple(atrous_rates) if atrous_rates else None, image_pooling=info.image_pooling,
                aspp_filters=info.aspp_filters, dropout_rate=0.1, bn_momentum=0.9997, bn_epsilon=1e-5,
                sync_bn=False, weight_decay=0.0, fine_tune_batch_norm=True, fold_batch_norm=False)


def _identity(value):
    return value


def release_mapping(model):
    """[(release name, Keras variable, to_release, from_release)] for every variable of a `DeepLabV3`.

    `to_release` / `from_release` turn a value (a weight, a gradient, a momentum slot) of the variable into the
    release's layout and back: the identity except for concat_projection's kernel, whose input channels the
    release orders [image_pooling, aspp0, aspp1, ...] and ours [aspp0, aspp1, ..., image_pooling].
    """
    if model.fold_batch_norm or model.num_cascaded_blocks or model.head not in ("aspp", "cascade"):
        raise ValueError("Only an unfolded DeepLabV3 without cascaded blocks has a release layout.")
    scope = model.backbone_name.replace("_beta", "")
    mapping = [(f"{scope}/{name}", variable, _identity, _identity) for name, variable in slim_names(model.backbone)]
    if model.head == "aspp":
        aspp = model.get_layer("aspp")
        head = [("image_pooling", aspp.pooling_conv)] if aspp.pooling_conv is not None else []
        head += [(branch.name, branch) for branch in aspp.branches] + [("concat_projection", aspp.projection)]
        for name, layer in head:
            for release_name, variable in conv_bn_names(name, layer):
                mapping.append((release_name, variable, _identity, _identity))
        if aspp.pooling_conv is not None:
            # The image-level branch's channels are the last `filters` of ours and the first of the release's.
            filters = aspp.filters
            kernel = aspp.projection.conv.kernel
            mapping = [(n, v, lambda x: np.roll(x, filters, axis=2), lambda x: np.roll(x, -filters, axis=2))
                       if v is kernel else (n, v, t, f) for n, v, t, f in mapping]
    logits = model.get_layer("logits")
    mapping += [(f"{LOGITS}/weights", logits.kernel, _identity, _identity),
                (f"{LOGITS}/biases", logits.bias, _identity, _identity)]
    return mapping


def _slots(optimizer):
    """{id(model variable): momentum slot} of a built Keras SGD-family optimizer (inside a LossScaleOptimizer too)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return {id(variable): optimizer.momentums[optimizer._get_variable_index(variable)]
            for variable in optimizer._trainable_variables}


def _excluded(patterns, *names):
    return any(re.search(pattern, name) for pattern in patterns for name in names)


def load_release_checkpoint(model, path, *, exclude=(), optimizer=None, global_step=None):
    """Assigns a release checkpoint to `model` (a built `DeepLabV3` of the same structure).

    Args:
        model: the model to fill; build it from `release_model_config` or check it matches.
        path: the checkpoint prefix or its train_logdir.
        exclude: regexes; a variable whose release name or Keras path matches one keeps its value
            (e.g. ("logits",) to fine-tune with another class count).
        optimizer: a built `ReleaseMomentum` (or any Keras SGD with momentum slots) over
            `model.trainable_variables`: its slots get the release's `<variable>/Momentum` accumulators.
        global_step: a tf.Variable to assign the release's global_step to.

    Returns:
        A `LoadReport` (`skipped`: the checkpoint's variables left unused, e.g. excluded logits).

    Raises:
        ReleaseCheckpointError: a variable missing from the checkpoint, or of another shape (naming it).
    """
    prefix = checkpoint_prefix(path)
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    slots = _slots(optimizer) if optimizer is not None else {}
    report = LoadReport(checkpoint=prefix)
    for name, variable, _, from_release in release_mapping(model):
        if _excluded(exclude, name, variable.path):
            report.excluded.append(name)
            continue
        wanted = [name] + ([f"{name}/{MOMENTUM_SLOT}"] if id(variable) in slots else [])
        for key, target in zip(wanted, [variable, slots.get(id(variable))]):
            if key not in shapes:
                raise ReleaseCheckpointError(
                    f"{prefix} has no variable {key} (the model's {variable.path}): is it a checkpoint of "
                    f"{model.backbone_name} with {model.num_classes} classes" +
                    (", written by train.py (with its optimizer state)?" if key != name else "?"))
            if tuple(shapes[key]) != tuple(target.shape):
                raise ReleaseCheckpointError(
                    f"{prefix}: {key} has shape {tuple(shapes[key])} but the model's {variable.path} is "
                    f"{tuple(target.shape)}" + (": exclude the logits for another class count "
                                                "(config.train.init_exclude=logits)" if name.startswith("logits")
                                                else ""))
            target.assign(from_release(reader.get_tensor(key)).astype(target.dtype))
            report.loaded.append(key)
    if global_step is not None:
        global_step.assign(int(reader.get_tensor(GLOBAL_STEP)) if GLOBAL_STEP in shapes else 0)
        report.loaded.append(GLOBAL_STEP)
    used = set(report.loaded) | {f"{name}/{MOMENTUM_SLOT}" for name in report.excluded} | set(report.excluded)
    state = {name for name in shapes if name == GLOBAL_STEP or name.endswith("/" + MOMENTUM_SLOT)} - used
    report.skipped = sorted(set(shapes) - used - state)
    if state and optimizer is None:
        report.note = (f"Its training state (global_step and {len(state) - (GLOBAL_STEP in state)} momentum "
                       f"accumulators) is not taken: config.train.init_continue=True continues that training.")
    return report


def release_tensors(model, *, optimizer=None, global_step=0):
    """{release name: numpy value} of `model` (and the optimizer's momentum slots) in the release's layout."""
    slots = _slots(optimizer) if optimizer is not None else {}
    tensors = {GLOBAL_STEP: np.asarray(int(global_step), np.int64)}
    for name, variable, to_release, _ in release_mapping(model):
        tensors[name] = to_release(variable.numpy())
        if id(variable) in slots:
            tensors[f"{name}/{MOMENTUM_SLOT}"] = to_release(slots[id(variable)].numpy())
    return tensors


def save_release_checkpoint(model, prefix, *, optimizer=None, global_step=0):
    """Writes `model` as the release's train.py would have: its names, its layout, a TF1-readable V2
    checkpoint at `prefix` (`<prefix>.index`, `.data-*`), and a `checkpoint` file beside it naming it, so the
    release's eval.py / vis.py (`--checkpoint_dir`) and export_model.py (`--checkpoint_path`) find it.

    Returns:
        The prefix written.
    """
    tensors = release_tensors(model, optimizer=optimizer, global_step=global_step)
    names = sorted(tensors)
    directory = os.path.dirname(prefix) or "."
    tf.io.gfile.makedirs(directory)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[name]) for name in names])
    # TF1's CheckpointState text proto, the path relative to the folder as its Saver writes it (so the folder can
    # move); written directly because TensorFlow 2 keeps the writer only as a deprecated compat.v1 function.
    name = os.path.basename(prefix)
    with tf.io.gfile.GFile(os.path.join(directory, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    return prefix
