"""Dataset registry: name -> number of classes, ignore label, split sizes, class names, colormap."""

import dataclasses
import json

from deeplab_tf import visualization
from deeplab_tf.constants import IGNORE_LABEL
from deeplab_tf.data import cityscapes_labels

NAMED_COLORMAPS = ("pascal", "cityscapes", "ade20k")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer, evaluator and visualiser need to know about a dataset.

    `splits` maps split name -> number of examples (None when it depends on the user's copy);
    `colormap` is a palette name from NAMED_COLORMAPS or one RGB triple per class.
    """

    name: str
    num_classes: int
    ignore_label: int = IGNORE_LABEL
    splits: dict = dataclasses.field(default_factory=dict)
    class_names: tuple = ()
    colormap: object = "pascal"

    def __post_init__(self):
        if not isinstance(self.num_classes, int) or not 1 <= self.num_classes <= 256:
            raise ValueError(f"dataset {self.name!r}: num_classes must be an int in [1, 256], "
                             f"got {self.num_classes!r}")
        if 0 <= self.ignore_label < self.num_classes:
            raise ValueError(f"dataset {self.name!r}: ignore_label {self.ignore_label} is a class "
                             f"id (num_classes={self.num_classes}); use 255")
        if not self.class_names:
            object.__setattr__(self, "class_names",
                               tuple(f"class_{i}" for i in range(self.num_classes)))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"dataset {self.name!r}: {len(self.class_names)} class names for "
                             f"{self.num_classes} classes")
        if isinstance(self.colormap, str):
            if self.colormap not in NAMED_COLORMAPS:
                raise ValueError(f"dataset {self.name!r}: colormap {self.colormap!r} is not one of "
                                 f"{NAMED_COLORMAPS} nor a list of RGB triples")
        else:
            colormap = tuple(tuple(int(c) for c in rgb) for rgb in self.colormap)
            if len(colormap) != self.num_classes or any(
                    len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb) for rgb in colormap):
                raise ValueError(f"dataset {self.name!r}: colormap needs {self.num_classes} RGB "
                                 "triples with values in [0, 255]")
            object.__setattr__(self, "colormap", colormap)
        object.__setattr__(self, "splits", dict(self.splits))


PASCAL_VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# ADE20K SceneParsing's 150 classes in the benchmark's order (objectInfo150, first name of each), the
# benchmark's ids 1..150 stored as 0..149 (deeplab_tf/data/sources/ade20k.py).
ADE20K_CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)

# Section 4.3's bootstrapping classes ("bicycle, chair, table, pottedplant, and sofa").
PASCAL_VOC_HARD_CLASSES = tuple(
    PASCAL_VOC_CLASS_NAMES.index(name)
    for name in ("bicycle", "chair", "diningtable", "pottedplant", "sofa"))

_REGISTRY = {}


def register_dataset(info, *, overwrite=False):
    """Adds `info` under `info.name` (a user dataset, or a replacement with overwrite=True)."""
    if info.name in _REGISTRY and not overwrite:
        raise ValueError(f"dataset {info.name!r} is already registered; pass overwrite=True")
    _REGISTRY[info.name] = info
    return info


def get_dataset_info(name):
    """The registered DatasetInfo called `name`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(_REGISTRY)}. Register yours "
                       "with register_dataset(dataset_info_from_spec(...)).") from None


def dataset_info_for(name, num_classes=0):
    """The registered dataset `name` with `num_classes` classes (a config's dataset.num_classes; 0: the
    registry's). Another count than the registry's keeps the ignore label and drops the names and colours
    (class_<i>, the PASCAL colormap), as a run trained on its own class count has them."""
    info = get_dataset_info(name)
    if num_classes and num_classes != info.num_classes:
        info = dataclasses.replace(info, num_classes=num_classes, class_names=(), colormap="pascal")
    return info


def dataset_names():
    """The registered datasets' names, sorted."""
    return sorted(_REGISTRY)


def dataset_info_from_spec(spec):
    """A DatasetInfo from a dict or a JSON file path, e.g.
    {"name": "leaves", "num_classes": 3, "class_names": ["bg", "leaf", "spot"],
     "colormap": [[0, 0, 0], [0, 128, 0], [128, 0, 0]], "splits": {"train": 800, "val": 200}}.
    Only name and num_classes are required.
    """
    if isinstance(spec, (str, bytes)) or hasattr(spec, "__fspath__"):
        with open(spec, encoding="utf-8") as f:
            spec = json.load(f)
    fields = {f.name for f in dataclasses.fields(DatasetInfo)}
    unknown = set(spec) - fields
    if unknown or not {"name", "num_classes"} <= set(spec):
        raise ValueError(f"dataset spec needs 'name' and 'num_classes' and may have {sorted(fields)}"
                         f"; got {sorted(spec)}")
    return DatasetInfo(**spec)


for _info in (
    DatasetInfo(
        name="pascal_voc_seg", num_classes=21, class_names=PASCAL_VOC_CLASS_NAMES,
        splits={"train": 1464, "val": 1449, "trainval": 2913, "trainaug": 10582},
        colormap="pascal"),
    DatasetInfo(
        name="cityscapes", num_classes=19, class_names=cityscapes_labels.TRAIN_CLASS_NAMES,
        splits={"train": 2975, "val": 500, "train_extra": 19998}, colormap="cityscapes"),
    # ADE20K SceneParsing (ADEChallengeData2016): the benchmark's palette without its entry 0, "other",
    # which is stored as the ignore label and drawn black like every value past the classes.
    DatasetInfo(
        name="ade20k", num_classes=150, class_names=ADE20K_CLASS_NAMES,
        splits={"train": 20210, "val": 2000},
        colormap=visualization.ade20k_colormap()[1:151].tolist()),
    # The demo's synthetic scenes (deeplab_tf.demo.dataset), so the binaries know them by name.
    DatasetInfo(
        name="demo_shapes", num_classes=6,
        class_names=("background", "disc", "square", "triangle", "ring", "bar"),
        splits={"train": 240, "val": 40}, colormap="pascal"),
    # Section 4.3's COCO pretraining set: COCO images with VOC objects, other classes background.
    DatasetInfo(
        name="coco_voc", num_classes=21, class_names=PASCAL_VOC_CLASS_NAMES,
        splits={"train": None, "val": None}, colormap="pascal"),
):
    register_dataset(_info)
