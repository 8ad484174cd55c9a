r"""PASCAL VOC 2012 (+ SBD) -> TFRecords: train, val, trainval and trainaug (10,582 images).

  python datasets/build_voc2012_data.py --voc_root=VOCdevkit/VOC2012 \
      --sbd_root=benchmark_RELEASE --output_dir=tfrecords/voc2012
"""

import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags

from datasets import common
from deeplab_tf.cli import entry
from deeplab_tf.data.sources import voc

flags.DEFINE_string("voc_root", None, "VOCdevkit/VOC2012 (or VOCdevkit).", required=True)
flags.DEFINE_string("sbd_root", None,
                    "SBD's benchmark_RELEASE folder (with dataset/cls/*.mat); enables trainaug.")
flags.DEFINE_list("splits", None,
                  "Splits to write (default: train,val,trainval, and trainaug with --sbd_root).")
common.define_output_flags(num_shards=4)
flags.adopt_module_key_flags(common)  # --help lists the output flags too
FLAGS = flags.FLAGS


main = common.converter_main(
    lambda: voc.convert_voc2012(FLAGS.voc_root, FLAGS.output_dir, splits=FLAGS.splits,
                                num_shards=FLAGS.num_shards, sbd_root=FLAGS.sbd_root,
                                skip_bad=FLAGS.skip_bad),
    dataset="pascal_voc_seg")


if __name__ == "__main__":
    entry.run(main)
