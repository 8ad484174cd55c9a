"""ImageNet initialisation: TF-slim `resnet_v1_{50,101}` and the release's `*_beta` checkpoints.

TF-slim names a variable `<scope>/<block>/unit_<i>/bottleneck_v1/<conv>/weights` and its BN
`.../<conv>/BatchNorm/{gamma,beta,moving_mean,moving_variance}`; the stem is `<scope>/conv1` (or
`conv1_1..3` for the beta variants). Our layers carry the same names, so the mapping is mechanical.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from deeplab_tf.modeling.layers import ConvBN
from deeplab_tf.modeling.resnet import BottleneckUnit

_BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclasses.dataclass
class LoadReport:
    """What a checkpoint load did: checkpoint names loaded, model variables left as they were, and
    checkpoint variables that were not used (e.g. the ImageNet `logits`)."""

    checkpoint: str
    loaded: list = dataclasses.field(default_factory=list)
    missing: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    excluded: list = dataclasses.field(default_factory=list)
    note: str = ""

    def summary(self):
        lines = [f"Loaded {len(self.loaded)} variables from {self.checkpoint}."]
        if self.missing:
            lines.append(f"{len(self.missing)} model variables not in the checkpoint (kept their initial "
                         f"values): {', '.join(self.missing[:8])}{' ...' if len(self.missing) > 8 else ''}")
        if self.excluded:
            lines.append(f"Excluded by config.train.init_exclude: {', '.join(self.excluded)}")
        if self.skipped:
            lines.append(f"{len(self.skipped)} checkpoint variables unused: "
                         f"{', '.join(self.skipped[:8])}{' ...' if len(self.skipped) > 8 else ''}")
        return "\n".join(lines + ([self.note] if self.note else []))


def conv_bn_names(scope, layer):
    """Yields (slim name, Keras variable) for a `ConvBN` that slim names `scope`: its weights and BatchNorm."""
    yield f"{scope}/weights", layer.conv.kernel
    for name in _BN_VARIABLES:
        yield f"{scope}/BatchNorm/{name}", getattr(layer.bn, name)


def slim_names(backbone):
    """Yields (slim name relative to the scope, Keras variable) for every backbone variable."""
    for layer in backbone.layers:
        if isinstance(layer, ConvBN):  # The stem: conv1 or conv1_1..conv1_3.
            yield from conv_bn_names(layer.name, layer)
        elif isinstance(layer, BottleneckUnit):
            block, _, index = layer.name.split("_")
            scope = f"{block}/unit_{index}/bottleneck_v1"
            for conv in ("conv1", "conv2", "conv3", "shortcut"):
                if getattr(layer, conv) is not None:
                    yield from conv_bn_names(f"{scope}/{conv}", getattr(layer, conv))


def _find_scope(names, backbone_name):
    """The checkpoint's top scope: the backbone name without `_beta` (as the release saved it)."""
    candidates = {backbone_name.replace("_beta", ""), backbone_name}
    scopes = {n.split("/")[0] for n in names if "/" in n}
    found = sorted(candidates & scopes)
    if found:
        return found[0]
    raise ValueError(
        f"The checkpoint has no variables under {' or '.join(sorted(candidates))}/ (its top scopes: "
        f"{', '.join(sorted(scopes)[:10])}); is it a TF-slim {backbone_name} checkpoint?")


def checkpoint_prefix(checkpoint_path):
    """A checkpoint prefix from a prefix or a directory (with a `checkpoint` file, or one lone checkpoint).

    Raises:
        FileNotFoundError: the directory holds no checkpoint, or several and no `checkpoint` file.
    """
    if not os.path.isdir(checkpoint_path):
        return checkpoint_path
    latest = tf.train.latest_checkpoint(checkpoint_path)
    if latest:
        return latest
    # The TF-slim ImageNet tarballs unpack to a lone `resnet_v1_101.ckpt` (V1) or `.index`/`.data`.
    found = sorted({os.path.join(checkpoint_path, name.rsplit(".index", 1)[0]) for name in os.listdir(checkpoint_path)
                    if name.endswith(".index") or name.endswith(".ckpt")})
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"{checkpoint_path!r} holds {len(found) or 'no'} checkpoints; give the prefix of the one to load.")


def load_slim_backbone(backbone, checkpoint_path, *, scope=None):
    """Assigns a TF-slim ResNet v1 checkpoint to `backbone` (the model of `resnet_v1_backbone`).

    Args:
        backbone: the backbone Keras model (e.g. `DeepLabV3(...).backbone`), already built.
        checkpoint_path: a checkpoint prefix (`.../resnet_v1_101.ckpt`) or a directory holding one.
        scope: the checkpoint's top variable scope; by default derived from the backbone's name.

    Returns:
        A `LoadReport`.

    Raises:
        FileNotFoundError: no checkpoint at the path.
        ValueError: the checkpoint is not one of this backbone, or a variable's shape differs.
    """
    path = checkpoint_prefix(checkpoint_path)
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.NotFoundError, ValueError) as error:
        raise FileNotFoundError(
            f"No TF-slim checkpoint at {checkpoint_path!r}: give the prefix of the .index/.data files "
            f"(e.g. /path/resnet_v1_101.ckpt) or their directory.") from error
    shapes = reader.get_variable_to_shape_map()
    scope = scope or _find_scope(shapes, backbone.name)
    report = LoadReport(checkpoint=path)
    used = set()
    for relative, variable in slim_names(backbone):
        name = f"{scope}/{relative}"
        if name not in shapes:
            report.missing.append(name)
            continue
        if tuple(shapes[name]) != tuple(variable.shape):
            raise ValueError(f"Checkpoint variable {name} has shape {shapes[name]} but the model expects "
                             f"{tuple(variable.shape)}: is the checkpoint for {backbone.name}?")
        variable.assign(np.asarray(reader.get_tensor(name), dtype=variable.dtype))
        report.loaded.append(name)
        used.add(name)
    report.skipped = sorted(n for n in shapes if n not in used and n != "global_step")
    if not report.loaded:
        raise ValueError(f"No variable of {backbone.name} was found in {report.checkpoint}.")
    return report

