"""A tiny VOC val split, a checkpoint in the trainer's workdir layout, and in-process CLI runs,
shared by the deeplab-eval and deeplab-vis tests."""

import glob
import os
import shutil

import keras
import numpy as np
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from deeplab_tf import workdir as workdir_lib
from deeplab_tf.data import fake, make_example
from deeplab_tf.data.sources.voc import convert_voc2012
from deeplab_tf.modeling import DeepLabV3

# Odd sizes, none a multiple of the output stride: predictions must come back at these sizes.
IMAGE_SIZES = ((33, 41), (45, 37), (41, 41))


def make_voc_val(root, *, seed=0):
    """VOC val images with random objects of all 20 classes, as TFRecords; returns their glob."""
    rng = np.random.default_rng(seed)
    masks = {f"2007_{i:06d}": fake.random_mask(rng, *size, class_ids=list(range(1, 21)))
             for i, size in enumerate(IMAGE_SIZES)}
    fake.make_voc(root, masks=masks, splits={"val": sorted(masks)}, seed=seed)
    output = os.path.join(root, "tfrecord")
    convert_voc2012(os.path.join(root, "VOC2012"), output, splits=("val",), num_shards=2)
    return os.path.join(output, "val-*")


def make_workdir(workdir, *, num_classes=21, step=5, seed=0):
    """A random ResNet-50 DeepLabV3 (OS 16) saved as deeplab-train saves it: model_config.json and
    checkpoints/ckpt-<step>. Returns the model."""
    keras.utils.set_random_seed(seed)
    model = DeepLabV3(num_classes=num_classes, backbone="resnet_v1_50", output_stride=16)
    model(tf.zeros([1, 65, 65, 3]))
    # Random weights predict one class everywhere (the features' mean dominates the logits):
    # centring the logits on a sample image spreads the predictions over several classes.
    image = fake.random_image(np.random.default_rng(seed), 41, 41)[np.newaxis].astype(np.float32)
    mean_logits = np.mean(model(image, training=False), axis=(0, 1, 2))
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel, bias - mean_logits])
    workdir_lib.save_model_config(workdir, model)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), workdir_lib.checkpoint_dir(workdir),
                               max_to_keep=3).save(checkpoint_number=step)
    return model


def make_eval_data(root):
    """A VOC val split and a workdir (step 5) under `root`: {root, pattern, workdir, model}."""
    pattern = make_voc_val(str(root / "voc"))
    workdir = str(root / "run")
    model = make_workdir(workdir, step=5)
    return dict(root=root, pattern=pattern, workdir=workdir, model=model)


def run_main(module, **flag_values):
    """Runs `module.main` in-process as if called with --name=value for each flag given."""
    argv = ["test"] + [f"--{name}={value}" for name, value in flag_values.items()]
    with flagsaver.flagsaver():
        flags.FLAGS(argv)
        module.main(["test"])


def split_with_a_fault(pattern, directory, fault):
    """A copy of the split `pattern` (its glob) whose second shard is cut in half ("truncated") or gets a record whose
    image bytes are not an image ("undecodable"): a copy that did not finish, a converter bug."""
    directory.mkdir()
    shards = [shutil.copy(path, directory) for path in sorted(glob.glob(pattern))]
    if fault == "truncated":
        with open(shards[1], "r+b") as f:
            f.truncate(os.path.getsize(shards[1]) // 2)
    else:
        with tf.io.TFRecordWriter(shards[1]) as writer:
            label = tf.io.encode_png(np.zeros([9, 11, 1], np.uint8)).numpy()
            writer.write(make_example(image=b"\xff\xd8\xff\xe0 not a JPEG", image_format="jpeg", label=label,
                                      filename="2007_000999", height=9, width=11).SerializeToString())
    return str(directory / "*.tfrecord"), shards[1]
