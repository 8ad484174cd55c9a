"""MS-COCO -> 21-class VOC masks, the pretraining set of section 4.3 ("Pretrained on COCO").

"We only select the images that have annotation regions larger than 1000 pixels and contain the
classes defined in PASCAL VOC 2012 ... the MS-COCO classes not defined in PASCAL VOC 2012 are all
treated as background class." An image is kept when one of its non-crowd VOC-class annotations
covers more than `min_region_pixels`. Masks: VOC instances painted largest first (so smaller
objects stay on top), crowd regions of VOC classes ignored (255), everything else background.
"""

import collections
import functools
import json
import os

import numpy as np
from pycocotools import mask as mask_utils

from deeplab_tf.constants import IGNORE_LABEL
from deeplab_tf.data import convert, registry
from deeplab_tf.data.validation import DataError

# COCO category name -> VOC class name, for the 20 VOC classes COCO has under other names or the same.
COCO_TO_VOC = {
    "airplane": "aeroplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat",
    "bottle": "bottle", "bus": "bus", "car": "car", "cat": "cat", "chair": "chair", "cow": "cow",
    "dining table": "diningtable", "dog": "dog", "horse": "horse", "motorcycle": "motorbike",
    "person": "person", "potted plant": "pottedplant", "sheep": "sheep", "couch": "sofa",
    "train": "train", "tv": "tvmonitor",
}
MIN_REGION_PIXELS = 1000


def _binary_mask(segmentation, height, width):
    """A COCO polygon list, uncompressed or compressed RLE -> uint8 {0, 1} [H, W]."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def render_voc_mask(annotations, *, height, width, class_of_category):
    """COCO annotations of one image -> uint8 VOC class ids [H, W] (see the module docstring)."""
    mask = np.zeros((height, width), np.uint8)
    voc = [a for a in annotations if a["category_id"] in class_of_category]
    ordered = sorted(voc, key=lambda a: (not a.get("iscrowd", 0), -a["area"]))
    for annotation in ordered:
        region = _binary_mask(annotation["segmentation"], height, width).astype(bool)
        mask[region] = (IGNORE_LABEL if annotation.get("iscrowd", 0)
                        else class_of_category[annotation["category_id"]])
    return mask


def coco_voc_samples(instances_json, image_dir, *, min_region_pixels=MIN_REGION_PIXELS):
    """Samples of the COCO images holding a VOC object larger than `min_region_pixels`."""
    try:
        with open(instances_json, encoding="utf-8") as f:
            coco = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{instances_json}: cannot read the COCO annotations ({e}); give an "
                        "instances_*.json file.") from None
    if not {"images", "annotations", "categories"} <= set(coco):
        raise DataError(f"{instances_json}: not a COCO instances file (needs images, annotations "
                        "and categories).")
    voc_names = registry.PASCAL_VOC_CLASS_NAMES
    class_of_category = {c["id"]: voc_names.index(COCO_TO_VOC[c["name"]])
                         for c in coco["categories"] if c["name"] in COCO_TO_VOC}
    by_image = collections.defaultdict(list)
    for annotation in coco["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    samples = []
    for image in sorted(coco["images"], key=lambda i: i["file_name"]):
        annotations = by_image[image["id"]]
        if not any(a["category_id"] in class_of_category and not a.get("iscrowd", 0)
                   and a["area"] > min_region_pixels for a in annotations):
            continue
        samples.append(convert.Sample(
            name=os.path.splitext(image["file_name"])[0],
            image_path=os.path.join(image_dir, image["file_name"]),
            mask_path=f"{instances_json} (image id {image['id']})",
            read_mask=functools.partial(render_voc_mask, annotations, height=image["height"],
                                        width=image["width"],
                                        class_of_category=class_of_category)))
    return samples


def convert_coco_voc(instances_json, image_dir, output_dir, *, split="train", num_shards=20,
                     min_region_pixels=MIN_REGION_PIXELS, skip_bad=False):
    """Converts the VOC-class subset of one COCO instances file to `<output_dir>/<split>-*`.

    Returns a ConversionSummary.
    """
    info = registry.get_dataset_info("coco_voc")
    samples = coco_voc_samples(instances_json, image_dir, min_region_pixels=min_region_pixels)
    return convert.convert_splits({split: samples}, output_dir=output_dir,
                                  num_classes=info.num_classes, ignore_label=info.ignore_label,
                                  num_shards=num_shards, skip_bad=skip_bad)
