"""The converter scripts as users run them: `python datasets/build_*_data.py ...` from the
repository root, through absl flags and each script's main.

Every run is started at once by one fixture and the tests then check what each printed and wrote.
A conversion that writes records imports TensorFlow (seconds of CPU apiece), so one real
conversion runs here: VOC with SBD and --skip_bad. The Cityscapes, COCO and folder scripts stop
on a data error found before TensorFlow is needed, which still runs their main and hands their
flags to the converter; their conversions are tested in-process (tests/test_convert_*.py).
"""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf.data import fake, tfrecord

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {  # script -> a flag only it defines
    "build_voc2012_data": "--sbd_root",
    "build_cityscapes_data": "--cityscapes_root",
    "build_coco_voc_data": "--min_region_pixels",
    "build_folder_data": "--mask_format",
    "build_ade20k_data": "--ade20k_root",
}
VOC_IDS = [f"2009_{i:06d}" for i in range(6)]


def _records(pattern):
    """{filename: label uint8} of every record matching `pattern`."""
    out = {}
    for serialized in tf.data.TFRecordDataset(sorted(glob.glob(pattern))):
        example = tfrecord.parse_example(serialized)
        out[example["filename"].numpy().decode()] = example["label"].numpy()
    return out


def _voc(root):
    """VOC train = 0, 1; val = 2, 5; SBD train = 1, 3, val = 2, 4 -> trainaug = 0, 1, 3, 4.
    Image 5's JPEG is truncated: the run passes --skip_bad and must report it."""
    rng = np.random.default_rng(10)
    masks = {i: fake.random_mask(rng, 30, 40, class_ids=list(range(1, 21)))
             for i in VOC_IDS[:3] + VOC_IDS[5:]}
    images = fake.make_voc(os.path.join(root, "VOCdevkit"), masks=masks,
                           splits={"train": VOC_IDS[:2], "val": [VOC_IDS[2], VOC_IDS[5]],
                                   "trainval": VOC_IDS[:3] + VOC_IDS[5:]})
    jpeg = os.path.join(root, "VOCdevkit", "VOC2012", "JPEGImages", VOC_IDS[5] + ".jpg")
    with open(jpeg, "rb") as f:
        data = f.read()
    with open(jpeg, "wb") as f:
        f.write(data[:len(data) // 2])
    sbd = {i: fake.random_mask(rng, 30, 40, class_ids=[7], ignore_border=False)
           for i in VOC_IDS[1:5]}
    fake.make_sbd(root, masks=sbd, images=images,
                  splits={"train": [VOC_IDS[1], VOC_IDS[3]], "val": [VOC_IDS[2], VOC_IDS[4]]})
    expected = {**sbd, **masks}  # VOC's own mask wins where both exist
    return expected, ["--voc_root", os.path.join(root, "VOCdevkit"),
                      "--sbd_root", os.path.join(root, "benchmark_RELEASE"), "--skip_bad"]


def _cityscapes_without_images(root):
    """gtFine only: the script must stop on the missing leftImg8bit/ folder."""
    fake.save_image(os.path.join(root, "gtFine", "val", "bonn",
                                 "bonn_000000_000019_gtFine_labelIds.png"),
                    np.full((8, 16), 7, np.uint8))
    return None, ["--cityscapes_root", root, "--splits=val,train_extra"]


def _coco_without_annotations(root):
    return None, ["--annotations", os.path.join(root, "instances_val2017.json"),
                  "--image_dir", root, "--split=val", "--min_region_pixels=500"]


def _empty_folder(root):
    os.makedirs(os.path.join(root, "images"))
    return None, ["--image_dir", os.path.join(root, "images"),
                  "--mask_dir", os.path.join(root, "masks"), "--num_classes=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{run name: dict(returncode, stdout, stderr, output, expected)} of every script run."""
    root = str(tmp_path_factory.mktemp("scripts"))
    commands, expected = {}, {}
    for script in SCRIPTS:
        commands["help_" + script] = ["-X", "importtime", f"datasets/{script}.py", "--help"]
    conversions = {
        "voc": ("build_voc2012_data", _voc),
        "cityscapes": ("build_cityscapes_data", _cityscapes_without_images),
        "coco": ("build_coco_voc_data", _coco_without_annotations),
        "folder_empty": ("build_folder_data", _empty_folder),
    }
    for name, (script, make) in conversions.items():
        expected[name], flags = make(os.path.join(root, "data", name))
        flags += [f"--output_dir={os.path.join(root, 'out', name)}", "--num_shards=2"]
        commands[name] = [f"datasets/{script}.py"] + flags
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    processes = {}
    for name, command in commands.items():
        stdout = open(os.path.join(root, name + ".out"), "w+")
        stderr = open(os.path.join(root, name + ".err"), "w+")
        processes[name] = (subprocess.Popen([sys.executable] + command, cwd=REPO, env=env,
                                            stdout=stdout, stderr=stderr, text=True),
                           stdout, stderr)
    results = {}
    for name, (process, stdout, stderr) in processes.items():
        process.wait(timeout=600)
        stdout.seek(0)
        stderr.seek(0)
        results[name] = dict(returncode=process.returncode, stdout=stdout.read(),
                             stderr=stderr.read(), output=os.path.join(root, "out", name),
                             expected=expected.get(name))
        stdout.close()
        stderr.close()
    return results


def _histogram(report, split, class_name):
    """The pixel count of `class_name` in `split`'s histogram of a converter's report."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(split + ":"))
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        fields = line.split()
        if fields[1:2] == [class_name]:
            return int(fields[2])
    raise AssertionError(f"no {class_name} row in the {split} histogram:\n{report}")


def _left_files(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_lists_the_flags_without_importing_tensorflow(runs, script):
    run = runs["help_" + script]
    assert "Traceback" not in run["stderr"]
    for flag in (SCRIPTS[script], "--output_dir", "--num_shards", "--[no]skip_bad"):
        assert flag in run["stdout"]
    assert f"python datasets/{script}.py --" in run["stdout"]  # the usage example, copyable
    imported = {line.rsplit("|", 1)[-1].strip() for line in run["stderr"].splitlines()
                if line.startswith("import time:")}
    assert "numpy" in imported  # -X importtime did list the imports
    assert "tensorflow" not in imported


def test_voc_script_converts_every_split_and_reports_the_skipped_image(runs):
    run = runs["voc"]
    assert run["returncode"] == 0, run["stderr"]
    assert _left_files(run["output"]) == sorted(
        f"{split}-{i:05d}-of-{n:05d}.tfrecord"
        for split, n in (("train", 2), ("val", 1), ("trainval", 2), ("trainaug", 2))
        for i in range(n))
    for split, ids in {"train": VOC_IDS[:2], "val": VOC_IDS[2:3], "trainval": VOC_IDS[:3],
                       "trainaug": [VOC_IDS[i] for i in (0, 1, 3, 4)]}.items():
        records = _records(os.path.join(run["output"], f"{split}-*"))
        assert sorted(records) == ids
        for image_id, label in records.items():
            np.testing.assert_array_equal(label, run["expected"][image_id])
    assert "trainaug: 4 records in 2 shards" in run["stdout"]
    assert run["stdout"].count(f"  skipped {VOC_IDS[5]}: ") == 2  # in val and trainval
    assert f"{VOC_IDS[5]}.jpg: cannot decode the image" in run["stdout"]
    assert "\nval: 1 records in 1 shards (" in run["stdout"]
    assert "trainval: 3 records in 2 shards" in run["stdout"]
    # The per-class pixel histogram of each split, and a progress line per split.
    trainaug = [run["expected"][VOC_IDS[i]] for i in (0, 1, 3, 4)]
    assert _histogram(run["stdout"], "trainaug", "car") == sum((m == 7).sum() for m in trainaug)
    assert _histogram(run["stdout"], "trainaug", "(ignore)") == sum(
        (m == 255).sum() for m in trainaug)
    assert "trainaug: 4/4 images (100%)" in run["stderr"]


@pytest.mark.parametrize("name, message", [
    ("cityscapes", "leftImg8bit/val: not found; --cityscapes_root must contain leftImg8bit/val"),
    ("coco", "instances_val2017.json: cannot read the COCO annotations"),
])
def test_cityscapes_and_coco_scripts_pass_their_flags_to_the_converter(runs, name, message):
    """A data error found before any record is written: main handed the flags over, and the
    script ends with one line."""
    run = runs[name]
    assert run["returncode"] == 1
    assert "Traceback" not in run["stderr"]
    last = run["stderr"].strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert _left_files(run["output"]) == []


def test_a_data_error_ends_the_script_with_one_line(runs):
    run = runs["folder_empty"]
    assert run["returncode"] == 1
    assert "Traceback" not in run["stderr"]
    assert run["stderr"].strip().splitlines()[-1] == (
        "error: split 'train' has no images: check the split list / folder paths.")
    assert _left_files(run["output"]) == []
