"""experiments/configs: every paper setting loads as deeplab-train loads it, passes check_config and
describes a model that builds; experiments/README.md lists exactly these settings, with commands
that parse and chain (a later stage starts from a workdir an earlier command writes)."""

import glob
import importlib
import math
import os
import re
import shlex

import keras
import pytest
import tensorflow as tf
from absl import flags
from ml_collections import config_flags

from deeplab_tf.modeling.aspp import default_atrous_rates
from deeplab_tf.modeling.resnet import parse_backbone, unit_specs
from deeplab_tf.training.config import VOC_HARD_CLASSES, check_config
from deeplab_tf.training.trainer import build_model, num_classes_of
from experiments.configs import base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "experiments", "README.md")
DUMMY_PATTERN = "/nonexistent/dummy-*"
# Replicas check_config sees under the strategies the configs use: a parameter-server worker is one
# replica that runs whole steps of the global batch (the paper's asynchronous replicas).
REPLICAS = {"default": 1, "parameter_server": 1}
SPEC = re.compile(r"experiments/configs/(\w+)\.py:(\w+)")


def _modules():
    names = (os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "experiments", "configs", "*.py")))
    return {name: importlib.import_module(f"experiments.configs.{name}")
            for name in sorted(names) if name not in ("__init__", "base")}


MODULES = _modules()
SETTINGS = [(name, setting) for name, module in MODULES.items() for setting in module.SETTINGS]


def _spec(name, setting):
    return f"experiments/configs/{name}.py:{setting}"


@pytest.fixture(autouse=True)
def _from_repo_root(monkeypatch):
    """deeplab-train reads --config relative to the current directory: the README says the root."""
    monkeypatch.chdir(REPO)


def parse_train_flags(argv):
    """(config, workdir) as deeplab-train gets them from `argv`: ml_collections' DEFINE_config_file."""
    argv = ["deeplab-train", *argv]
    flag_values = flags.FlagValues()
    # deeplab-train's overrides come from sys.argv; here from `argv`.
    config_flags.DEFINE_config_file("config", None, "Experiment config file.", flag_values=flag_values,
                                    sys_argv=argv)
    flags.DEFINE_string("workdir", None, "Workdir.", flag_values=flag_values)
    flag_values(argv)
    return flag_values.config, flag_values.workdir


@pytest.mark.parametrize("name,setting", SETTINGS, ids=[f"{n}.py:{s}" for n, s in SETTINGS])
def test_setting_loads_like_deeplab_train_and_passes_check_config(name, setting):
    config, _ = parse_train_flags([f"--config={_spec(name, setting)}",
                                   f"--config.dataset.train_pattern={DUMMY_PATTERN}"])
    assert config.dataset.train_pattern == DUMMY_PATTERN
    assert config.train.strategy in REPLICAS
    check_config(config, num_replicas=REPLICAS[config.train.strategy])

    # The layer plan the model is built from: which unit gets which stride and rate. It raises for an
    # output stride the cascade cannot reach or a multi-grid on a strided unit.
    model = config.model
    specs = unit_specs(parse_backbone(model.backbone)[0], output_stride=model.output_stride,
                       multi_grid=tuple(model.multi_grid) or None, num_cascaded_blocks=model.num_cascaded_blocks)
    assert 4 * math.prod(spec.stride for spec in specs) == model.output_stride
    assert specs[-1].block == f"block{4 + model.num_cascaded_blocks}"
    if model.head == "aspp" and not model.atrous_rates:
        default_atrous_rates(model.output_stride)
    assert num_classes_of(config) == {"cityscapes": 19, "ade20k": 150}.get(config.dataset.name, 21)


def test_a_setting_is_required_and_unknown_ones_are_named():
    with pytest.raises(flags.IllegalFlagValueError, match="needs a setting.*os8"):
        parse_train_flags(["--config=experiments/configs/table1_cascade_output_stride.py"])
    with pytest.raises(flags.IllegalFlagValueError, match="no setting .os4.*os8, os16"):
        parse_train_flags(["--config=experiments/configs/table1_cascade_output_stride.py:os4"])


def _layers(config):
    """Which kinds of layers the model has: its head, whether blocks are cascaded after block4, the
    ASPP branches. Depth, the number of cascaded blocks and of classes only repeat or resize those
    layers; output stride, multi-grid and ASPP rates only set their strides and rates, which the
    test above checks for every setting through the same `unit_specs`."""
    model = config.model
    aspp = (len(model.atrous_rates) or 3, model.image_pooling) if model.head == "aspp" else ()
    return model.head, model.num_cascaded_blocks > 0, aspp


def _one_setting_per_kind_of_model():
    """Building a ResNet-101 takes seconds on 2 cores: one setting per `_layers`, the shallowest
    backbone with the most cascaded blocks."""
    kinds = {}
    for name, setting in SETTINGS:
        config = MODULES[name].get_config(setting)
        size = (parse_backbone(config.model.backbone)[0], -config.model.num_cascaded_blocks)
        key = _layers(config)
        if key not in kinds or size < kinds[key][0]:
            kinds[key] = (size, (name, setting))
    return [setting for _, setting in kinds.values()]


BUILT = _one_setting_per_kind_of_model()


@pytest.fixture
def cheap_initializers(monkeypatch):
    """Zeros instead of drawing 58M-83M random numbers: half of a model's build time on 2 cores."""
    def zeros(self, shape, dtype=None):
        return keras.ops.zeros(shape, dtype)

    for initializer in (keras.initializers.VarianceScaling, keras.initializers.TruncatedNormal):
        monkeypatch.setattr(initializer, "__call__", zeros)
    yield
    keras.backend.clear_session()


@pytest.mark.parametrize("name,setting", BUILT, ids=[f"{n}.py:{s}" for n, s in BUILT])
def test_model_builds_and_runs(name, setting, cheap_initializers):
    config = MODULES[name].get_config(setting)
    model = build_model(config)
    assert (model.backbone_name, model.output_stride, model.head) == (
        config.model.backbone, config.model.output_stride, config.model.head)
    logits = model(tf.zeros([1, 33, 33, 3]), training=False)
    assert logits.shape == (1, 33, 33, num_classes_of(config))


def test_voc_recipe_is_section_4_1():
    stage1 = MODULES["voc_recipe"].get_config("stage1_trainaug_os16")
    assert (stage1.dataset.train_pattern, stage1.model.output_stride, stage1.train.fine_tune_batch_norm,
            stage1.train.base_learning_rate, stage1.train.steps, tuple(stage1.train.crop_size),
            stage1.train.batch_size, stage1.train.init_checkpoint) == (
        base.VOC_TRAINAUG, 16, True, 0.007, 30000, (513, 513), 16, "weights/resnet_v1_101.ckpt")
    stage2 = MODULES["voc_recipe"].get_config("stage2_trainval_os8")
    assert (stage2.dataset.train_pattern, stage2.model.output_stride, stage2.train.fine_tune_batch_norm,
            stage2.train.base_learning_rate, stage2.train.steps, stage2.train.init_checkpoint,
            tuple(stage2.train.init_exclude)) == (
        base.VOC_TRAINVAL, 8, False, 0.001, 30000, "runs/voc_recipe/stage1_trainaug_os16", ())
    bootstrap = MODULES["voc_recipe"].get_config("coco_stage2_trainval_os8_bootstrap")
    assert tuple(bootstrap.dataset.bootstrap_classes) == VOC_HARD_CLASSES and bootstrap.dataset.bootstrap_factor == 2


def _readme():
    with open(README, encoding="utf-8") as f:
        return f.read()


def _commands(program):
    """Every `program ...` command of the README (table cells and code blocks), split like a shell."""
    text = re.sub(r"\\\n\s*", " ", _readme())
    return [shlex.split(match) for match in re.findall(rf"{program}\s[^`\n]*", text)]


def test_readme_tables_list_every_setting_and_only_those():
    rows = set(re.findall(r"^\| `(\w+)\.py:(\w+)` \|", _readme(), flags=re.M))
    assert rows == set(SETTINGS)
    assert {match.groups() for match in SPEC.finditer(_readme())} == set(SETTINGS)


def test_readme_train_commands_parse_and_chain():
    workdirs, trained = set(), set()
    for argv in _commands("deeplab-train"):
        config, workdir = parse_train_flags(argv[1:])
        name, setting = SPEC.search(next(a for a in argv if a.startswith("--config="))).groups()
        # runs/<module>/<setting>[/...]: where later stages' default init_checkpoint looks.
        assert workdir == base.workdir(name, setting) or workdir.startswith(base.workdir(name, setting) + "/")
        workdirs.add(workdir)
        trained.add((name, setting))
        if config.train.init_checkpoint.startswith("runs/"):
            assert config.train.init_checkpoint == MODULES[name].get_config(setting).train.init_checkpoint
    assert trained == set(SETTINGS)
    for name, setting in SETTINGS:
        init = MODULES[name].get_config(setting).train.init_checkpoint
        assert not init.startswith("runs/") or init in workdirs, (name, setting, init)
    for program in ("deeplab-eval", "deeplab-vis"):
        for argv in _commands(program):
            if "<" in " ".join(argv):  # The README's template, runs/<module>/<setting>.
                continue
            checkpoint = next(a.split("=", 1)[1] for a in argv if a.startswith("--checkpoint="))
            assert checkpoint in workdirs, argv
