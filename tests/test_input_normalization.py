"""Input scaling per backbone, as the original release's core/feature_extractor.py: the plain ResNets
subtract the ImageNet mean, the `_beta` ones map 0..255 to [-1, 1]; crops are padded with the pixel the
scaling maps to 0."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.constants import MEAN_RGB, UNIT_RANGE_CENTRE
from deeplab_tf.modeling import BACKBONES, DeepLabV3
from deeplab_tf.modeling.resnet import pad_value
from deeplab_tf.training import trainer
from tests.training_utils import make_learnable_voc, small_config


def _normalized(model, images):
    """What the first convolution of `model`'s backbone sees for `images`."""
    layer = model.backbone.get_layer("normalize_images")
    return keras.Model(model.backbone.input, layer.output)(tf.constant(images, tf.float32)).numpy()


@pytest.fixture(scope="module", params=BACKBONES)
def model(request):
    return DeepLabV3(num_classes=3, backbone=request.param, output_stride=32)


def test_pad_value_is_the_releases_mean_pixel():
    assert pad_value("resnet_v1_50") == pad_value("resnet_v1_101") == MEAN_RGB
    assert pad_value("resnet_v1_50_beta") == pad_value("resnet_v1_101_beta") == (127.5, 127.5, 127.5)
    with pytest.raises(ValueError, match="resnet_v1_152"):
        pad_value("resnet_v1_152")


def test_the_pad_value_becomes_exactly_zero(model):
    padding = np.broadcast_to(np.float32(pad_value(model.backbone_name)), [1, 3, 5, 3])
    np.testing.assert_array_equal(_normalized(model, padding), 0.0)


def test_each_family_gets_its_checkpoints_input_range(model):
    pixels = np.arange(256, dtype=np.float32)
    images = np.stack([pixels, pixels[::-1], pixels], axis=-1)[None, None]  # [1, 1, 256, 3]
    got = _normalized(model, images)
    if model.backbone_name.endswith("_beta"):
        want = images / 127.5 - 1.0
        assert got.min() == -1.0 and got.max() == 1.0
    else:
        want = images - np.float32(MEAN_RGB)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_the_trainer_pads_training_crops_with_the_backbones_value(tmp_path, monkeypatch):
    """deeplab-train hands the pipeline the pad value of config.model.backbone."""
    config = small_config(make_learnable_voc(str(tmp_path / "voc"), num_images=2), steps=1)
    config.model.backbone = "resnet_v1_50_beta"
    seen = []

    class Stop(Exception):
        pass

    def spy(*args, **kwargs):
        seen.append(kwargs["pad_value"])
        raise Stop

    monkeypatch.setattr(trainer.data, "train_dataset", spy)
    with pytest.raises(Stop):
        trainer.train(config, str(tmp_path / "run"))
    assert seen == [UNIT_RANGE_CENTRE]
