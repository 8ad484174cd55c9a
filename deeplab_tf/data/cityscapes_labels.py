"""Cityscapes label ids and the 19 train ids the benchmark evaluates (cityscapesScripts' table)."""

from deeplab_tf.constants import IGNORE_LABEL

TRAIN_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

# labelId -> trainId for the 19 evaluated classes; every other labelId (0..33, and -1 for the
# licence plate) maps to the ignore label.
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
TRAIN_ID_TO_LABEL_ID = {train_id: label_id for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items()}


def label_id_lookup_table():
    """A 256-entry list mapping every uint8 labelId to its trainId or the ignore label."""
    return [LABEL_ID_TO_TRAIN_ID.get(i, IGNORE_LABEL) for i in range(256)]


def train_id_lookup_table():
    """A 256-entry list mapping trainIds back to labelIds (for the official evaluation scripts).

    Unknown values (including the ignore label) map to 0, 'unlabeled'.
    """
    return [TRAIN_ID_TO_LABEL_ID.get(i, 0) for i in range(256)]
