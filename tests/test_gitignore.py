"""The README's commands, run from the repository root, leave nothing for `git add -A` to pick up."""

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The folders the README's and WORKSPACE.md's commands write in the directory they run from.
OUTPUTS = ["deeplab_demo/runs/demo/checkpoints/ckpt-300.index", "data/VOCdevkit/VOC2012/JPEGImages/a.jpg",
           "weights/resnet_v1_101.ckpt", "tfrecords/voc2012/train-00000-of-00004.tfrecord",
           "runs/voc_os16/config.json", "exports/deeplab/1/saved_model.pb", "vis/overlay/a.png"]
# Same names below the root are source code, not outputs.
SOURCES = ["deeplab_tf/data/pipeline.py", "deeplab_tf/data/new_module.py", "tests/data/x.png"]


def _ignored(paths):
    """The subset of `paths` that git ignores in this repository."""
    result = subprocess.run(["git", "-C", REPO, "check-ignore", "--no-index", *paths],
                            capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    return set(result.stdout.split())


@pytest.mark.skipif(shutil.which("git") is None or not os.path.exists(os.path.join(REPO, ".git")),
                    reason="needs git and a checkout")
def test_default_output_folders_are_ignored_and_sources_are_not():
    assert _ignored(OUTPUTS) == set(OUTPUTS)
    assert _ignored(SOURCES) == set()
