"""Appendix C: Cityscapes. `train_fine` is Table 12's model (the 2975 finely annotated training
images); `trainval_coarse` continues it on train + val fine + the 20K coarse images (Table 13).

Section 4.1's protocol except 90K steps and 769 x 769 crops, as the paper (and the original
release's Cityscapes instructions) say; 19 classes.
"""

from experiments.configs import base

COMMON = {
    "dataset.name": "cityscapes",
    "dataset.train_pattern": base.CITYSCAPES_TRAIN_FINE,
    "train.steps": 90000,
    "train.crop_size": (769, 769),
    # The release evaluates the 1024 x 2048 images padded to 1025 x 2049 (its Cityscapes eval_crop_size).
    "dataset.eval_crop_size": (1025, 2049),
}
SETTINGS = {
    "train_fine": {},
    # "We further train DeepLabv3 on the trainval coarse set": from the train_fine run, with the same
    # schedule (the paper gives no other). config.dataset.train_pattern is one glob, so this matches
    # every split converted into the folder: train, val and train_extra (coarse), nothing else.
    "trainval_coarse": {
        "dataset.train_pattern": "tfrecords/cityscapes/*.tfrecord",
        "train.init_checkpoint": base.workdir(__file__, "train_fine"),
        "train.init_exclude": (),
    },
}


def get_config(setting=None):
    return base.make(__file__, SETTINGS, setting, COMMON)
