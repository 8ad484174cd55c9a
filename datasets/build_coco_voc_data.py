r"""MS-COCO -> 21-class VOC TFRecords for pretraining (section 4.3).

Keeps the images with a VOC-class object larger than --min_region_pixels; other COCO classes
become background.

  python datasets/build_coco_voc_data.py --annotations=annotations/instances_train2017.json \
      --image_dir=train2017 --split=train --output_dir=tfrecords/coco_voc
"""

import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags

from datasets import common
from deeplab_tf.cli import entry
from deeplab_tf.data.sources import coco

flags.DEFINE_string("annotations", None, "COCO instances_*.json.", required=True)
flags.DEFINE_string("image_dir", None, "Folder of the JSON's images.", required=True)
flags.DEFINE_string("split", "train", "Name of the split written.")
flags.DEFINE_integer("min_region_pixels", coco.MIN_REGION_PIXELS,
                     "Keep images with a VOC object larger than this many pixels.")
common.define_output_flags(num_shards=20)
flags.adopt_module_key_flags(common)  # --help lists the output flags too
FLAGS = flags.FLAGS


main = common.converter_main(
    lambda: coco.convert_coco_voc(FLAGS.annotations, FLAGS.image_dir, FLAGS.output_dir,
                                  split=FLAGS.split, num_shards=FLAGS.num_shards,
                                  min_region_pixels=FLAGS.min_region_pixels,
                                  skip_bad=FLAGS.skip_bad),
    dataset="coco_voc")


if __name__ == "__main__":
    entry.run(main)
