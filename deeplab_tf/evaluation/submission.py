"""Test-server submissions (deeplab-vis --submission): the files and archive each benchmark's server takes.

PASCAL VOC 2012 (devkit documentation, segmentation task, submission of results): one indexed PNG per
test image, ``results/VOC2012/Segmentation/<competition>_test_cls/<image id>.png``, with the VOC
palette, values 0..20, at the image's size; competition comp5 is "trained on VOC2012 data only",
comp6 "trained on any data but the test set" (the paper's trainaug adds SBD: comp6). The evaluation
server takes a gzipped tar of ``results/``.

Cityscapes (cityscapesScripts' evalPixelLevelSemanticLabeling, which the server runs): one 8-bit
greyscale PNG of label ids (7 road, 26 car, ...: not the 19 train ids) per image, at full resolution,
found by name anywhere below the results root: ``<city>_<seq>_<frame>*.png``, exactly one per image.
Written here as a flat folder of ``<city>_<seq>_<frame>.png`` and a zip of it.
"""

import os
import re
import tarfile
import zipfile

from deeplab_tf import visualization
from deeplab_tf.data.errors import DataError

SERVERS = ("voc2012", "cityscapes")
VOC_COMPETITIONS = ("comp6", "comp5")
NUM_CLASSES = {"voc2012": 21, "cityscapes": 19}
RESULTS = "results"  # the folder the archives hold
_CITYSCAPES_ID = re.compile(r"^(.+?_\d{6}_\d{6})(?:_|$)")  # <city>_<seq>_<frame>, cities may hold '-'


def results_dir(output_dir, server, competition="comp6"):
    """The folder the server's PNGs go to, under `output_dir`."""
    if server == "voc2012":
        return os.path.join(output_dir, RESULTS, "VOC2012", "Segmentation", f"{competition}_test_cls")
    return os.path.join(output_dir, RESULTS)


def archive_path(output_dir, server, competition="comp6"):
    """The archive to upload: a .tar.gz of results/ for VOC, a .zip for Cityscapes."""
    if server == "voc2012":
        return os.path.join(output_dir, f"voc2012_{competition}_test_cls.tar.gz")
    return os.path.join(output_dir, "cityscapes_results.zip")


def file_name(server, name):
    """The PNG name the server matches for the image `name` (a record's filename or a path relative
    to --image_dir, without extension).

    Raises:
        DataError: a Cityscapes name without <city>_<seq>_<frame>.
    """
    base = os.path.basename(name)
    if server == "voc2012":
        return base + ".png"
    match = _CITYSCAPES_ID.match(base)
    if not match:
        raise DataError(f"{name}: not a Cityscapes image name; the server matches predictions by "
                        "<city>_<seq>_<frame> (e.g. berlin_000000_000019_leftImg8bit.png): segment "
                        "leftImg8bit/test or a converted Cityscapes split.")
    return match.group(1) + ".png"


def _written_files(output_dir):
    """Paths (relative to `output_dir`) of every file below `output_dir`/results, sorted."""
    root = os.path.join(output_dir, RESULTS)
    return sorted(os.path.relpath(os.path.join(folder, name), output_dir)
                  for folder, _, names in os.walk(root) for name in names)


def check_empty(output_dir):
    """Refuses an `output_dir` whose results/ already holds files: the archive would carry them.

    Raises:
        DataError: naming the folder and how many files it holds.
    """
    stale = _written_files(output_dir)
    if stale:
        raise DataError(f"{os.path.join(output_dir, RESULTS)} already holds {len(stale)} files (e.g. "
                        f"{stale[0]}); the archive must hold this run's predictions only: give an "
                        "empty --output_dir or delete that folder.")


def write_png(path, server, label):
    """One prediction in the server's format: VOC indexed PNG (VOC palette), Cityscapes label ids."""
    image = visualization.index_image(label.astype("uint8"), "pascal",
                                      train_id_to_label_id=server == "cityscapes")
    image.save(path)


def pack(output_dir, server, competition="comp6"):
    """Writes the archive of results/ (files only, paths relative to `output_dir`); returns its path."""
    path = archive_path(output_dir, server, competition)
    files = _written_files(output_dir)
    if server == "voc2012":
        with tarfile.open(path, "w:gz") as archive:
            for name in files:
                archive.add(os.path.join(output_dir, name), arcname=name, recursive=False)
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in files:
                archive.write(os.path.join(output_dir, name), arcname=name)
    return path


def write_submission(predictions, output_dir, server, *, expected, competition="comp6"):
    """Writes each prediction as the server wants it, checks the count and packs the archive.

    Args:
        predictions: iterable of (name, image, label map [H, W] of train ids), e.g.
            `visualizer.predictions`.
        output_dir: root of results/ and of the archive; results/ must be empty (`check_empty`).
        server: "voc2012" or "cityscapes".
        expected: number of images in the input split: every one must give one file.
        competition: VOC's comp6 (outside data allowed) or comp5 (VOC2012 data only).

    Returns:
        (number of files written, archive path).

    Raises:
        DataError: two images map to one file name, or the file count differs from `expected`.
    """
    folder = results_dir(output_dir, server, competition)
    os.makedirs(folder, exist_ok=True)
    sources = {}
    for name, _, label in predictions:
        target = file_name(server, name)
        if target in sources:
            raise DataError(f"{name} and {sources[target]} both give {os.path.join(folder, target)}; "
                            "the server takes one prediction per image id: segment each image once.")
        sources[target] = name
        write_png(os.path.join(folder, target), server, label)
    written = len(_written_files(output_dir))
    if written != expected:
        raise DataError(f"{folder} holds {written} predictions but the input holds {expected} images; "
                        "the server needs one per image: check the split or image folder and run again.")
    return written, pack(output_dir, server, competition)
