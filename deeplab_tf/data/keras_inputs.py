"""The package's pipelines in the (inputs, targets) form Keras' `fit` and `evaluate` read."""


def image_label_pairs(dataset):
    """(image, label) batches from `eval_dataset`'s {"image", "label", "filename"} dicts.

    `train_dataset` already yields (images, labels) pairs; this is for `validation_data` and `evaluate`.

    Example:
        >>> model.fit(train_dataset("voc/train-*", batch_size=8), steps_per_epoch=100,
        ...           validation_data=image_label_pairs(eval_dataset("voc/val-*")))
    """
    return dataset.map(lambda example: (example["image"], example["label"]))
