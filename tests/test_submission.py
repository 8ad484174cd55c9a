"""deeplab-vis --submission: the exact files, names, sizes, modes and values the PASCAL VOC 2012 and
Cityscapes test servers take, equal to deeplab-vis's own index PNGs for the same inference flags, the
archives listing exactly those files, and the file count checked against the input."""

import fnmatch
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
from absl import app
from PIL import Image

from deeplab_tf import visualization
from deeplab_tf.cli import vis as vis_cli
from deeplab_tf.data import cityscapes_labels, fake
from deeplab_tf.data.errors import DataError
from deeplab_tf.data.sources import cityscapes
from deeplab_tf.evaluation import submission
from eval_utils import IMAGE_SIZES, make_voc_val, make_workdir, run_main

# The paper's test protocol in small: OS 8, two scales, flips, the release's eval canvas.
PROTOCOL = dict(eval_output_stride=8, eval_scales="0.75,1.0", flip=True, eval_crop_size="49,49")
VOC_IDS = [f"2007_{i:06d}" for i in range(len(IMAGE_SIZES))]
VOC_FOLDER = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")
# Cityscapes-like val images of odd sizes in per-city folders, as leftImg8bit/test is laid out.
CITYSCAPES_IDS = {"berlin_000000_000019": (33, 45), "bad-honnef_000012_000019": (41, 37),
                  "munich_000123_000456": (25, 49)}
LABEL_IDS = sorted(cityscapes_labels.TRAIN_ID_TO_LABEL_ID.values())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("submission")
    voc_workdir, cityscapes_workdir = str(root / "voc_run"), str(root / "cityscapes_run")
    make_workdir(voc_workdir)
    make_workdir(cityscapes_workdir, num_classes=19)
    rng = np.random.default_rng(5)
    label_ids = {("val", image_id, "gtFine"): rng.choice([7, 26, 0], size).astype(np.uint8)
                 for image_id, size in CITYSCAPES_IDS.items()}
    fake.make_cityscapes(str(root / "cityscapes"), label_ids=label_ids)
    cityscapes.convert_cityscapes(str(root / "cityscapes"), str(root / "cityscapes_records"),
                                  splits=("val",), num_shards=2)
    return dict(root=root, voc_workdir=voc_workdir, cityscapes_workdir=cityscapes_workdir,
                voc_pattern=make_voc_val(str(root / "voc")),
                voc_images=str(root / "voc" / "VOC2012" / "JPEGImages"),
                cityscapes_images=str(root / "cityscapes" / "leftImg8bit" / "val"),
                cityscapes_pattern=str(root / "cityscapes_records" / "val-*"))


def _png(path):
    with Image.open(path) as image:
        image.load()
        return image


def _files(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def test_voc2012_submission_is_the_vis_index_pngs_in_the_servers_layout_and_tar(data, capsys):
    output_dir = str(data["root"] / "voc_submission")
    run_main(vis_cli, checkpoint=data["voc_workdir"], vis_pattern=data["voc_pattern"],
             output_dir=output_dir, submission="voc2012", **PROTOCOL)
    archive = os.path.join(output_dir, "voc2012_comp6_test_cls.tar.gz")
    expected = [os.path.join(VOC_FOLDER, f"{image_id}.png") for image_id in VOC_IDS]
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"Wrote 3 voc2012 submission files to {os.path.join(output_dir, VOC_FOLDER)}/; upload {archive}")
    assert _files(output_dir) == sorted(expected + ["voc2012_comp6_test_cls.tar.gz"])

    vis_dir = str(data["root"] / "voc_vis")
    run_main(vis_cli, checkpoint=data["voc_workdir"], vis_pattern=data["voc_pattern"], output_dir=vis_dir,
             **PROTOCOL)
    pascal = visualization.get_colormap("pascal")
    seen = set()
    for image_id, (height, width) in zip(VOC_IDS, IMAGE_SIZES):
        written = _png(os.path.join(output_dir, VOC_FOLDER, f"{image_id}.png"))
        assert written.mode == "P" and written.size == (width, height), image_id
        np.testing.assert_array_equal(np.asarray(written.getpalette(), np.uint8).reshape(-1, 3),
                                      pascal[:len(written.getpalette()) // 3])
        labels = np.asarray(written)
        assert labels.dtype == np.uint8 and labels.max() <= 20
        np.testing.assert_array_equal(labels, np.asarray(_png(os.path.join(vis_dir, "index", image_id + ".png"))))
        seen |= set(np.unique(labels).tolist())
    assert len(seen) > 1  # a map of one class everywhere would prove little

    with tarfile.open(archive, "r:gz") as tar:
        assert sorted(tar.getnames()) == expected and all(member.isfile() for member in tar.getmembers())
        for name in expected:
            with open(os.path.join(output_dir, name), "rb") as f:
                assert tar.extractfile(name).read() == f.read()


def test_voc2012_test_images_from_a_folder_and_an_id_list_as_comp5(data, tmp_path, capsys):
    """VOC2012's test JPEGImages hold the other tasks' images too: --image_ids picks the segmentation
    ones (ImageSets/Segmentation/test.txt); the count is checked against the list."""
    ids_file = tmp_path / "test.txt"
    ids_file.write_text("2007_000002\n2007_000000\n\n")
    output_dir = str(tmp_path / "out")
    run_main(vis_cli, checkpoint=data["voc_workdir"], image_dir=data["voc_images"], image_ids=str(ids_file),
             output_dir=output_dir, submission="voc2012", voc_competition="comp5")
    assert "Wrote 2 voc2012 submission files" in capsys.readouterr().out
    folder = os.path.join("results", "VOC2012", "Segmentation", "comp5_test_cls")
    expected = [os.path.join(folder, "2007_000000.png"), os.path.join(folder, "2007_000002.png")]
    assert _files(output_dir) == sorted(expected + ["voc2012_comp5_test_cls.tar.gz"])
    with tarfile.open(os.path.join(output_dir, "voc2012_comp5_test_cls.tar.gz")) as tar:
        assert sorted(tar.getnames()) == expected

    ids_file.write_text("2007_000002\n2008_999999\n")
    with pytest.raises(SystemExit) as exit_info:
        run_main(vis_cli, checkpoint=data["voc_workdir"], image_dir=data["voc_images"],
                 image_ids=str(ids_file), output_dir=str(tmp_path / "out2"), submission="voc2012")
    assert "no image for 1 of the 2 listed ids (e.g. 2008_999999)" in str(exit_info.value.code)


def _cityscapes_submission(data, output_dir, **input_flags):
    run_main(vis_cli, checkpoint=data["cityscapes_workdir"], dataset="cityscapes", output_dir=output_dir,
             submission="cityscapes", **input_flags, **PROTOCOL)
    return {name: np.asarray(_png(os.path.join(output_dir, "results", name)))
            for name in os.listdir(os.path.join(output_dir, "results"))}


def test_cityscapes_submission_is_label_ids_at_full_size_named_as_the_script_matches(data, capsys):
    output_dir = str(data["root"] / "cityscapes_submission")
    written = _cityscapes_submission(data, output_dir, image_dir=data["cityscapes_images"])
    archive = os.path.join(output_dir, "cityscapes_results.zip")
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"Wrote 3 cityscapes submission files to {os.path.join(output_dir, 'results')}/; upload {archive}")
    expected = sorted(f"{image_id}.png" for image_id in CITYSCAPES_IDS)
    assert sorted(written) == expected  # one flat folder

    vis_dir = str(data["root"] / "cityscapes_vis")
    run_main(vis_cli, checkpoint=data["cityscapes_workdir"], dataset="cityscapes", output_dir=vis_dir,
             image_dir=data["cityscapes_images"], cityscapes_label_ids=True, **PROTOCOL)
    seen = set()
    for image_id, (height, width) in CITYSCAPES_IDS.items():
        path = os.path.join(output_dir, "results", f"{image_id}.png")
        assert _png(path).mode == "L" and _png(path).size == (width, height), image_id
        city = image_id.split("_")[0]
        vis_index = np.asarray(_png(os.path.join(vis_dir, "index", city, f"{image_id}_leftImg8bit.png")))
        np.testing.assert_array_equal(written[f"{image_id}.png"], vis_index)
        seen |= set(np.unique(vis_index).tolist())
        # cityscapesScripts' getPrediction: exactly one <city>_<seq>_<frame>*.png for the ground truth.
        assert fnmatch.filter(written, "_".join(image_id.split("_")) + "*.png") == [f"{image_id}.png"]
    assert len(seen) > 1 and seen <= set(LABEL_IDS)  # label ids (7 road, 26 car, ...), not train ids

    with zipfile.ZipFile(archive) as zip_file:
        assert sorted(zip_file.namelist()) == [f"results/{name}" for name in expected]
        for name in expected:
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(zip_file.read(f"results/{name}")))),
                                  written[name])

    # The converted split (image/filename = <city>_<seq>_<frame>) gives the very same submission.
    from_records = _cityscapes_submission(data, str(data["root"] / "cityscapes_records_submission"),
                                          vis_pattern=data["cityscapes_pattern"])
    assert sorted(from_records) == expected
    for name in expected:
        np.testing.assert_array_equal(from_records[name], written[name])


def test_a_used_output_dir_is_refused_before_the_model_loads_and_from_the_console_script(data, tmp_path):
    stale = tmp_path / "results" / "old.png"
    stale.parent.mkdir()
    stale.write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_tf.cli.vis", f"--checkpoint={tmp_path / 'no_run'}",
         f"--vis_pattern={data['voc_pattern']}", f"--output_dir={tmp_path}", "--submission=voc2012"],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"deeplab-vis: {tmp_path / 'results'} already holds 1 files (e.g. results/old.png); the archive "
        "must hold this run's predictions only: give an empty --output_dir or delete that folder.")


def test_two_images_with_one_id_and_names_the_server_cannot_match(data, tmp_path):
    images = tmp_path / "images"
    for city in ("berlin", "bonn"):
        (images / city).mkdir(parents=True)
        Image.fromarray(fake.random_image(np.random.default_rng(0), 17, 17)).save(
            images / city / "berlin_000000_000019_leftImg8bit.png")
    with pytest.raises(SystemExit) as exit_info:
        run_main(vis_cli, checkpoint=data["cityscapes_workdir"], dataset="cityscapes", image_dir=str(images),
                 output_dir=str(tmp_path / "out"), submission="cityscapes")
    message = str(exit_info.value.code)
    assert "bonn/berlin_000000_000019_leftImg8bit and berlin/berlin_000000_000019_leftImg8bit" in message
    assert "one prediction per image id" in message

    shutil.rmtree(images / "bonn")
    os.rename(images / "berlin" / "berlin_000000_000019_leftImg8bit.png", images / "berlin" / "street.png")
    with pytest.raises(SystemExit) as exit_info:
        run_main(vis_cli, checkpoint=data["cityscapes_workdir"], dataset="cityscapes", image_dir=str(images),
                 output_dir=str(tmp_path / "out2"), submission="cityscapes")
    assert "berlin/street: not a Cityscapes image name" in str(exit_info.value.code)


def test_file_count_differing_from_the_input_is_an_error_naming_both(tmp_path):
    predictions = [(image_id, None, np.zeros((5, 7), np.int32)) for image_id in VOC_IDS[:2]]
    with pytest.raises(DataError, match=r"holds 2 predictions but the input holds 3 images"):
        submission.write_submission(predictions, str(tmp_path), "voc2012", expected=3)
    assert not os.path.exists(submission.archive_path(str(tmp_path), "voc2012"))


def test_submission_flag_mistakes_are_usage_errors(data, tmp_path):
    common = dict(checkpoint=data["voc_workdir"], vis_pattern=data["voc_pattern"], output_dir=str(tmp_path))
    for flag_values, expected in (
            (dict(common, submission="cityscapes"), "--submission=cityscapes needs a cityscapes model"),
            (dict(common, submission="voc2012", max_images=2), "--max_images"),
            (dict(common, submission="voc2012", colormap="pascal"), "drop --palette and --colormap"),
            (dict(common, image_ids=str(tmp_path / "ids.txt")), "give --image_dir too")):
        with pytest.raises(app.UsageError, match=expected):
            run_main(vis_cli, **flag_values)
