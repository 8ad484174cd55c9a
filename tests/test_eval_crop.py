"""The original release's evaluation protocol (--eval_crop_size): every image padded bottom/right to a
fixed canvas with the backbone's pad value, the prediction cropped back, only the image's pixels scored;
in deeplab-eval, deeplab-vis and the post-training evaluation, with results kept apart from the
native-size ones."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import app
from PIL import Image

from deeplab_tf import workdir as workdir_lib
from deeplab_tf.cli import eval as eval_cli, vis as vis_cli
from deeplab_tf.constants import MEAN_RGB, UNIT_RANGE_CENTRE
from deeplab_tf.data import eval_dataset
from deeplab_tf.evaluation import evaluator
from deeplab_tf.training import trainer
from deeplab_tf.training.config import default_config
from eval_utils import make_eval_data, run_main
from experiments.configs import cityscapes, table5_aspp, voc_recipe

CANVAS = (65, 65)  # larger than every image of make_voc_val (at most 45 x 41)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_eval_data(tmp_path_factory.mktemp("eval_crop"))


def _canvas(image, value):
    """[1, H, W, 3] image padded by hand to CANVAS with the RGB `value`."""
    padded = np.empty((1, *CANVAS, 3), np.float32)
    padded[...] = np.float32(value)
    padded[:, :image.shape[1], :image.shape[2]] = image
    return padded


def _confusion(labels, predictions, num_classes=21, ignore_label=255):
    valid = labels != ignore_label
    pairs = labels[valid].astype(np.int64) * num_classes + predictions[valid]
    return np.bincount(pairs, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def test_scores_the_padded_canvas_by_hand_cropped_back_without_the_padding(data):
    model = data["model"]
    metrics = evaluator.evaluate(model, data["pattern"], num_classes=21, eval_crop_size=CANVAS)
    native = evaluator.evaluate(model, data["pattern"], num_classes=21)
    expected = np.zeros([21, 21], np.int64)
    for example in eval_dataset(data["pattern"]):
        image, labels = example["image"].numpy(), example["label"].numpy()
        logits = model(_canvas(image, MEAN_RGB), training=False).numpy()  # resnet_v1_50: the ImageNet mean
        predictions = np.argmax(logits, -1)[:, :labels.shape[1], :labels.shape[2]]
        expected += _confusion(labels, predictions)
    np.testing.assert_array_equal(metrics["confusion_matrix"], expected)
    # Only the images' own pixels are counted, as at native size; the predictions differ.
    assert metrics["num_pixels"] == native["num_pixels"] == expected.sum()
    assert metrics["confusion_matrix"] != native["confusion_matrix"]


def test_a_beta_backbone_is_padded_with_127_5(data):
    class BetaModel:
        backbone_name = "resnet_v1_50_beta"
        seen = []

        def __call__(self, images, training=False):
            self.seen.append(images.numpy())
            return tf.zeros([*images.shape[:3], 21])

    image = np.full((1, 33, 41, 3), 7.0, np.float32)
    tf.config.run_functions_eagerly(True)
    try:
        evaluator.make_predict_fn(BetaModel(), eval_crop_size=CANVAS)(image)
    finally:
        tf.config.run_functions_eagerly(False)
    np.testing.assert_array_equal(BetaModel.seen[0], _canvas(image, UNIT_RANGE_CENTRE))


def test_cli_records_the_protocol_and_writes_apart_from_native_results(data, capsys):
    run_main(eval_cli, checkpoint=data["workdir"], eval_pattern=data["pattern"], eval_crop_size="65")
    out = capsys.readouterr().out
    assert "images padded to 65x65" in out
    with open(os.path.join(data["workdir"], "eval_os16_crop65x65", "metrics-5.json")) as f:
        cropped = json.load(f)
    run_main(eval_cli, checkpoint=data["workdir"], eval_pattern=data["pattern"])
    assert "images at their own size" in capsys.readouterr().out
    with open(os.path.join(data["workdir"], "eval_os16", "metrics-5.json")) as f:
        native = json.load(f)
    assert (cropped["eval_crop_size"], native["eval_crop_size"]) == ([65, 65], None)
    assert cropped["num_pixels"] == native["num_pixels"]


def test_vis_predicts_what_eval_scores(data, tmp_path):
    output_dir = str(tmp_path / "vis")
    run_main(vis_cli, checkpoint=data["workdir"], vis_pattern=data["pattern"], output_dir=output_dir,
             eval_crop_size="65,65")
    folded, _, _ = workdir_lib.load_model(data["workdir"], fold_batch_norm=True)  # what both CLIs run
    predict = evaluator.make_predict_fn(folded, eval_crop_size=CANVAS)
    for example in eval_dataset(data["pattern"]):
        name = example["filename"][0].numpy().decode()
        written = np.asarray(Image.open(os.path.join(output_dir, "index", name + ".png")))
        np.testing.assert_array_equal(written, predict(example["image"])[0].numpy())


def test_an_image_larger_than_the_crop_names_the_image_and_the_flag(data):
    with pytest.raises(SystemExit, match=r"deeplab-eval: image '2007_\d+.*' of .*larger than the eval crop "
                                         r"size 40x40 \(--eval_crop_size"):
        run_main(eval_cli, checkpoint=data["workdir"], eval_pattern=data["pattern"], eval_crop_size="40")


@pytest.mark.parametrize("value", ["0", "65,x", "1,2,3"])
def test_bad_eval_crop_sizes_are_usage_errors(data, value):
    with pytest.raises(app.UsageError, match="--eval_crop_size"):
        run_main(eval_cli, checkpoint=data["workdir"], eval_pattern=data["pattern"], eval_crop_size=value)


def test_post_training_evaluation_uses_the_configs_eval_crop(data):
    config = default_config()
    config.dataset.eval_pattern = data["pattern"]
    config.dataset.eval_crop_size = CANVAS
    line = trainer._evaluate_after_training(config, os.path.join(data["workdir"], "checkpoints", "ckpt-5"))
    assert line.endswith("eval_os16_crop65x65/metrics-5.json (images padded to 65x65)"), line
    with open(os.path.join(data["workdir"], "eval_os16_crop65x65", "metrics-5.json")) as f:
        assert json.load(f)["eval_crop_size"] == [65, 65]


def test_paper_configs_evaluate_on_the_releases_canvas():
    assert tuple(table5_aspp.get_config("mg1_2_4_image_pooling").dataset.eval_crop_size) == (513, 513)
    assert tuple(voc_recipe.get_config("stage2_trainval_os8").dataset.eval_crop_size) == (513, 513)
    assert tuple(cityscapes.get_config("train_fine").dataset.eval_crop_size) == (1025, 2049)
    assert tuple(voc_recipe.get_config("coco_pretrain").dataset.eval_crop_size) == ()  # COCO reaches 640 px
    assert tuple(default_config().dataset.eval_crop_size) == ()  # native size unless asked
