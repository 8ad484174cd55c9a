"""ImageNet initialisation from TF-slim ResNet v1 checkpoints, built here in TF-slim's own layout."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.modeling import DeepLabV3
from deeplab_tf.modeling.checkpoints import load_slim_backbone
from deeplab_tf.training.trainer import initialize_from


def _slim_resnet50_variables(scope, beta):
    """TF-slim's variable names and shapes for resnet_v1_50 (written out from its layout, not ours)."""
    variables = {}

    def conv(name, k, cin, cout):
        variables[f"{scope}/{name}/weights"] = (k, k, cin, cout)
        for bn in ("gamma", "beta", "moving_mean", "moving_variance"):
            variables[f"{scope}/{name}/BatchNorm/{bn}"] = (cout,)

    if beta:
        conv("conv1_1", 3, 3, 64)
        conv("conv1_2", 3, 64, 64)
        conv("conv1_3", 3, 64, 128)
        cin = 128
    else:
        conv("conv1", 7, 3, 64)
        cin = 64
    for block, (base, units) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for unit in range(1, units + 1):
            prefix = f"block{block}/unit_{unit}/bottleneck_v1"
            if unit == 1:
                conv(f"{prefix}/shortcut", 1, cin, 4 * base)
            conv(f"{prefix}/conv1", 1, cin, base)
            conv(f"{prefix}/conv2", 3, base, base)
            conv(f"{prefix}/conv3", 1, base, 4 * base)
            cin = 4 * base
    # ImageNet classifier and step counter, which a backbone load must skip.
    variables[f"{scope}/logits/weights"] = (1, 1, 2048, 1000)
    variables[f"{scope}/logits/biases"] = (1000,)
    return variables


def _write_slim_checkpoint(path, shapes, seed=0):
    rng = np.random.default_rng(seed)
    values = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
    with tf.Graph().as_default():
        variables = {name: tf.compat.v1.Variable(value, name=name) for name, value in values.items()}
        variables["global_step"] = tf.compat.v1.Variable(7, dtype=tf.int64, name="global_step")
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            # No `checkpoint` state file: the model zoo's tarballs ship none.
            saver.save(session, path, write_meta_graph=False, write_state=False)
    return values


@pytest.mark.parametrize("backbone,beta", [("resnet_v1_50", False), ("resnet_v1_50_beta", True)])
def test_loads_every_backbone_variable_from_a_slim_checkpoint(tmp_path, backbone, beta):
    values = _write_slim_checkpoint(str(tmp_path / f"{backbone}.ckpt"), _slim_resnet50_variables("resnet_v1_50", beta))
    model = DeepLabV3(num_classes=21, backbone=backbone, output_stride=16)
    report = load_slim_backbone(model.backbone, str(tmp_path / f"{backbone}.ckpt"))

    assert report.missing == []
    assert sorted(report.skipped) == ["resnet_v1_50/logits/biases", "resnet_v1_50/logits/weights"]
    assert len(report.loaded) == len(values) - 2 == len(model.backbone.weights)
    unit = model.backbone.get_layer("block3_unit_6")
    np.testing.assert_array_equal(
        unit.conv2.conv.kernel.numpy(), values["resnet_v1_50/block3/unit_6/bottleneck_v1/conv2/weights"])
    np.testing.assert_array_equal(
        unit.conv3.bn.moving_variance.numpy(),
        values["resnet_v1_50/block3/unit_6/bottleneck_v1/conv3/BatchNorm/moving_variance"])
    stem = model.backbone.get_layer("conv1_1" if beta else "conv1")
    np.testing.assert_array_equal(
        stem.bn.gamma.numpy(), values[f"resnet_v1_50/{'conv1_1' if beta else 'conv1'}/BatchNorm/gamma"])
    assert "Loaded" in report.summary()


def test_partial_checkpoint_reports_missing_and_directory_is_accepted(tmp_path):
    shapes = _slim_resnet50_variables("resnet_v1_50", beta=False)
    shapes = {k: v for k, v in shapes.items() if "block4" not in k}
    (tmp_path / "ckpt").mkdir()
    _write_slim_checkpoint(str(tmp_path / "ckpt" / "model.ckpt"), shapes)
    # A directory with a `checkpoint` index file, as tf.train.Saver leaves it.
    tf.compat.v1.train.update_checkpoint_state(str(tmp_path / "ckpt"), str(tmp_path / "ckpt" / "model.ckpt"))
    model = DeepLabV3(num_classes=21, backbone="resnet_v1_50")
    report = load_slim_backbone(model.backbone, str(tmp_path / "ckpt"))
    # block4: 3 units x 3 convs + unit_1's shortcut, each weights + 4 BN variables.
    assert len(report.missing) == (3 * 3 + 1) * 5
    assert all("/block4/" in name for name in report.missing)
    assert "not in the checkpoint" in report.summary()


def test_wrong_checkpoints_are_clear_errors(tmp_path):
    model = DeepLabV3(num_classes=21, backbone="resnet_v1_50")
    with pytest.raises(FileNotFoundError, match="No TF-slim checkpoint"):
        load_slim_backbone(model.backbone, str(tmp_path / "missing.ckpt"))
    _write_slim_checkpoint(str(tmp_path / "r50.ckpt"), _slim_resnet50_variables("resnet_v1_50", beta=False))
    r101 = DeepLabV3(num_classes=21, backbone="resnet_v1_101")
    with pytest.raises(ValueError, match="resnet_v1_101"):
        load_slim_backbone(r101.backbone, str(tmp_path / "r50.ckpt"))
    beta = DeepLabV3(num_classes=21, backbone="resnet_v1_50_beta")
    with pytest.raises(ValueError, match="shape"):
        load_slim_backbone(beta.backbone, str(tmp_path / "r50.ckpt"))


def test_init_checkpoint_folder_with_a_lone_slim_checkpoint(tmp_path):
    """config.train.init_checkpoint may name the folder a model-zoo tarball unpacks to (no `checkpoint` file)."""
    folder = tmp_path / "resnet_v1_50_2016_08_28"
    folder.mkdir()
    values = _write_slim_checkpoint(str(folder / "resnet_v1_50.ckpt"), _slim_resnet50_variables("resnet_v1_50", False))
    assert not (folder / "checkpoint").exists()
    model = DeepLabV3(num_classes=21, backbone="resnet_v1_50")
    summary = initialize_from(model, str(folder))
    assert summary.startswith(f"Loaded {len(model.backbone.weights)} variables from {folder / 'resnet_v1_50.ckpt'}.")
    np.testing.assert_array_equal(model.backbone.get_layer("conv1").conv.kernel.numpy(),
                                  values["resnet_v1_50/conv1/weights"])
