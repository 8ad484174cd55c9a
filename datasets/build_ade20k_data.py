r"""ADE20K SceneParsing (ADEChallengeData2016) -> TFRecords with 150 classes, "other" ignored.

  python datasets/build_ade20k_data.py --ade20k_root=data/ADEChallengeData2016 \
      --output_dir=tfrecords/ade20k

train is images/training (20,210 images), val images/validation (2,000). The masks' benchmark ids
1..150 are stored as 0..149 and 0 ("other") as the ignore label 255 (docs/data.md).
"""

import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags

from datasets import common
from deeplab_tf.cli import entry
from deeplab_tf.data.sources import ade20k

flags.DEFINE_string("ade20k_root", None,
                    "ADEChallengeData2016 (holding images/ and annotations/), or the folder it is in.",
                    required=True)
flags.DEFINE_list("splits", ["train", "val"], "Splits to write: train, val.")
common.define_output_flags(num_shards=4)
flags.adopt_module_key_flags(common)  # --help lists the output flags too
FLAGS = flags.FLAGS


main = common.converter_main(
    lambda: ade20k.convert_ade20k(FLAGS.ade20k_root, FLAGS.output_dir, splits=FLAGS.splits,
                                  num_shards=FLAGS.num_shards, skip_bad=FLAGS.skip_bad),
    dataset="ade20k")


if __name__ == "__main__":
    entry.run(main)
