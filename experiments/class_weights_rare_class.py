r"""The effect of `config.train.class_weights=inverse_frequency` on a rare class (docs/class_weights.md).

Builds the demo's synthetic scenes with one class made rare in the training split only (it appears in
`--rare_images` of the 240 training scenes; the 40 val scenes keep its natural frequency), trains the
demo's model three times with the same seed (unweighted, inverse-frequency weights, and their square roots given
as a list) and evaluates each on the val split at output stride 16 on the demo's canvas:

    python -m experiments.class_weights_rare_class --root=/tmp/rare_class --steps=300

Prints the per-class IoU of the runs and writes them to <root>/results-seed<seed>.json; the inverse-frequency
run's counts and weights are in <root>/runs/inverse_frequency-seed<seed>/class_weights.json.
"""

import json
import os

import numpy as np
from absl import app, flags

from deeplab_tf.data import fake
from deeplab_tf.data.sources.voc import convert_voc2012
from deeplab_tf.demo import dataset
from deeplab_tf.demo.pipeline import demo_config
from deeplab_tf.evaluation import evaluator
from deeplab_tf.training.trainer import train

_ROOT = flags.DEFINE_string("root", "rare_class", "Folder for the data, the runs and their results.")
_STEPS = flags.DEFINE_integer("steps", 300, "Training steps of each run (the demo's 300 by default).")
_RARE_CLASS = flags.DEFINE_integer("rare_class", 5, "Class made rare in the training split (5: bar).")
_RARE_IMAGES = flags.DEFINE_integer("rare_images", 12, "Training scenes holding the rare class, of 240.")
_DATA_SEED = flags.DEFINE_integer("data_seed", 0, "Seed of the scenes.")
_SEED = flags.DEFINE_integer("seed", 0, "config.train.seed of both trainings (initial weights, batches).")

RUNS = ("unweighted", "inverse_frequency", "sqrt_inverse_frequency")


def run_class_weights(name, root, seed):
    """config.train.class_weights of a run; the square root of the inverse-frequency run's weights (a milder
    list, given as one weight per class) is read from that run's class_weights.json."""
    if name == "sqrt_inverse_frequency":
        with open(os.path.join(root, "runs", f"inverse_frequency-seed{seed}", "class_weights.json")) as f:
            return tuple(float(w) for w in np.sqrt(json.load(f)["weights"]))
    return ("inverse_frequency",) if name == "inverse_frequency" else ()


def rare_class_scenes(rng, *, rare_class, rare_images, num_train, num_val):
    """(train, val) lists of (image, mask): val is the first `num_val` scenes drawn; train keeps the next
    scenes so that exactly `rare_images` of `num_train` contain `rare_class`."""
    val = [dataset.make_scene(rng) for _ in range(num_val)]
    with_rare, without = [], []
    while len(with_rare) < rare_images or len(without) < num_train - rare_images:
        image, mask = dataset.make_scene(rng)
        group = with_rare if (mask == rare_class).any() else without
        if len(group) < (rare_images if group is with_rare else num_train - rare_images):
            group.append((image, mask))
    train_scenes = with_rare + without
    order = rng.permutation(len(train_scenes))
    return [train_scenes[i] for i in order], val


def write_voc(voc, splits):
    """The VOC2012 folder layout the converter reads, from {split: [(image, mask)]}."""
    for split, scenes in splits.items():
        ids = [f"{split}_{i:05d}" for i in range(len(scenes))]
        for image_id, (image, mask) in zip(ids, scenes):
            fake.save_image(os.path.join(voc, "JPEGImages", image_id + ".jpg"), image, quality=90)
            fake.save_palette_mask(os.path.join(voc, "SegmentationClass", image_id + ".png"), mask)
        lists = os.path.join(voc, "ImageSets", "Segmentation")
        os.makedirs(lists, exist_ok=True)
        with open(os.path.join(lists, f"{split}.txt"), "w") as f:
            f.writelines(i + "\n" for i in ids)


def main(argv):
    del argv
    root = os.path.abspath(_ROOT.value)
    tfrecords = os.path.join(root, "tfrecords")
    if not os.path.isdir(tfrecords):
        train_scenes, val_scenes = rare_class_scenes(
            np.random.default_rng(_DATA_SEED.value), rare_class=_RARE_CLASS.value, rare_images=_RARE_IMAGES.value,
            num_train=dataset.SPLITS["train"], num_val=dataset.SPLITS["val"])
        voc = os.path.join(root, "VOCdevkit", "VOC2012")
        write_voc(voc, {"train": train_scenes, "val": val_scenes})
        convert_voc2012(voc, tfrecords, splits=("train", "val"), num_shards=2)
    results = {}
    for name in RUNS:
        config = demo_config(tfrecords, steps=_STEPS.value)
        config.dataset.eval_pattern = ""  # evaluated below, with per-class IoU
        config.train.update(class_weights=run_class_weights(name, root, _SEED.value), seed=_SEED.value)
        workdir = os.path.join(root, "runs", f"{name}-seed{_SEED.value}")
        train(config, workdir, log=lambda line, name=name: print(f"[{name}] {line}", flush=True))
        metrics, path = evaluator.evaluate_checkpoint(workdir, os.path.join(tfrecords, "val-*"),
                                                      dataset_info=dataset.INFO, eval_crop_size=dataset.EVAL_CROP_SIZE)
        results[name] = {"mean_iou": metrics["mean_iou"], "per_class_iou": [c["iou"] for c in metrics["per_class"]],
                         "metrics": path}
    results["settings"] = {"steps": _STEPS.value, "rare_class": _RARE_CLASS.value, "rare_images": _RARE_IMAGES.value,
                           "data_seed": _DATA_SEED.value, "seed": _SEED.value}
    with open(os.path.join(root, f"results-seed{_SEED.value}.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("run                     mIOU  " + "  ".join(f"{n:>10}" for n in dataset.CLASS_NAMES))
    for name in RUNS:
        ious = [float("nan") if iou is None else iou for iou in results[name]["per_class_iou"]]
        print(f"{name:<22} {results[name]['mean_iou']:.4f}  " + "  ".join(f"{iou:>10.4f}" for iou in ious))


if __name__ == "__main__":
    app.run(main)
