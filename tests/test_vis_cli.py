"""deeplab-vis: index/colour/overlay PNGs at each image's size from a folder (any pixel mode) or a
TFRecord split, user palettes, and clear messages for bad input."""

import json
import os
import subprocess

import numpy as np
import pytest
from absl import app
from PIL import Image, ImageOps

from deeplab_tf import visualization
from deeplab_tf.cli import vis as vis_cli
from deeplab_tf.data import fake
from deeplab_tf.evaluation import visualizer
from eval_utils import IMAGE_SIZES, make_voc_val, make_workdir, run_main, split_with_a_fault

RNG = np.random.default_rng(3)
RGB = fake.random_image(RNG, 33, 41)
GREY = RGB[..., 1]
RGBA = np.dstack([fake.random_image(RNG, 25, 31), np.full((25, 31), 7, np.uint8)])
PALETTE_INDICES = RNG.integers(0, 4, (21, 30)).astype(np.uint8)
PALETTE = np.array([[0, 0, 0], [200, 10, 10], [10, 200, 10], [10, 10, 200]], np.uint8)


def _palette_image():
    image = Image.fromarray(PALETTE_INDICES)
    image.putpalette(PALETTE.ravel().tolist())  # 'L' -> 'P' with the same indices
    return image


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    Image.fromarray(RGB).save(images / "photo.jpg", quality=95)
    Image.fromarray(GREY).save(images / "grey.png")
    Image.fromarray(RGBA).save(images / "alpha.png")
    _palette_image().save(images / "sub" / "palette.png", transparency=0)
    (images / "notes.txt").write_text("not an image")
    workdir = str(root / "run")
    make_workdir(workdir)
    return dict(root=root, images=str(images), workdir=workdir,
                pattern=make_voc_val(str(root / "voc")))


def test_any_pixel_mode_is_read_as_rgb(data):
    def read(name):
        return visualizer.read_rgb_image(os.path.join(data["images"], name))

    np.testing.assert_array_equal(read("grey.png"), np.stack([GREY] * 3, axis=-1))
    np.testing.assert_array_equal(read("alpha.png"), RGBA[..., :3])
    np.testing.assert_array_equal(read("sub/palette.png"), PALETTE[PALETTE_INDICES])
    assert read("photo.jpg").shape == (33, 41, 3)


def _written(output_dir, name):
    return {kind: Image.open(os.path.join(output_dir, kind, name + ".png"))
            for kind in ("index", "color", "overlay")}


def test_folder_of_images_gives_index_color_and_overlay_pngs_at_their_sizes(data, capsys):
    output_dir = str(data["root"] / "out_folder")
    run_main(vis_cli, checkpoint=data["workdir"], image_dir=data["images"], output_dir=output_dir)
    assert "Wrote 4 predictions" in capsys.readouterr().out
    colormap = visualization.get_colormap("pascal")
    for name, (height, width) in (("photo", (33, 41)), ("grey", (33, 41)), ("alpha", (25, 31)),
                                  ("sub/palette", (21, 30))):
        written = _written(output_dir, name)
        assert all(image.size == (width, height) for image in written.values()), name
        assert written["index"].mode == "P"
        index = np.asarray(written["index"])
        assert index.max() < 21
        np.testing.assert_array_equal(np.asarray(written["color"]), colormap[index])
        assert written["overlay"].mode == "RGB"
    assert not os.path.exists(os.path.join(output_dir, "index", "notes.png"))


def test_tfrecord_split_at_output_stride_8_with_a_palette_file(data):
    palette = [[i, 255 - i, 0] for i in range(0, 210, 10)]
    palette_path = data["root"] / "palette.json"
    palette_path.write_text(json.dumps(palette))
    output_dir = str(data["root"] / "out_split")
    run_main(vis_cli, checkpoint=data["workdir"], vis_pattern=data["pattern"],
             output_dir=output_dir, palette=str(palette_path), eval_output_stride=8,
             max_images=2)
    names = sorted(os.listdir(os.path.join(output_dir, "color")))
    assert len(names) == 2 and all(name.startswith("2007_") for name in names)
    for name in names:
        written = _written(output_dir, name[:-len(".png")])
        assert written["color"].size[::-1] in IMAGE_SIZES
        index = np.asarray(written["index"])
        np.testing.assert_array_equal(np.asarray(written["color"]),
                                      np.asarray(palette, np.uint8)[index])


def _fails(**flag_values):
    with pytest.raises(SystemExit) as exit_info:
        run_main(vis_cli, **flag_values)
    return str(exit_info.value.code)


def test_bad_images_name_the_file(data, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    message = _fails(checkpoint=data["workdir"], image_dir=str(tmp_path),
                     output_dir=str(tmp_path / "out"))
    assert "broken.jpg" in message and "corrupt" in message

    empty = tmp_path / "empty"
    empty.mkdir()
    message = _fails(checkpoint=data["workdir"], image_dir=str(empty), output_dir=str(tmp_path))
    assert str(empty) in message and "no image" in message

    Image.fromarray(RGB).save(empty / "a.png")
    Image.fromarray(RGB).save(empty / "a.jpg")
    message = _fails(checkpoint=data["workdir"], image_dir=str(empty), output_dir=str(tmp_path))
    assert "a.png" in message and "rename" in message


def test_checkpoint_and_dataset_mismatch_and_missing_checkpoint(data, tmp_path):
    message = _fails(checkpoint=data["workdir"], image_dir=data["images"],
                     output_dir=str(tmp_path), dataset="cityscapes")
    assert "21 classes" in message and "19" in message
    assert "--dataset" in message and "--num_classes" not in message  # deeplab-vis has no --num_classes
    message = _fails(checkpoint=str(tmp_path / "nothing"), image_dir=data["images"],
                     output_dir=str(tmp_path))
    assert str(tmp_path / "nothing") in message


def test_bad_flags_are_usage_errors(data, tmp_path):
    common = dict(checkpoint=data["workdir"], output_dir=str(tmp_path))
    for flag_values, expected in (
            ({**common}, "exactly one of --image_dir"),
            ({**common, "image_dir": data["images"], "vis_pattern": data["pattern"]},
             "exactly one of --image_dir"),
            ({**common, "image_dir": data["images"], "cityscapes_label_ids": True},
             "--dataset=cityscapes"),
            ({**common, "image_dir": data["images"], "palette": "[[0, 0]]"}, "--palette"),
            ({**common, "image_dir": data["images"], "palette": "[[10, 20, 30], [0, 128, 0]]"},
             "--palette: the palette has 2 colours for 21 classes"),
            ({**common, "image_dir": data["images"], "palette": "pascal", "colormap": "ade20k"},
             "at most one"),
            ({**common, "image_dir": data["images"], "window_size": "65,65,3"},
             "--window_size"),
            ({**common, "image_dir": data["images"], "eval_scales": "1.0,nan"}, "--eval_scales"),
            ({**common, "image_dir": data["images"], "eval_scales": "inf"}, "--eval_scales")):
        with pytest.raises(app.UsageError, match=expected):
            run_main(vis_cli, **flag_values)


def _console_vis(*flags):
    return subprocess.run(["deeplab-vis", *flags], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600)


def test_output_dir_and_output_stride_mistakes_stop_the_console_script_in_one_line(data, tmp_path):
    """An --output_dir that is a file is named before the model loads (the checkpoint given does not exist:
    loading it first would say so); it used to end in a NotADirectoryError traceback after the first image.
    An --eval_output_stride that is not a power of two from 4 is a usage error (0 meant the trained one)."""
    (tmp_path / "a_file").write_text("")
    result = _console_vis(f"--checkpoint={tmp_path / 'no_such_run'}", f"--image_dir={data['images']}",
                          f"--output_dir={tmp_path / 'a_file'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"deeplab-vis: --output_dir={tmp_path / 'a_file'}: cannot create it or write in it (a file of that name "
        "exists): choose a folder you can write to, or fix its permissions.")
    for stride in ("7", "0", "-8"):
        result = _console_vis(f"--checkpoint={data['workdir']}", f"--image_dir={data['images']}",
                              f"--output_dir={tmp_path / 'out'}", f"--eval_output_stride={stride}")
        assert result.returncode == 1 and "--eval_output_stride: a power of two from 4" in result.stderr, stride
    assert not (tmp_path / "out").exists()


def test_an_output_dir_inside_the_image_dir_is_not_segmented_again(data, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(RGB).save(images / "photo.png")
    Image.fromarray(GREY).save(images / "grey.png")
    for _ in range(2):  # the second run finds the first run's PNGs under images/vis
        run_main(vis_cli, checkpoint=data["workdir"], image_dir=str(images), output_dir=str(images / "vis"))
    assert sorted(os.listdir(images / "vis" / "index")) == ["grey.png", "photo.png"]


def test_an_image_larger_than_the_eval_crop_is_named_with_the_canvas_it_gets(data, tmp_path, capsys):
    """The fallback the served model takes too: sides longer than the crop grow to output_stride * k + 1."""
    run_main(vis_cli, checkpoint=data["workdir"], image_dir=data["images"], output_dir=str(tmp_path),
             eval_crop_size="30,40")
    lines = [line for line in capsys.readouterr().out.splitlines() if "larger than the eval crop" in line]
    assert lines == [f"deeplab-vis: image '{name}' is 33x41, larger than the eval crop 30x40 (--eval_crop_size): "
                     "segmented on a 33x49 canvas (sides grown to output_stride * k + 1)" for name in ("grey", "photo")]


def test_image_ids_with_extensions_and_macos_metadata_files(data, tmp_path):
    """--image_ids lines written with the extension name the same images; macOS's "._<name>" files beside
    the images (metadata, not pictures) are not read."""
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(RGB).save(images / "photo.png")
    Image.fromarray(GREY).save(images / "grey.png")
    (images / "._photo.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    (tmp_path / "ids.txt").write_text("photo.png\ngrey\n")
    run_main(vis_cli, checkpoint=data["workdir"], image_dir=str(images), image_ids=str(tmp_path / "ids.txt"),
             output_dir=str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out" / "index")) == ["grey.png", "photo.png"]


def test_a_checkpoint_file_names_its_checkpoint(data, tmp_path):
    """--checkpoint=<prefix>.index or .data-00000-of-00001 (what a file browser offers) loads that checkpoint."""
    prefix = os.path.join(data["workdir"], "checkpoints", "ckpt-5")
    outputs = {}
    for checkpoint in (data["workdir"], prefix + ".index", prefix + ".data-00000-of-00001"):
        outputs[checkpoint] = str(tmp_path / os.path.basename(checkpoint))
        run_main(vis_cli, checkpoint=checkpoint, image_dir=data["images"], output_dir=outputs[checkpoint],
                 max_images=1)
    first, *others = outputs.values()
    for other in others:
        np.testing.assert_array_equal(np.asarray(_written(other, "alpha")["index"]),
                                      np.asarray(_written(first, "alpha")["index"]))


def test_phone_jpegs_are_segmented_and_written_upright(data, tmp_path):
    """A JPEG stored sideways with EXIF orientation 6: outputs have the size viewers show."""
    images = tmp_path / "phone"
    images.mkdir()
    upright = fake.random_image(RNG, 30, 44)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to show
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(images / "phone.jpg",
                                                                      quality=95, exif=exif)
    with Image.open(images / "phone.jpg") as jpeg:
        np.testing.assert_array_equal(visualizer.read_rgb_image(str(images / "phone.jpg")),
                                      np.asarray(ImageOps.exif_transpose(jpeg)))
    output_dir = str(tmp_path / "out")
    run_main(vis_cli, checkpoint=data["workdir"], image_dir=str(images), output_dir=output_dir)
    written = _written(output_dir, "phone")
    assert all(image.size == (44, 30) for image in written.values())
    # The overlay is drawn on the upright picture: its darkest/brightest pattern follows it.
    overlay = np.asarray(written["overlay"]).astype(float).mean(axis=-1)
    assert np.corrcoef(overlay.ravel(), upright.mean(axis=-1).ravel())[0, 1] > 0.5


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty (0 bytes)"),
    (b"meeting notes, saved with the wrong extension\n", "not an image file Pillow can read"),
])
def test_empty_and_non_image_files_name_the_file_and_only_real_flags(data, tmp_path, content,
                                                                     message):
    (tmp_path / "notes.png").write_bytes(content)
    text = _fails(checkpoint=data["workdir"], image_dir=str(tmp_path),
                  output_dir=str(tmp_path / "out"))
    assert text.startswith(f"deeplab-vis: {tmp_path / 'notes.png'}: {message}")
    assert "BytesIO" not in text
    assert "--" not in text  # deeplab-vis has no flag that skips bad files


def test_segment_from_python_equals_the_vis_pngs_for_paths_pil_images_and_arrays(data):
    """deeplab_tf.segment on a path, a PIL image or a numpy array of odd sizes gives deeplab-vis's index
    PNG, also with scales, flip and the eval crop; probabilities are at the image's size and their argmax
    is the label map."""
    import deeplab_tf

    options = dict(eval_scales="0.75,1.0", flip=True, eval_crop_size="49,49")
    output_dir = str(data["root"] / "out_segment")
    run_main(vis_cli, checkpoint=data["workdir"], image_dir=data["images"], output_dir=output_dir, **options)
    model = deeplab_tf.load_model(data["workdir"])
    kwargs = dict(scales=(0.75, 1.0), flip=True, eval_crop_size=(49, 49))
    for name in ("photo", "grey", "alpha", "sub/palette"):
        expected = np.asarray(Image.open(os.path.join(output_dir, "index", name + ".png")))
        path = next(p for p in (data["root"] / "images" / f"{name}{ext}" for ext in (".jpg", ".png")) if p.exists())
        # A PIL image arrives decoded: PNGs decode alike everywhere, but Pillow's JPEG decoder differs
        # from TensorFlow's (which deeplab-vis and the records use) by a grey level here and there.
        pil = [Image.open(path)] if path.suffix == ".png" else []
        for image in (str(path), path, *pil, visualizer.read_rgb_image(str(path))):
            labels = deeplab_tf.segment(model, image, **kwargs)
            assert labels.dtype == np.int32, name
            np.testing.assert_array_equal(labels, expected, err_msg=f"{name}: {type(image).__name__}")
    with Image.open(data["root"] / "images" / "photo.jpg") as photo:
        np.testing.assert_array_equal(deeplab_tf.segment(model, photo, **kwargs),
                                      deeplab_tf.segment(model, np.asarray(photo), **kwargs))
    probabilities = deeplab_tf.segment(model, RGB, output="probabilities", **kwargs)
    assert probabilities.shape == RGB.shape[:2] + (21,)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(-1), deeplab_tf.segment(model, RGB, **kwargs))
    # Greyscale arrays and float arrays in 0..255 are images too.
    np.testing.assert_array_equal(deeplab_tf.segment(model, GREY), deeplab_tf.segment(model, np.dstack([GREY] * 3)))
    np.testing.assert_array_equal(deeplab_tf.segment(model, RGB.astype(np.float32)), deeplab_tf.segment(model, RGB))


@pytest.mark.parametrize("image, message", [
    (np.zeros((2, 9, 9, 3), np.uint8), "for a batch, call deeplab_tf.predict"),
    (np.ones((9, 9, 3), np.float32) * 2.0 - 3.0, "scale images in 0..1 by 255"),
    ([[0, 1]], "a file path, a PIL image or a numpy array"),
])
def test_segment_refuses_what_is_not_one_image(data, image, message):
    import deeplab_tf

    model = deeplab_tf.load_model(data["workdir"])
    with pytest.raises((ValueError, TypeError), match=message):
        deeplab_tf.segment(model, image)


def test_a_truncated_shard_is_named_in_one_line(data, tmp_path):
    """The installed deeplab-vis on a split whose shard was cut short: one line naming the shard and the fix."""
    pattern, shard = split_with_a_fault(data["pattern"], tmp_path / "split", "truncated")
    result = subprocess.run(["deeplab-vis", f"--checkpoint={data['workdir']}", f"--vis_pattern={pattern}",
                             f"--output_dir={tmp_path / 'out'}"],
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"deeplab-vis: {shard}: record ") and "cannot be read (truncated record" in last, last
    assert last.endswith("copy or convert it again.") and "function_node" not in last
    assert "Traceback" not in result.stderr


def test_installed_console_script_writes_what_the_library_writes(data, tmp_path):
    """The installed deeplab-vis lets oneDNN keep laid-out weights in its own process
    (TF_ONEDNN_ASSUME_FROZEN_WEIGHTS); images of four sizes at two scales with flips must come out as
    vis writes them in this process, which has it unset."""
    assert "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS" not in os.environ
    options = dict(checkpoint=data["workdir"], image_dir=data["images"], eval_scales="0.75,1.0")
    console_dir, library_dir = str(tmp_path / "console"), str(tmp_path / "library")
    result = subprocess.run(["deeplab-vis", *(f"--{k}={v}" for k, v in options.items()), "--flip",
                             f"--output_dir={console_dir}"],
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    run_main(vis_cli, output_dir=library_dir, flip=True, **options)
    for name in ("photo", "grey", "alpha", "sub/palette"):
        np.testing.assert_array_equal(np.asarray(_written(console_dir, name)["index"]),
                                      np.asarray(_written(library_dir, name)["index"]), err_msg=name)
