"""Sections 4.1 and 4.3: the two-stage PASCAL VOC recipe, and its MS-COCO-pretrained, bootstrapped
version behind Table 6's last row and Table 7's test-set result.

stage1_trainaug_os16 -> stage2_trainval_os8 (section 4.1): trainaug at output stride 16 with batch
norm trained, then trainval at output stride 8 with batch norm frozen, lr 0.001, from stage 1.
coco_pretrain -> coco_stage1_trainaug_os16 -> coco_stage2_trainval_os8_bootstrap (section 4.3):
the same two stages after pretraining on the COCO images with VOC classes, and with the images of
the hard classes duplicated in stage 2. Each later stage starts from the workdir the README gives
the earlier one (override config.train.init_checkpoint if yours is elsewhere); its logits are kept,
since the 21 classes are the same.
"""

from deeplab_tf.training.config import VOC_HARD_CLASSES
from experiments.configs import base

STAGE2 = {
    "dataset.train_pattern": base.VOC_TRAINVAL,
    "model.output_stride": 8,
    "train.fine_tune_batch_norm": False,
    "train.base_learning_rate": 0.001,
    "train.init_exclude": (),
}
# "Smaller initial learning rate = 0.0001 ... when fine-tuning on PASCAL VOC 2012": we read it as
# the rate of both VOC stages after COCO (the paper gives no other for the trainval stage).
AFTER_COCO = {"train.base_learning_rate": 0.0001, "train.init_exclude": ()}
SETTINGS = {
    "stage1_trainaug_os16": {},
    "stage2_trainval_os8": {**STAGE2, "train.init_checkpoint": base.workdir(__file__, "stage1_trainaug_os16")},
    # The paper gives no schedule for COCO: section 4.1's 30K steps (the original release's default
    # training_number_of_steps), about 8 epochs of its ~60K images.
    # COCO images reach 640 pixels, beyond the 513 canvas: an evaluation there runs at their own size.
    "coco_pretrain": {"dataset.name": "coco_voc", "dataset.train_pattern": base.COCO_VOC_TRAIN,
                      "dataset.eval_crop_size": ()},
    "coco_stage1_trainaug_os16": {**AFTER_COCO, "train.init_checkpoint": base.workdir(__file__, "coco_pretrain")},
    "coco_stage2_trainval_os8_bootstrap": {
        **STAGE2, **AFTER_COCO,
        "train.init_checkpoint": base.workdir(__file__, "coco_stage1_trainaug_os16"),
        # Images with bicycle, chair, dining table, potted plant or sofa are duplicated.
        "dataset.bootstrap_classes": VOC_HARD_CLASSES,
        "dataset.bootstrap_factor": 2,
    },
}


def get_config(setting=None):
    return base.make(__file__, SETTINGS, setting)
