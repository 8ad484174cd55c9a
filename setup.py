"""deeplab_tf: DeepLabv3 (Chen et al., 2017) in TensorFlow 2 / Keras 3."""

import setuptools

setuptools.setup(
    name="deeplab_tf",
    version="0.1.0",
    description="DeepLabv3 semantic segmentation in TensorFlow 2 / Keras 3, as the paper describes it.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # experiments/ is importable so its configs can share experiments.configs.base; the datasets/
    # scripts run as files (a top-level "datasets" package would shadow HuggingFace datasets).
    packages=setuptools.find_packages(include=["deeplab_tf", "deeplab_tf.*", "experiments", "experiments.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorflow-datasets>=4.9",
        "numpy",
        "absl-py",
        "pillow",
        # SBD ships its masks as MATLAB .mat files.
        "scipy",
        # Experiment configs are plain Python files with get_config(), overridable by flags.
        "ml_collections",
        # COCO polygons / RLE -> masks, the reference decoder.
        "pycocotools",
        # tf.summary needs it to write TensorBoard events; TensorFlow no longer installs it.
        "tensorboard",
        # tensorflow-datasets' builders (the cityscapes source) import it without declaring it
        # (tensorflow/datasets#11212).
        "importlib_resources",
    ],
    extras_require={
        # tensorflow-serving-api: the gRPC request protos the export tests (and docs/export.md) use.
        # tf-slim: TF-slim's own resnet_v1, the reference our backbone and checkpoint mapping are tested against.
        "test": ["pytest>=7", "pytest-timeout", "tensorflow-serving-api>=2.21,<2.22", "tf-slim==1.1.0"],
    },
    entry_points={
        "console_scripts": [
            "deeplab-train=deeplab_tf.cli.train:run",
            "deeplab-eval=deeplab_tf.cli.eval:run",
            "deeplab-vis=deeplab_tf.cli.vis:run",
            "deeplab-export=deeplab_tf.cli.export:run",
            "deeplab-demo=deeplab_tf.cli.demo:run",
            "deeplab-local-cluster=deeplab_tf.cli.local_cluster:run",
            "deeplab-convert-checkpoint=deeplab_tf.cli.convert_checkpoint:run",
        ],
    },
)
