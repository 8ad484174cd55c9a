"""The README's "Use from Python" on the demo's synthetic scenes: build, fit, evaluate, save, load, segment.

Runs from scratch with no download (the demo dataset is generated, about 1 MB) in a few minutes on a
laptop CPU at the defaults; the numbers it prints are those of a short run, not of the paper:

    python experiments/keras_api_example.py --output_dir=/tmp/keras_api_example --steps=60
"""

import glob
import os

import keras
import numpy as np
from absl import app, flags

import deeplab_tf
from deeplab_tf.data.sources.voc import convert_voc2012
from deeplab_tf.demo import dataset as demo_dataset

flags.DEFINE_string("output_dir", "/tmp/keras_api_example", "Where the data and the .keras file go.")
flags.DEFINE_integer("steps", 60, "Training steps (batches of --batch_size).")
flags.DEFINE_integer("batch_size", 4, "Batch size.")
flags.DEFINE_integer("crop_size", 129, "Training crop (square, of the form 32k + 1).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    voc, _ = demo_dataset.build(os.path.join(FLAGS.output_dir, "data"))
    tfrecords = os.path.join(FLAGS.output_dir, "tfrecords")
    if not os.path.exists(os.path.join(tfrecords, "val-00001-of-00002.tfrecord")):
        convert_voc2012(voc, tfrecords, splits=("train", "val"), num_shards=2)
    num_classes = demo_dataset.INFO.num_classes

    # Build and train with Keras' own loop; weight decay is in model.losses, which fit adds.
    model = deeplab_tf.DeepLabV3(num_classes=num_classes, backbone="resnet_v1_50", output_stride=16,
                                 weight_decay=1e-4, bn_momentum=0.99)
    model.compile(optimizer=keras.optimizers.SGD(deeplab_tf.PolyLearningRate(0.01, FLAGS.steps), momentum=0.9),
                  loss=deeplab_tf.SegmentationLoss(), metrics=[deeplab_tf.MeanIoU(num_classes=num_classes)])
    train = deeplab_tf.train_dataset(os.path.join(tfrecords, "train-*"), batch_size=FLAGS.batch_size,
                                     crop_size=(FLAGS.crop_size,) * 2, seed=0)
    val = deeplab_tf.image_label_pairs(deeplab_tf.eval_dataset(os.path.join(tfrecords, "val-*")))
    epochs = 2
    history = model.fit(train, epochs=epochs, steps_per_epoch=max(FLAGS.steps // epochs, 1), validation_data=val)
    print("val mIOU per epoch:", [round(v, 4) for v in history.history["val_mean_iou"]])

    # Save, load back in the inference form, and score it as deeplab-eval would.
    path = os.path.join(FLAGS.output_dir, "demo.keras")
    model.save(path)
    inference_model = deeplab_tf.load_model(path)
    results = deeplab_tf.evaluate(inference_model, os.path.join(tfrecords, "val-*"), num_classes=num_classes,
                                  class_names=demo_dataset.CLASS_NAMES)
    print(f"{path}: val mIOU {results['mean_iou']:.4f} over {results['num_images']} images")

    # Segment one JPEG at its own size, with two scales and flips.
    image_path = sorted(glob.glob(os.path.join(voc, "JPEGImages", "val_*.jpg")))[0]
    labels = deeplab_tf.segment(inference_model, image_path, scales=(0.75, 1.0), flip=True)
    present = [demo_dataset.CLASS_NAMES[c] for c in np.unique(labels)]
    print(f"first val image {labels.shape}: predicted classes {', '.join(present)}")


if __name__ == "__main__":
    app.run(main)
