r"""Any folder of images + masks -> TFRecords: the "train on my own data" path.

  python datasets/build_folder_data.py --image_dir=my/images --mask_dir=my/masks \
      --num_classes=3 --split=train --output_dir=tfrecords/mine

Masks pair with images by name (<mask_dir>/<name><mask_suffix>.png). Index masks hold class ids
(palette or greyscale PNG); binary 0/255 masks need --value_map=255:1. RGB colour masks
(--mask_format=rgb) map through a dataset spec's colormap (--dataset_spec, see docs/data.md) or
VOC's palette by default.
"""

import os
import sys

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

from datasets import common
from deeplab_tf.cli import entry
from deeplab_tf.data import registry
from deeplab_tf.data.sources import folder

flags.DEFINE_string("image_dir", None, "Folder of images (jpg, png, bmp, tif, webp).",
                    required=True)
flags.DEFINE_string("mask_dir", None, "Folder of PNG masks named like the images.",
                    required=True)
flags.DEFINE_string("split", "train", "Name of the split written.")
flags.DEFINE_string("split_file", None, "Optional list of image names (no extension), one a line.")
flags.DEFINE_string("dataset_spec", None,
                    "JSON dataset spec (name, num_classes, class_names, colormap, ignore_label).")
flags.DEFINE_integer("num_classes", None, "Number of classes, when there is no --dataset_spec.")
flags.DEFINE_enum("mask_format", "index", folder.MASK_FORMATS,
                  "index: masks hold class ids; rgb: colours of the dataset's colormap.")
flags.DEFINE_string("mask_suffix", "", "Mask name = image name + this suffix + .png.")
flags.DEFINE_list("value_map", [], "Index-mask values to remap before checking, e.g. 255:1.")
flags.DEFINE_list("ignore_color", None, "R,G,B of the colour meaning 'ignore' in RGB masks.")
flags.DEFINE_boolean("binary_check", True,
                     "Refuse masks holding only 0 and 255 (binary masks whose foreground would "
                     "be ignored); --nobinary_check when 255 really is 'ignore' there.")
common.define_output_flags(num_shards=4)
flags.adopt_module_key_flags(common)  # --help lists the output flags too
FLAGS = flags.FLAGS


def _dataset_info():
    if (FLAGS.dataset_spec is None) == (FLAGS.num_classes is None):
        raise app.UsageError("give exactly one of --dataset_spec and --num_classes")
    if FLAGS.num_classes is not None:
        return registry.DatasetInfo(name="folder", num_classes=FLAGS.num_classes)
    try:
        return registry.dataset_info_from_spec(FLAGS.dataset_spec)
    except (OSError, ValueError, TypeError) as e:
        raise app.UsageError(f"--dataset_spec={FLAGS.dataset_spec}: {e}")


def _byte(text, flag):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 255:
        raise app.UsageError(f"--{flag}: {text!r} is not an integer in [0, 255]")
    return value


def _value_map():
    pairs = [item.split(":") for item in FLAGS.value_map]
    if any(len(pair) != 2 for pair in pairs):
        raise app.UsageError(f"--value_map wants value:class pairs like 255:1, got "
                             f"{','.join(FLAGS.value_map)}")
    return {_byte(s, "value_map"): _byte(t, "value_map") for s, t in pairs}


def _ignore_color():
    if FLAGS.ignore_color is None:
        return None
    if len(FLAGS.ignore_color) != 3:
        raise app.UsageError("--ignore_color wants R,G,B, e.g. 224,224,192")
    return tuple(_byte(c, "ignore_color") for c in FLAGS.ignore_color)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    info = _dataset_info()
    value_map, ignore_color = _value_map(), _ignore_color()
    common.run_conversion(
        lambda: folder.convert_folder(
            FLAGS.image_dir, FLAGS.mask_dir, FLAGS.output_dir, info=info, split=FLAGS.split,
            split_file=FLAGS.split_file, mask_format=FLAGS.mask_format,
            mask_suffix=FLAGS.mask_suffix, value_map=value_map, ignore_color=ignore_color,
            num_shards=FLAGS.num_shards, skip_bad=FLAGS.skip_bad,
            binary_check=FLAGS.binary_check),
        info=info)


if __name__ == "__main__":
    entry.run(main)
