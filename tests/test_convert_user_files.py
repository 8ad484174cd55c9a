"""Real-world image files through the converter scripts, run as users run them: phone JPEGs with an
EXIF orientation, 16-bit and palette PNGs, odd sizes, two images with one name, empty and non-image
files, an output folder that cannot be written, and a multi-split run that fails in its last split.
"""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from deeplab_tf.data import fake, image_io, tfrecord
from deeplab_tf.data.registry import DatasetInfo
from deeplab_tf.data.sources import folder
from deeplab_tf.data.validation import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWO_CLASSES = DatasetInfo(name="two", num_classes=2)
_ORIENTATION = 0x0112
# EXIF orientation -> how the stored pixels are turned from the upright picture a viewer shows.
_STORED = {6: lambda a: np.rot90(a, 1), 8: lambda a: np.rot90(a, -1)}
GRADIENT_16 = np.linspace(0, 65535, 31 * 47).round().astype(np.uint16).reshape(31, 47)


def upright_photo_and_mask(height, width):
    """A picture with a bright object on a dark left / mid-grey right background, and its mask
    drawn on the picture as viewers show it."""
    mask = np.zeros((height, width), np.uint8)
    mask[2:height // 2, width // 2:width - 3] = 1
    photo = np.full((height, width, 3), 60, np.uint8)
    photo[:, width // 3:] = 140
    photo[mask == 1] = (250, 230, 40)
    return photo, mask


def save_phone_jpeg(path, upright, orientation):
    """Stores `upright` sideways with the EXIF tag that tells viewers to turn it back."""
    exif = Image.Exif()
    exif[_ORIENTATION] = orientation
    Image.fromarray(np.ascontiguousarray(_STORED[orientation](upright))).save(
        path, quality=95, exif=exif)


def run_script(script, *flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, f"datasets/{script}.py", *flags], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def read_records(output_dir, split="train"):
    """{filename: (stored image bytes, decoded uint8 image, label)} of a converted split."""
    out = {}
    for serialized in tf.data.TFRecordDataset(sorted(glob.glob(f"{output_dir}/{split}-*"))):
        features = tf.io.parse_single_example(serialized, {
            tfrecord.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string)})
        example = tfrecord.parse_example(serialized)
        out[example["filename"].numpy().decode()] = (features[tfrecord.IMAGE_ENCODED].numpy(),
                                                     example["image"].numpy(),
                                                     example["label"].numpy())
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One build_folder_data run over a folder of the kinds of files cameras and tools write."""
    root = tmp_path_factory.mktemp("user_files")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    expected = {}
    for name, (height, width), orientation in (("square6", (36, 36), 6), ("wide6", (30, 44), 6),
                                               ("wide8", (29, 43), 8)):
        photo, mask = upright_photo_and_mask(height, width)
        save_phone_jpeg(images / f"{name}.jpg", photo, orientation)
        fake.save_image(str(masks / f"{name}.png"), mask)
        expected[name] = (photo, mask)
    Image.fromarray(GRADIENT_16).save(images / "grey16.png")  # mode I;16
    fake.save_image(str(masks / "grey16.png"), (GRADIENT_16 > 30000).astype(np.uint8))
    palette_indices = np.arange(33 * 17).reshape(33, 17) % 3
    palette_image = Image.fromarray(palette_indices.astype(np.uint8))
    palette_image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    palette_image.save(images / "palette.png")
    fake.save_image(str(masks / "palette.png"), (palette_indices == 1).astype(np.uint8))
    photo, mask = upright_photo_and_mask(27, 35)
    fake.save_image(str(images / "plain.jpg"), photo, quality=95)
    fake.save_image(str(masks / "plain.png"), mask)
    run = run_script("build_folder_data", f"--image_dir={images}", f"--mask_dir={masks}",
                     "--num_classes=2", f"--output_dir={root / 'out'}", "--num_shards=2")
    return dict(run=run, records=read_records(root / "out"), expected=expected, root=root,
                palette=palette_indices, plain=photo)


def test_the_folder_converts(converted):
    assert converted["run"].returncode == 0, converted["run"].stderr
    assert sorted(converted["records"]) == ["grey16", "palette", "plain", "square6", "wide6",
                                           "wide8"]


@pytest.mark.parametrize("name", ["square6", "wide6", "wide8"])
def test_exif_rotated_phone_jpegs_are_stored_upright_with_their_masks_aligned(converted, name):
    encoded, image, label = converted["records"][name]
    photo, mask = converted["expected"][name]
    assert image.shape == photo.shape  # the size a viewer shows, not the stored one
    np.testing.assert_array_equal(label, mask)
    # Stored as a lossless PNG of the JPEG's upright decode, the picture the mask was drawn on.
    assert encoded.startswith(b"\x89PNG")
    with Image.open(converted["root"] / "images" / f"{name}.jpg") as jpeg:
        np.testing.assert_array_equal(image, np.asarray(ImageOps.exif_transpose(jpeg)))
    assert np.abs(image.astype(int) - photo).mean() < 4
    assert image[mask == 1, 0].min() > 200 and image[mask == 0, 0].max() < 200


def test_an_upright_jpeg_keeps_its_original_bytes(converted):
    encoded, image, label = converted["records"]["plain"]
    with open(converted["root"] / "images" / "plain.jpg", "rb") as f:
        assert encoded == f.read()
    assert image.shape == converted["plain"].shape


def test_16_bit_greyscale_is_scaled_to_8_bits_not_clipped(converted):
    _, image, label = converted["records"]["grey16"]
    reference = np.round(GRADIENT_16.astype(np.float64) * 255 / 65535).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], reference)
    np.testing.assert_array_equal(label, GRADIENT_16 > 30000)


def test_palette_png_is_stored_in_its_colours(converted):
    _, image, _ = converted["records"]["palette"]
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    np.testing.assert_array_equal(image, colours[converted["palette"]])


def test_32_bit_integer_images_outside_16_bits_are_refused(tmp_path):
    image = Image.fromarray(np.full((4, 5), 70000, np.int32))
    with pytest.raises(DataError, match=r"x\.tif: 32-bit integer pixels in \[70000, 70000\]"):
        image_io.to_rgb(image, path=str(tmp_path / "x.tif"))


def test_the_report_says_first_which_images_have_no_labelled_pixel(tmp_path):
    """Masks saved inverted (or through a wrong value map) become all ignore label: such images train on nothing, and
    deeplab-train refuses a start of them. build_folder_data's report says so before anything else."""
    masks = {"a": np.ones((20, 24), np.uint8), "b": np.full((20, 24), 255, np.uint8),
             "c": np.full((18, 22), 255, np.uint8)}
    image_dir, mask_dir, _ = fake.make_folder(str(tmp_path), masks=masks)
    run = run_script("build_folder_data", f"--image_dir={image_dir}", f"--mask_dir={mask_dir}", "--num_classes=2",
                     f"--output_dir={tmp_path / 'out'}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines()[0] == (
        "warning: train: 2 of 3 images have no labelled pixel (every mask pixel is the ignore label 255), e.g. b, c: "
        "masks saved inverted, a wrong value map or a wrong ignore label? deeplab-train refuses records with nothing "
        "labelled in its first batches.")
    assert run.stdout.splitlines()[1].startswith("train: 3 records in 3 shards")


def test_two_images_with_one_name_stop_the_run_naming_both(tmp_path):
    image_dir, mask_dir, images = fake.make_folder(
        str(tmp_path), masks={n: np.ones((20, 24), np.uint8) for n in ("a", "b")})
    fake.save_image(os.path.join(image_dir, "a.png"), images["a"])
    output = tmp_path / "out"
    run = run_script("build_folder_data", f"--image_dir={image_dir}", f"--mask_dir={mask_dir}",
                     "--num_classes=2", f"--output_dir={output}")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert os.path.join(image_dir, "a.jpg") in last and os.path.join(image_dir, "a.png") in last
    assert "share the name 'a'" in last
    assert glob.glob(f"{output}/*") == []
    # With skip_bad the pair is skipped and reported, never silently reduced to one image.
    summary = folder.convert_folder(image_dir, mask_dir, str(output), info=TWO_CLASSES,
                                    skip_bad=True)
    split = summary.splits["train"]
    assert split.records == 1
    assert [name for name, _ in split.skipped] == ["a"]
    assert "a.jpg and" in split.skipped[0][1]


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty (0 bytes)"),
    (b"just some notes, not a picture\n", "not an image file Pillow can read"),
])
def test_empty_and_non_image_files_are_named(tmp_path, content, message):
    image_dir, mask_dir, _ = fake.make_folder(
        str(tmp_path), masks={n: np.ones((20, 24), np.uint8) for n in ("a", "b")})
    os.remove(os.path.join(image_dir, "b.jpg"))
    with open(os.path.join(image_dir, "b.png"), "wb") as f:
        f.write(content)
    with pytest.raises(DataError) as error:
        folder.convert_folder(image_dir, mask_dir, str(tmp_path / "out"), info=TWO_CLASSES)
    text = str(error.value)
    assert text.startswith(os.path.join(image_dir, "b.png") + ": " + message)
    assert "BytesIO" not in text and "--skip_bad" in text


def _read_only_dir(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    path = tmp_path / "read_only"
    path.mkdir(mode=0o555)
    return str(path), "Permission denied"


def _under_a_file(tmp_path):
    (tmp_path / "a_file").write_text("")
    return str(tmp_path / "a_file" / "records"), "Not a directory"


@pytest.mark.parametrize("make", [_read_only_dir, _under_a_file])
def test_an_output_dir_that_cannot_be_written_stops_before_reading_data(tmp_path, make):
    output_dir, reason = make(tmp_path)
    # The image folder does not exist: reaching it would give another message.
    run = run_script("build_folder_data", f"--image_dir={tmp_path / 'missing'}",
                     f"--mask_dir={tmp_path}", "--num_classes=2", f"--output_dir={output_dir}")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"error: --output_dir={output_dir}: cannot create it or write in it ({reason}): choose a "
        "folder you can write to, or fix its permissions."]


def test_a_voc_run_failing_in_val_commits_no_split(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"2008_{i:06d}" for i in range(4)]
    fake.make_voc(str(tmp_path / "VOCdevkit"),
                  masks={i: fake.random_mask(rng, 30, 40, class_ids=[1, 2]) for i in ids},
                  splits={"train": ids[:2], "val": ids[2:]})
    with open(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{ids[3]}.jpg", "wb"):
        pass  # zero bytes
    output = tmp_path / "out"
    run = run_script("build_voc2012_data", f"--voc_root={tmp_path / 'VOCdevkit'}",
                     "--splits=train,val", f"--output_dir={output}")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith(
        f"error: {tmp_path / 'VOCdevkit' / 'VOC2012' / 'JPEGImages' / ids[3]}.jpg: the file is "
        "empty")
    assert os.listdir(output) == []  # no train shards, no staging folder
