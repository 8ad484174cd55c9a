"""deeplab-eval and the evaluator: exact streaming confusion matrix, JSON and TensorBoard outputs,
output strides 16 and 8, the evaluation loop, and clear messages for bad input."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app

from deeplab_tf.cli import eval as eval_cli
from deeplab_tf.data import eval_dataset, get_dataset_info, make_example
from deeplab_tf import workdir as workdir_lib
from deeplab_tf.evaluation import evaluator, inference
from eval_utils import IMAGE_SIZES, make_eval_data, make_workdir, run_main, split_with_a_fault

VOC = get_dataset_info("pascal_voc_seg")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_eval_data(tmp_path_factory.mktemp("eval"))


def numpy_confusion(labels, predictions, num_classes, ignore_label=255):
    valid = labels != ignore_label
    pairs = labels[valid].astype(np.int64) * num_classes + predictions[valid]
    return np.bincount(pairs, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def test_confusion_matrix_equals_numpy_over_predict_labels(data):
    options = dict(scales=(0.75, 1.0), flip=True)
    metrics = evaluator.evaluate(data["model"], data["pattern"], num_classes=21, **options)

    predict = tf.function(lambda images: inference.predict(data["model"], images, **options),
                          input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])
    expected = np.zeros([21, 21], np.int64)
    sizes = []
    for example in eval_dataset(data["pattern"]):
        labels = example["label"].numpy()
        predictions = predict(example["image"]).numpy()
        assert predictions.shape == labels.shape  # original resolution
        expected += numpy_confusion(labels, predictions, 21)
        sizes.append(labels.shape[1:])
    assert sorted(sizes) == sorted(IMAGE_SIZES)
    np.testing.assert_array_equal(metrics["confusion_matrix"], expected)
    assert metrics["num_images"] == 3
    assert metrics["num_pixels"] == expected.sum() > 0
    assert (expected.sum(axis=0) > 0).sum() >= 2  # a real test: several classes predicted
    union = expected.sum(0) + expected.sum(1) - np.diag(expected)
    assert metrics["mean_iou"] == pytest.approx(np.mean(np.diag(expected)[union > 0] / union[union > 0]))


def _summaries(directory):
    """{tag: {step: value}} of the TensorBoard events under `directory`."""
    values = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, {})[event.step] = float(
                    tf.make_ndarray(value.tensor))
    return values


def test_cli_at_output_stride_16_and_8_prints_table_and_writes_json_and_summaries(
        data, capsys):
    run_main(eval_cli, checkpoint=data["workdir"], eval_pattern=data["pattern"])
    out = capsys.readouterr()
    assert "aeroplane" in out.out and "tvmonitor" in out.out and "mIOU" in out.out
    assert "3/3 images" in out.err

    output_dir = os.path.join(data["workdir"], "eval_os16")  # the trained output stride
    with open(os.path.join(output_dir, "metrics-5.json")) as f:
        results = json.load(f)
    assert (results["step"], results["output_stride"], results["num_images"]) == (5, 16, 3)
    assert results["checkpoint"].endswith("ckpt-5")
    assert [c["name"] for c in results["per_class"]] == list(VOC.class_names)
    assert f"{100 * results['mean_iou']:.2f}" in out.out
    summaries = _summaries(output_dir)
    assert summaries["mean_iou"] == {5: pytest.approx(results["mean_iou"])}
    assert summaries["iou/background"][5] == pytest.approx(results["per_class"][0]["iou"])

    # Sliding 33x33 windows (the full-resolution Cityscapes set-up, in small) tile every image.
    run_main(eval_cli, checkpoint=data["workdir"], eval_pattern=data["pattern"],
             eval_output_stride=8, window_size=33)
    with open(os.path.join(data["workdir"], "eval_os8", "metrics-5.json")) as f:
        at_8 = json.load(f)
    assert (at_8["output_stride"], at_8["window_size"]) == (8, [33, 33])
    assert at_8["num_pixels"] == results["num_pixels"]
    # Same weights, finer features: the predictions (and so the matrices) are not identical.
    assert at_8["confusion_matrix"] != results["confusion_matrix"]


def test_evaluation_loop_evaluates_each_new_checkpoint_then_times_out(data):
    workdir = str(data["root"] / "running")
    shutil.copytree(data["workdir"], workdir)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=data["model"]),
                                         os.path.join(workdir, "checkpoints"), max_to_keep=3)
    loop = evaluator.evaluate_new_checkpoints(
        workdir, data["pattern"], timeout_secs=1, dataset_info=VOC, max_images=1,
        output_dir=str(data["root"] / "loop"))
    first, _ = next(loop)
    manager.save(checkpoint_number=7)  # training goes on
    second, path = next(loop)
    assert (first["step"], second["step"]) == (5, 7)
    assert path == str(data["root"] / "loop" / "metrics-7.json")
    assert list(loop) == []  # no new checkpoint within the timeout: the loop ends


@pytest.mark.parametrize("trainer", ["deleted it", "was deleting it", "cut it short"])
def test_the_loop_skips_a_checkpoint_deleted_under_it_but_not_one_cut_short(data, tmp_path, monkeypatch, caplog,
                                                                           trainer):
    """Between the loop finding ckpt-5 and reading it, a trainer with keep_checkpoints=1 saves ckpt-7 and deletes
    ckpt-5 (or is half-way through deleting it): skipped with one warning, ckpt-7 scored. Files there but
    unreadable are a checkpoint cut short: the loop stops naming it, as before."""
    workdir = str(tmp_path / "run")
    shutil.copytree(data["workdir"], workdir)
    checkpoints = workdir_lib.checkpoint_dir(workdir)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=data["model"]), checkpoints, max_to_keep=1)
    restore = workdir_lib.restore

    def restore_after_the_trainer_acted(checkpoint, prefix):
        if prefix.endswith("ckpt-5"):
            if trainer == "deleted it":
                manager.save(checkpoint_number=7)
            else:
                (data_file,) = glob.glob(prefix + ".data-*")
                with open(data_file, "r+b") as f:
                    f.truncate(os.path.getsize(data_file) // 2)
                if trainer == "was deleting it":  # its index and listing still there
                    os.remove(data_file)
                    manager.save(checkpoint_number=7)
        return restore(checkpoint, prefix)

    monkeypatch.setattr(workdir_lib, "restore", restore_after_the_trainer_acted)
    loop = evaluator.evaluate_new_checkpoints(workdir, data["pattern"], timeout_secs=0, dataset_info=VOC,
                                              max_images=1, output_dir=str(tmp_path / "loop"))
    if trainer == "cut it short":
        with pytest.raises(workdir_lib.CheckpointReadError, match=r"ckpt-5 cannot be read .*cut short"):
            next(loop)
        return
    assert [results["step"] for results, _ in loop] == [7]
    skips = [record.getMessage() for record in caplog.records
             if record.levelname == "WARNING" and record.getMessage().startswith("Skipped")]  # not TF's retracing note
    assert skips == [f"Skipped {checkpoints}/ckpt-5: the trainer deleted it (config.train.keep_checkpoints) "
                     f"before it could be read."]


def _hold_until_scored(trainer, checkpoints, output_dir):
    """Pauses the trainer (SIGSTOP) until the evaluation loop has scored its latest checkpoint, which a paused
    trainer cannot delete (never paused half-way through deleting one)."""
    while True:
        os.kill(trainer.pid, signal.SIGSTOP)
        latest = tf.train.latest_checkpoint(checkpoints)
        if latest and not workdir_lib.checkpoint_deleted(latest):
            break
        os.kill(trainer.pid, signal.SIGCONT)
        time.sleep(0.2)
    try:
        scored = output_dir / f"metrics-{workdir_lib.checkpoint_step(latest)}.json"
        deadline = time.monotonic() + 300
        while not scored.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        os.kill(trainer.pid, signal.SIGCONT)


def test_the_console_loop_beside_a_trainer_that_keeps_one_checkpoint(tmp_path):
    """The installed deeplab-eval --loop beside the installed deeplab-train saving every 3 steps and keeping 1: the
    checkpoints it finds are deleted under it every few seconds (it ended in 'cut short or corrupt' at the first);
    it skips those, scores the ones it can read and ends 0 after the last. Once, the trainer waits for the loop to
    score the checkpoint in hand, so that at least one before the last is scored whatever the machine's speed."""
    from training_utils import make_learnable_voc, small_config

    tfrecords = make_learnable_voc(str(tmp_path / "voc"))
    config = small_config(tfrecords, steps=18, checkpoint_every_steps=3, keep_checkpoints=1,
                          image_summary_every_steps=1000)
    config_file = tmp_path / "config.py"
    config_file.write_text("import ml_collections, json\n\n"
                           f"def get_config():\n    return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n")
    workdir, output_dir = tmp_path / "run", tmp_path / "eval"
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    trainer = subprocess.Popen(["deeplab-train", f"--config={config_file}", f"--workdir={workdir}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    evaluation = None
    try:
        for line in trainer.stdout:
            if line.startswith("step 1/"):  # training runs: start the loop beside it
                evaluation = subprocess.Popen(
                    ["deeplab-eval", f"--checkpoint={workdir}", f"--eval_pattern={tfrecords}/val-*", "--loop",
                     "--loop_timeout_secs=10", "--max_images=1", f"--output_dir={output_dir}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment)
            if line.startswith("step 9/"):
                _hold_until_scored(trainer, workdir / "checkpoints", output_dir)
                break
    finally:
        trainer_output = trainer.communicate(timeout=600)[0]
        evaluation_errors = evaluation.communicate(timeout=600)[1] if evaluation else ""
    assert trainer.returncode == 0, trainer_output[-3000:]
    assert evaluation.returncode == 0, evaluation_errors[-3000:]
    scored = sorted(int(name[len("metrics-"):-len(".json")]) for name in os.listdir(output_dir)
                    if name.endswith(".json"))
    assert len(scored) >= 2 and scored[-1] == 18, (scored, evaluation_errors[-3000:])
    assert "cut short" not in evaluation_errors


def _write_split(path, label, filename):
    """A one-record split of a black image and `label` (not validated, unlike the converters')."""
    def png(array):
        return tf.io.encode_png(array[..., np.newaxis] if array.ndim == 2 else array).numpy()

    with tf.io.TFRecordWriter(path) as writer:
        writer.write(make_example(
            image=png(np.zeros(label.shape + (3,), np.uint8)), image_format="png",
            label=png(label), filename=filename, height=label.shape[0],
            width=label.shape[1]).SerializeToString())


def test_label_values_beyond_the_classes_name_the_image(tmp_path):
    label = np.zeros((9, 11), np.uint8)
    label[4, 5] = 40
    pattern = str(tmp_path / "val-00000-of-00001.tfrecord")
    _write_split(pattern, label, "2007_000040")
    images = keras.Input((None, None, 3))
    model = keras.Model(images, keras.layers.Conv2D(21, 1)(images))
    with pytest.raises(ValueError) as error:
        evaluator.evaluate(model, pattern, num_classes=21)
    assert str(error.value) == (
        f"image '2007_000040' of '{pattern}': labels hold values outside [0, 21) other than the "
        "ignore label 255 ([40]); check the dataset's num_classes and its label maps")


@pytest.mark.parametrize("fault, message", [
    ("truncated", (r"record \d+ cannot be read \(truncated record.*\); the shard is truncated or corrupt \(a copy "
                   r"or conversion that did not finish\): copy or convert it again\.")),
    ("undecodable", r"record 0 \(2007_000999\) cannot be decoded \(.*\): convert the dataset again\."),
])
def test_a_faulty_shard_is_named_in_one_line(data, tmp_path, fault, message):
    """The installed deeplab-eval on a split with a truncated shard or an undecodable record: one line naming the
    shard, the record and the fix, not TensorFlow's error about an internal function."""
    pattern, shard = split_with_a_fault(data["pattern"], tmp_path / "split", fault)
    result = subprocess.run(["deeplab-eval", f"--checkpoint={data['workdir']}", f"--eval_pattern={pattern}"],
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(
        ("WARNING: All log messages", "I0000", "E0000", "W0000", "Improper call to JPEG library"))]  # TF's, libjpeg's
    assert len(lines) == 1, result.stderr[-3000:]
    assert re.fullmatch(rf"deeplab-eval: {re.escape(shard)}: {message}", lines[0]), lines[0]
    assert "function_node" not in lines[0] and "[Op:" not in lines[0]


def test_model_for_another_number_of_classes(data):
    with pytest.raises(ValueError, match="predicts 21 classes but the split has 19"):
        evaluator.evaluate(data["model"], data["pattern"], num_classes=19)


def _fails(**flag_values):
    """The message deeplab-eval exits with."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(eval_cli, **flag_values)
    return str(exit_info.value.code)


def test_checkpoint_for_another_number_of_classes(data):
    message = _fails(checkpoint=data["workdir"], eval_pattern=data["pattern"],
                     dataset="cityscapes")
    assert "21 classes" in message and "19" in message and "ckpt-5" in message


def test_pattern_matching_nothing_and_empty_split(data):
    missing = str(data["root"] / "nowhere" / "val-*")
    message = _fails(checkpoint=data["workdir"], eval_pattern=missing)
    assert missing in message and "convert the dataset" in message

    empty = str(data["root"] / "empty-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(empty):
        pass
    message = _fails(checkpoint=data["workdir"], eval_pattern=empty)
    assert empty in message and "empty" in message


def test_a_checkpoint_cut_short_is_named_with_the_one_to_use(data, tmp_path):
    """deeplab-eval (deeplab-vis and deeplab-export load the same way) on a checkpoint whose data file a copy cut
    short: one line naming it and the earlier checkpoint to evaluate instead, not the reader's IndexError."""
    workdir = tmp_path / "run"
    shutil.copytree(data["workdir"], workdir)
    model = workdir_lib.load_model(data["workdir"])[0]
    tf.train.Checkpoint(model=model).write(str(workdir / "checkpoints" / "ckpt-9"))
    (data_file,) = glob.glob(str(workdir / "checkpoints" / "ckpt-9.data-*"))
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    message = _fails(checkpoint=str(workdir / "checkpoints" / "ckpt-9"), eval_pattern=data["pattern"])
    assert message == (f"deeplab-eval: checkpoint {workdir / 'checkpoints' / 'ckpt-9'} cannot be read (Read less bytes "
                       f"than requested): its files are cut short or corrupt (a copy, or a save on a full disk, that did "
                       f"not finish); use an earlier one: --checkpoint={workdir / 'checkpoints' / 'ckpt-5'}")


def test_missing_checkpoint_and_a_loop_that_sees_none(data):
    prefix = os.path.join(data["workdir"], "checkpoints", "ckpt-99")
    message = _fails(checkpoint=prefix, eval_pattern=data["pattern"])
    assert prefix in message and "workdir" in message
    empty_run = str(data["root"] / "not_started")
    message = _fails(checkpoint=empty_run, eval_pattern=data["pattern"], loop=True,
                     loop_timeout_secs=0)
    assert f"no checkpoint appeared in {empty_run}" in message


def test_bad_flags_are_usage_errors(data):
    for flag_values, expected in (({"eval_pattern": data["pattern"]}, "--checkpoint"),
                                  ({"checkpoint": data["workdir"]}, "--eval_pattern"),
                                  ({"checkpoint": data["workdir"], "eval_pattern": data["pattern"],
                                    "eval_scales": "1.0,big"}, "--eval_scales"),
                                  ({"checkpoint": data["workdir"], "eval_pattern": data["pattern"],
                                    "dataset": "voc"}, "unknown dataset")):
        with pytest.raises(app.UsageError, match=expected):
            run_main(eval_cli, **flag_values)


def test_an_output_dir_that_is_a_file_is_named_before_evaluating(data, tmp_path):
    (tmp_path / "a_file").write_text("")
    result = subprocess.run(
        ["deeplab-eval", f"--checkpoint={data['workdir']}", f"--eval_pattern={data['pattern']}",
         f"--output_dir={tmp_path / 'a_file'}"],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"deeplab-eval: --output_dir={tmp_path / 'a_file'}: cannot create it" in result.stderr
    assert "mIOU" not in result.stdout  # named before the evaluation, not after it


@pytest.mark.parametrize("command", [["deeplab-eval"], [sys.executable, "-m", "deeplab_tf.cli.eval"]])
def test_console_script_exits_with_the_message_not_a_traceback(tmp_path, command):
    """The message is all the user sees: no traceback, and none of the lines TensorFlow 2.21 prints at every
    start-up whatever TF_CPP_MIN_LOG_LEVEL says (the binaries import it with those filtered out)."""
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [*command, f"--checkpoint={tmp_path}", f"--eval_pattern={tmp_path}/val-*"],
        capture_output=True, text=True, env=environment,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"deeplab-eval: no TFRecord files match '{tmp_path}/val-*'; convert the dataset first "
        "(datasets/build_*_data.py) or check the pattern."]


def test_bfloat16_evaluation_writes_its_own_results_close_to_float32(data):
    run_main(eval_cli, checkpoint=data["workdir"], eval_pattern=data["pattern"])
    run_main(eval_cli, checkpoint=data["workdir"], eval_pattern=data["pattern"], precision="mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == "float32"  # the policy is restored
    with open(os.path.join(data["workdir"], "eval_os16", "metrics-5.json")) as f:
        float32 = json.load(f)
    with open(os.path.join(data["workdir"], "eval_os16_bf16", "metrics-5.json")) as f:
        bfloat16 = json.load(f)
    assert (float32["precision"], bfloat16["precision"]) == ("float32", "mixed_bfloat16")
    assert bfloat16["num_pixels"] == float32["num_pixels"]
    assert bfloat16["mean_iou"] == pytest.approx(float32["mean_iou"], abs=0.05)

    # The same weights computing in bfloat16: logits close to float32's (relative to their scale,
    # which is large for this untrained model) and the same label on most pixels.
    image = next(iter(eval_dataset(data["pattern"])))["image"]
    logits = {}
    for precision in ("float32", "mixed_bfloat16"):
        model, _, _ = workdir_lib.load_model(data["workdir"], precision=precision)
        logits[precision] = model(image, training=False)
        assert logits[precision].dtype == tf.float32
    assert model.backbone.compute_dtype == "bfloat16"
    reference, ours = logits["float32"].numpy(), logits["mixed_bfloat16"].numpy()
    relative = np.abs(reference - ours).max() / np.abs(reference).max()
    agreement = np.mean(reference.argmax(-1) == ours.argmax(-1))
    assert 0 < relative < 0.05 and agreement > 0.9, (relative, agreement)


def test_console_script_scores_each_checkpoint_of_the_loop_as_the_library_does(data, tmp_path):
    """deeplab-eval's own process lets oneDNN keep each traced graph's laid-out weights
    (TF_ONEDNN_ASSUME_FROZEN_WEIGHTS): the loop over two checkpoints with other weights, at two scales
    with flips (several shapes through the same kernels), must still score each exactly as the library
    does in this process, which has it unset."""
    assert "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS" not in os.environ
    workdir = str(tmp_path / "run")
    make_workdir(workdir, step=5, seed=0)
    output_dir = str(tmp_path / "loop")
    command = [sys.executable, "-m", "deeplab_tf.cli.eval", f"--checkpoint={workdir}",
               f"--eval_pattern={data['pattern']}", "--loop", "--loop_timeout_secs=15", "--eval_scales=0.75,1.0",
               "--flip", f"--output_dir={output_dir}"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")) as process:
        first = os.path.join(output_dir, "metrics-5.json")
        for _ in range(600):  # the first evaluation (start-up included) takes a few seconds
            if os.path.exists(first) or process.poll() is not None:
                break
            time.sleep(0.5)
        make_workdir(workdir, step=7, seed=1)  # training goes on: new weights in the same process's loop
        _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    for step in (5, 7):
        with open(os.path.join(output_dir, f"metrics-{step}.json")) as f:
            console = json.load(f)
        library, _ = evaluator.evaluate_checkpoint(
            os.path.join(workdir, "checkpoints", f"ckpt-{step}"), data["pattern"], dataset_info=VOC,
            scales=(0.75, 1.0), flip=True, output_dir=str(tmp_path / f"library_{step}"))
        assert console["confusion_matrix"] == library["confusion_matrix"], step
    with open(os.path.join(output_dir, "metrics-7.json")) as f, open(first) as g:
        assert json.load(f)["confusion_matrix"] != json.load(g)["confusion_matrix"]  # other weights, other scores
