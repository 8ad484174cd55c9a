"""The README's "Use from Python" on the demo's scenes: build, fit, evaluate, save, load, segment.

Trains the demo's model (deeplab_tf/demo/pipeline.py's recipe) with Keras' own `fit`, from scratch, on
the TFRecords of `deeplab-demo`'s workspace, or, without one, on the same scenes built as the demo
builds them (about 1 MB). A few minutes on 2 CPU cores; it ends with the val mIOU next to a uniform
guess's and the classes it finds in one val image:

    python experiments/keras_api_example.py --workspace=deeplab_demo --output_dir=/tmp/keras_api_example
"""

import os

import keras
import numpy as np
from absl import app, flags
from PIL import Image

import deeplab_tf
from deeplab_tf.demo import dataset as demo_dataset, pipeline
from deeplab_tf.evaluation.evaluator import count_examples

flags.DEFINE_string("workspace", "deeplab_demo", "deeplab-demo's workspace: its TFRecords are used, or built there.")
flags.DEFINE_string("output_dir", "/tmp/keras_api_example", "Where the .keras file goes.")
flags.DEFINE_integer("steps", 200, "Training steps (batches of the demo's size).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    space = pipeline.Workspace(FLAGS.workspace)
    voc = pipeline.prepare_data(space, demo_dataset.SPLITS)
    recipe = pipeline.demo_config(space.tfrecords)
    num_classes, class_names = demo_dataset.INFO.num_classes, demo_dataset.CLASS_NAMES

    # Build and train with Keras' own loop (the demo's model, learning rate and augmentation).
    keras.utils.set_random_seed(0)
    model = deeplab_tf.DeepLabV3(num_classes=num_classes, backbone=recipe.model.backbone, output_stride=16,
                                 aspp_filters=recipe.model.aspp_filters, bn_momentum=recipe.model.bn_momentum)
    schedule = deeplab_tf.PolyLearningRate(recipe.train.base_learning_rate, FLAGS.steps,
                                           warmup_steps=recipe.train.warmup_steps,
                                           warmup_learning_rate=recipe.train.warmup_learning_rate)
    model.compile(optimizer=deeplab_tf.MomentumSGD(schedule, momentum=0.9), loss=deeplab_tf.SegmentationLoss(),
                  metrics=[deeplab_tf.MeanIoU(num_classes=num_classes)])
    train = deeplab_tf.train_dataset(recipe.dataset.train_pattern, batch_size=recipe.train.batch_size,
                                     crop_size=tuple(recipe.train.crop_size), min_scale=recipe.train.min_scale,
                                     max_scale=recipe.train.max_scale, seed=0)
    # One image per batch: validate on every val image after each epoch. Repeated, or the second epoch's
    # validation would find the first one's iterator spent ("Your input ran out of data").
    num_val = count_examples(recipe.dataset.eval_pattern)
    val = deeplab_tf.image_label_pairs(deeplab_tf.eval_dataset(recipe.dataset.eval_pattern)).repeat()
    epochs = 2
    history = model.fit(train, epochs=epochs, steps_per_epoch=max(FLAGS.steps // epochs, 1), validation_data=val,
                        validation_steps=num_val, verbose=2)
    print("val mIOU per epoch:", [round(v, 4) for v in history.history["val_mean_iou"]])

    # Save, load back in the inference form (batch norm folded), and score it as deeplab-eval would.
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    path = os.path.join(FLAGS.output_dir, "demo.keras")
    model.save(path)
    inference_model = deeplab_tf.load_model(path)
    results = deeplab_tf.evaluate(inference_model, recipe.dataset.eval_pattern, num_classes=num_classes,
                                  class_names=class_names)
    print(f"{path}: val mIOU {results['mean_iou']:.4f} over {results['num_images']} images (a uniform guess "
          f"scores about {1 / num_classes:.2f} IoU per class)")

    # Segment one JPEG at its own size, with two scales and flips.
    image_id = open(os.path.join(voc, "ImageSets", "Segmentation", "val.txt")).readline().strip()
    labels = deeplab_tf.segment(inference_model, os.path.join(voc, "JPEGImages", image_id + ".jpg"),
                                scales=(0.75, 1.0), flip=True)
    truth = np.asarray(Image.open(os.path.join(voc, "SegmentationClass", image_id + ".png")))
    print(f"val image {image_id} {labels.shape}: predicted classes "
          f"{', '.join(class_names[c] for c in np.unique(labels))} "
          f"(ground truth: {', '.join(class_names[c] for c in np.unique(truth) if c < num_classes)})")


if __name__ == "__main__":
    app.run(main)
