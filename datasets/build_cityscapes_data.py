r"""Cityscapes -> TFRecords with the 19 train ids (every other labelId becomes 255).

  python datasets/build_cityscapes_data.py --cityscapes_root=cityscapes \
      --splits=train,val,train_extra --output_dir=tfrecords/cityscapes

train and val use gtFine, train_extra gtCoarse (the paper's coarse set).
"""

import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags

from datasets import common
from deeplab_tf.cli import entry
from deeplab_tf.data.sources import cityscapes

flags.DEFINE_string("cityscapes_root", None,
                    "Folder holding leftImg8bit/ and gtFine/ (and gtCoarse/).", required=True)
flags.DEFINE_list("splits", ["train", "val"], "Splits to write: train, val, train_extra.")
common.define_output_flags(num_shards=10)
flags.adopt_module_key_flags(common)  # --help lists the output flags too
FLAGS = flags.FLAGS


main = common.converter_main(
    lambda: cityscapes.convert_cityscapes(FLAGS.cityscapes_root, FLAGS.output_dir,
                                          splits=FLAGS.splits, num_shards=FLAGS.num_shards,
                                          skip_bad=FLAGS.skip_bad),
    dataset="cityscapes")


if __name__ == "__main__":
    entry.run(main)
