"""Faults a user meets while training, each ending in one line that names the file/flag and the fix:
a second trainer in the same workdir, bad or truncated shards, a glob matching folders, an unknown
config override, a full disk while checkpointing."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf import workdir as workdir_lib
from deeplab_tf.data import make_example
from deeplab_tf.training import strategies
from deeplab_tf.training.trainer import train
from training_utils import make_learnable_voc, small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
    return make_learnable_voc(str(tmp_path_factory.mktemp("voc")))


def _copy_train_shards(tfrecords, directory):
    """A folder with a copy of the train shards; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    return [shutil.copy(path, directory) for path in sorted(tf.io.gfile.glob(os.path.join(tfrecords, "train-*")))]


def _write_shard(path, labels):
    """A TFRecord shard of grey 33x33 images with the given [33, 33] label arrays."""
    with tf.io.TFRecordWriter(path) as writer:
        for i, label in enumerate(labels):
            image = tf.io.encode_png(np.full([33, 33, 3], 128, np.uint8)).numpy()
            writer.write(make_example(image=image, image_format="png", label=tf.io.encode_png(
                label.astype(np.uint8)[..., None]).numpy(), filename=f"img_{i}", height=33, width=33
            ).SerializeToString())


def _config_file(path, tfrecords, **overrides):
    config = small_config(tfrecords, **overrides)
    path.write_text("import ml_collections, json\n\n"
                    f"def get_config():\n    return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n")
    return str(path)


def _deeplab_train(*args):
    """The command a user types, running this checkout's package."""
    binary = shutil.which("deeplab-train")
    return ([binary] if binary else [sys.executable, "-m", "deeplab_tf.cli.train"]) + list(args)


def _env():
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(*args):
    return subprocess.run(_deeplab_train(*args), capture_output=True, text=True, timeout=300, env=_env())


def _error_lines(stderr):
    """stderr without TensorFlow's start-up logging."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith(("WARNING: All log messages", "I0000", "E0000", "W0000"))]


# --- one live trainer per workdir ----------------------------------------------------------------

def test_a_second_live_trainer_is_refused_and_the_lock_is_released_on_sigterm(tfrecords, tmp_path):
    workdir = tmp_path / "run"
    config = _config_file(tmp_path / "config.py", tfrecords, steps=1000, checkpoint_every_steps=1000,
                          checkpoint_every_minutes=100.0)
    first = subprocess.Popen(_deeplab_train(f"--config={config}", f"--workdir={workdir}"), env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in first.stdout:
            if line.startswith("step 1/1000"):
                break
        lock = json.loads((workdir / workdir_lib.LOCK_FILE).read_text())
        assert lock["pid"] == first.pid
        assert lock["process"] == workdir_lib._process_identity(first.pid) is not None  # Linux: boot id, start time

        second = _run(f"--config={config}", f"--workdir={workdir}", "--config.train.steps=2")
        assert second.returncode == 1
        lines = _error_lines(second.stderr)
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith(f"deeplab-train: {workdir} is in use by deeplab-train PID {first.pid} on host ")
        assert "--break_lock" in lines[0] and "another --workdir" in lines[0]
        assert "Traceback" not in second.stderr + second.stdout
    finally:
        first.send_signal(signal.SIGTERM)
        output = first.communicate(timeout=120)[0]
    assert first.returncode == 0 and "SIGTERM received: saved" in output, output
    assert not (workdir / workdir_lib.LOCK_FILE).exists()


def test_a_dead_trainers_lock_is_taken_over_and_errors_release_the_lock(tfrecords, tmp_path):
    workdir = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # A PID that no longer runs, as a SIGKILLed trainer leaves it.
    os.makedirs(workdir)
    (workdir / workdir_lib.LOCK_FILE).write_text(json.dumps(
        {"pid": dead.pid, "host": workdir_lib.socket.gethostname(), "since": "2026-01-01 00:00:00"}))
    lines = []
    # The run takes the lock over, then fails on its initial checkpoint (a folder with none in it); the lock goes
    # either way.
    os.makedirs(tmp_path / "empty")
    config = small_config(tfrecords, steps=1, init_checkpoint=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="empty"):
        train(config, str(workdir), log=lines.append)
    assert any(f"Taking over {workdir / workdir_lib.LOCK_FILE}: deeplab-train PID {dead.pid}" in line
               and "no longer running" in line for line in lines), lines
    assert not (workdir / workdir_lib.LOCK_FILE).exists()


def _lock(pid, process, host=None):
    return {"pid": pid, "host": host or workdir_lib.socket.gethostname(), "since": "2026-01-01 00:00:00",
            "process": process}


def test_a_lock_whose_pid_is_now_another_process_is_taken_over(tfrecords, tmp_path):
    """A container restarted after its trainer was killed numbers its processes as before (and a reboot
    reuses PIDs): the lock's PID is alive but is another process. deeplab-train, as a user runs it, takes the
    lock over and trains; here the PID is pytest's own, alive and no trainer."""
    workdir = tmp_path / "run"
    os.makedirs(workdir)
    boot_id, start = workdir_lib._process_identity(os.getpid()).split(":")
    (workdir / workdir_lib.LOCK_FILE).write_text(json.dumps(_lock(os.getpid(), f"{boot_id}:{int(start) - 1}")))
    config = _config_file(tmp_path / "config.py", tfrecords, steps=1)
    result = _run(f"--config={config}", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Taking over {workdir / workdir_lib.LOCK_FILE}: deeplab-train PID {os.getpid()} on host " in result.stdout
    assert "is no longer running" in result.stdout and os.listdir(workdir / "checkpoints")
    assert not (workdir / workdir_lib.LOCK_FILE).exists()


@pytest.mark.parametrize("whose, process, taken_over", [
    ("parent", "its own", False),        # a live trainer: refused
    ("parent", None, False),             # a lock written before locks named the process: its live PID decides
    ("parent", "another boot", True),    # the machine rebooted since: another process now has the PID
    ("ours", "another start", True),     # a restarted container: the trainer reading the lock has its PID
    ("ours", None, True),
    ("ours", "its own", False),          # this very process holds it (a second lock inside one process)
])
def test_which_locks_on_this_host_are_stale(tmp_path, whose, process, taken_over):
    pid = os.getpid() if whose == "ours" else os.getppid()
    identity = workdir_lib._process_identity(pid)
    boot_id, start = identity.split(":")
    process = {"its own": identity, "another boot": f"not-{boot_id}:{start}",
               "another start": f"{boot_id}:{int(start) + 1}", None: None}[process]
    (tmp_path / workdir_lib.LOCK_FILE).write_text(json.dumps(_lock(pid, process)))
    lines = []
    if taken_over:
        with workdir_lib.TrainerLock(str(tmp_path), log=lines.append):
            assert json.loads((tmp_path / workdir_lib.LOCK_FILE).read_text())["pid"] == os.getpid()
        assert len(lines) == 1 and lines[0].endswith("is no longer running."), lines
    else:
        with pytest.raises(workdir_lib.WorkdirError, match=f"is in use by deeplab-train PID {pid} on host "), \
                workdir_lib.TrainerLock(str(tmp_path), log=lines.append):
            pass
        assert (tmp_path / workdir_lib.LOCK_FILE).exists() and not lines


def test_a_lock_from_another_host_needs_break_lock(tmp_path):
    lock_path = tmp_path / workdir_lib.LOCK_FILE
    lock_path.write_text(json.dumps({"pid": 1, "host": "other-host", "since": "2026-01-01 00:00:00"}))
    with pytest.raises(workdir_lib.WorkdirError, match="PID 1 on host other-host .*rerun with --break_lock"):
        with workdir_lib.TrainerLock(str(tmp_path)):
            pass
    lines = []
    with workdir_lib.TrainerLock(str(tmp_path), break_lock=True, log=lines.append):
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    assert lines == [f"--break_lock: taking over {lock_path} from deeplab-train PID 1 on host other-host "
                     f"(since 2026-01-01 00:00:00)."]
    assert not lock_path.exists()


@pytest.mark.parametrize("cluster, chief", [
    ({"worker": ["a:1", "b:2"]}, {"worker": 0}),
    ({"chief": ["c:0"], "worker": ["a:1"]}, {"chief": 0}),
])
def test_only_the_chief_of_a_multi_worker_cluster_takes_the_lock(cluster, chief):
    from deeplab_tf.training.trainer import _is_chief

    class Strategy:  # What the trainer reads of a MultiWorkerMirroredStrategy.
        def __init__(self, task_type, task_id):
            self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
                tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)

    for task_type, addresses in cluster.items():
        for task_id in range(len(addresses)):
            assert _is_chief(Strategy(task_type, task_id)) == (chief == {task_type: task_id})
    assert _is_chief(tf.distribute.get_strategy())


# --- data faults surfacing in training -------------------------------------------------------------

def test_labels_beyond_num_classes_name_the_shard_in_one_line(tfrecords, tmp_path):
    data_dir = tmp_path / "data"
    _copy_train_shards(tfrecords, data_dir)
    label = np.zeros([33, 33], np.int32)
    label[5:20, 5:20] = 30
    label[0, :] = 255
    bad = str(data_dir / "train-bad.tfrecord")
    _write_shard(bad, [np.zeros([33, 33]), label])
    config = _config_file(tmp_path / "config.py", tfrecords, steps=5)
    result = _run(f"--config={config}", f"--workdir={tmp_path / 'run'}",
                  f"--config.dataset.train_pattern={data_dir}/train-*")
    assert result.returncode == 1, result.stderr[-3000:]
    lines = _error_lines(result.stderr)
    assert lines == [f"deeplab-train: {bad}: record 1 (img_1) has label values {{30}} outside [0, 21) other than "
                     f"the ignore label 255: set config.dataset.num_classes (or config.dataset.name) to the "
                     f"dataset the records were converted for, or fix the masks' label maps and convert again."], \
        result.stderr[-3000:]
    assert not (tmp_path / "run" / workdir_lib.LOCK_FILE).exists()


def test_records_with_no_labelled_pixel_are_refused_or_with_the_flag_trained_with_a_warning(tmp_path):
    """Masks saved inverted or converted with a wrong value map give records whose every label pixel is the ignore
    label: such a run trained to the end at 'loss 0.0000' and exit 0. The installed deeplab-train refuses them in one
    line naming the shards, before the workdir is made; config.train.allow_unlabelled_batches=True trains with a
    warning."""
    os.makedirs(tmp_path / "data")
    shards = [str(tmp_path / "data" / f"train-0000{i}-of-00002.tfrecord") for i in range(2)]
    for shard in shards:
        _write_shard(shard, [np.full([33, 33], 255)] * 2)
    config = _config_file(tmp_path / "config.py", str(tmp_path / "data"), steps=1)
    result = _run(f"--config={config}", f"--workdir={tmp_path / 'run'}")
    assert result.returncode == 1
    unlabelled = (f"the first 4 records of {shards[0]}, {shards[1]} (2 of the 2 shards matching "
                  f"{tmp_path / 'data'}/train-*) have no labelled pixel: every label pixel is the ignore label 255. "
                  f"Masks saved inverted, converted with a wrong value map, or an ignore label the masks do not use "
                  f"(config.dataset.ignore_label) do this: fix the masks and convert again")
    assert _error_lines(result.stderr) == [
        f"deeplab-train: {unlabelled}; or set config.train.allow_unlabelled_batches=True to train on them anyway."], \
        result.stderr[-3000:]
    assert not (tmp_path / "run").exists()

    lines = []
    summary = train(small_config(str(tmp_path / "data"), steps=1, allow_unlabelled_batches=True),
                    str(tmp_path / "run"), log=lines.append)
    assert summary["step"] == 1 and summary["loss"] == 0
    assert f"Warning: {unlabelled}. Training on them: config.train.allow_unlabelled_batches=True." in lines


def test_a_truncated_shard_is_named_in_one_line(tfrecords, tmp_path):
    shards = _copy_train_shards(tfrecords, tmp_path / "data")
    with open(shards[1], "r+b") as f:
        f.truncate(os.path.getsize(shards[1]) // 2)
    config = _config_file(tmp_path / "config.py", tfrecords, steps=5)
    result = _run(f"--config={config}", f"--workdir={tmp_path / 'run'}",
                  f"--config.dataset.train_pattern={tmp_path / 'data'}/train-*")
    assert result.returncode == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    assert re.match(rf"deeplab-train: {re.escape(shards[1])}: record \d+ cannot be read \(.*truncated record",
                    lines[0]), lines[0]
    assert lines[0].endswith("the shard is truncated or corrupt (a copy or conversion that did not finish): copy or "
                             "convert it again.")


def _cut_short(prefix):
    """Cuts a checkpoint's data file in half, as a copy of the workdir that did not finish leaves it."""
    (data,) = tf.io.gfile.glob(prefix + ".data-*")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)


def test_a_cut_short_latest_checkpoint_resumes_from_the_one_before(tfrecords, tmp_path):
    """The installed deeplab-train resumes from the newest checkpoint it can read, says which it could not, and
    saves over it; with none readable it stops naming the folder."""
    workdir = tmp_path / "run"
    config = _config_file(tmp_path / "config.py", tfrecords, steps=2, checkpoint_every_steps=1)
    assert _run(f"--config={config}", f"--workdir={workdir}").returncode == 0
    checkpoints = workdir / "checkpoints"
    _cut_short(str(checkpoints / "ckpt-2"))
    resumed = _run(f"--config={config}", f"--workdir={workdir}", "--config.train.steps=3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (f"checkpoint {checkpoints / 'ckpt-2'} cannot be read (Read less bytes than requested): its files are cut "
            f"short or corrupt") in resumed.stdout and "; trying the checkpoint before it." in resumed.stdout
    assert f"Resuming from {checkpoints / 'ckpt-1'} at step 1." in resumed.stdout
    for step in (2, 3):  # step 2 saved again over the broken files
        assert tf.train.load_checkpoint(str(checkpoints / f"ckpt-{step}")).get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE") == step

    for step in (1, 2, 3):
        _cut_short(str(checkpoints / f"ckpt-{step}"))
    failed = _run(f"--config={config}", f"--workdir={workdir}", "--config.train.steps=4")
    assert failed.returncode == 1
    assert _error_lines(failed.stderr)[-1] == (f"deeplab-train: no checkpoint in {checkpoints} can be read: restore "
                                              f"them from a copy, or train into a new --workdir")


def test_a_glob_matching_folders_skips_them(tfrecords, tmp_path):
    data_dir = tmp_path / "data"
    os.makedirs(data_dir / ".incomplete")  # A converter's staging folder, as an interrupted run leaves it.
    config = small_config(tfrecords, steps=1)
    config.dataset.train_pattern = f"{data_dir}/*"
    with pytest.raises(ValueError, match=r"no TFRecord files match .*\(only directories: .*\.incomplete\)"):
        train(config, str(tmp_path / "run"), log=lambda line: None)
    _copy_train_shards(tfrecords, data_dir)
    summary = train(config, str(tmp_path / "run"), log=lambda line: None)
    assert summary["step"] == 1


def test_an_unknown_config_override_names_the_flag_and_the_closest_field(tfrecords, tmp_path):
    config = _config_file(tmp_path / "config.py", tfrecords)
    result = _run(f"--config={config}", f"--workdir={tmp_path / 'run'}", "--config.train.stepz=4")
    assert result.returncode == 1
    assert _error_lines(result.stderr) == [
        "deeplab-train: --config.train.stepz: config.train has no field 'stepz'; did you mean --config.train.steps?"]
    result = _run(f"--config={config}", f"--workdir={tmp_path / 'run'}", "--config.trian.steps=4")
    assert _error_lines(result.stderr) == [
        "deeplab-train: --config.trian.steps: config has no field 'trian'; did you mean --config.train?"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("--config.train.crop_size=65,65,3", "config.train.crop_size=(65, 65, 3) is not N or H,W in pixels, e.g. 513 or "
                                         "513,513."),  # it was blamed on being too small
    ("--config.train.keep_checkpoints=0", "config.train.keep_checkpoints=0 is not a whole number from 1 up."),
])
def test_odd_config_values_are_one_line_before_the_workdir_is_made(tfrecords, tmp_path, override, message):
    workdir_lib.save_run_config(small_config(tfrecords), str(tmp_path / "recorded"))  # default_config()'s types
    result = _run(f"--config={tmp_path / 'recorded' / 'config.json'}", f"--workdir={tmp_path / 'run'}", override)
    assert result.returncode == 1
    assert _error_lines(result.stderr) == [f"deeplab-train: {message}"], result.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_a_recorded_run_is_rerun_from_its_config_json_or_its_workdir(tfrecords, tmp_path):
    """--config=<workdir>/config.json ran the JSON as Python (NameError: name 'true' is not defined, 30 lines): it
    now runs the recorded config again, overrides applied (crop_size=81 is 81x81, as the binaries' N); the workdir
    itself is taken too."""
    recorded = small_config(tfrecords, steps=1, init_exclude=("logits", "aspp"))
    workdir_lib.save_run_config(recorded, str(tmp_path / "first"), {"argv": ["deeplab-train"]})
    result = _run(f"--config={tmp_path / 'first' / 'config.json'}", f"--workdir={tmp_path / 'rerun'}",
                  "--config.train.crop_size=81")
    assert result.returncode == 0, result.stderr[-3000:]
    rerun = json.loads((tmp_path / "rerun" / "config.json").read_text())
    assert rerun["argv"][1] == f"--config={tmp_path / 'first' / 'config.json'}"
    expected = json.loads(recorded.to_json_best_effort())
    expected["train"]["crop_size"] = [81, 81]
    assert rerun["config"] == expected

    result = _run(f"--config={tmp_path / 'first'}", f"--workdir={tmp_path / 'other'}", "--config.train.crop_size=65,abc")
    assert result.returncode == 1
    assert _error_lines(result.stderr) == [
        "deeplab-train: config.train.crop_size=('65,abc',) is not N or H,W in pixels, e.g. 513 or 513,513."]
    assert not (tmp_path / "other").exists()
    result = _run(f"--config={tmp_path / 'nowhere.json'}", f"--workdir={tmp_path / 'other'}")
    assert _error_lines(result.stderr) == [
        f"deeplab-train: --config={tmp_path / 'nowhere.json'}: {tmp_path / 'nowhere.json'} is neither a workdir holding "
        f"a config.json nor such a file: give a workdir deeplab-train wrote, or its config.json."]


def test_usage_names_a_config_that_exists():
    result = _run("--workdir=/tmp/unused")
    assert result.returncode == 1
    example = result.stderr.split("--config=")[-1].split()[0]
    path, setting = example.split(":")
    assert os.path.isfile(os.path.join(ROOT, path)), result.stderr
    from experiments.configs import voc_recipe
    assert setting in voc_recipe.SETTINGS


# --- cluster settings ---------------------------------------------------------------------------------

def _cluster(role, index, **roles):
    return json.dumps({"cluster": roles, "task": {"type": role, "index": index}})


@pytest.mark.parametrize("strategy, tf_config, message", [
    ("multi_worker_mirrored", _cluster("worker", 0, worker=["localhost:2222"])[:-1],
     r"TF_CONFIG is not JSON \(Expecting ',' delimiter: .*\): give e.g. \{\"cluster\": "),
    ("parameter_server", _cluster("worker", 3, chief=["localhost:2220"], worker=["localhost:2221"], ps=["localhost:2222"]),
     r"TF_CONFIG gives this task the index 3, but its cluster has 1 worker address\(es\): give an index from 0 to 0\."),
    ("multi_worker_mirrored", _cluster("chief", 0, worker=["localhost:2221", "localhost:2222"]),
     r"TF_CONFIG gives this task the type 'chief', which is not a role of its cluster \(worker\): give one of those\."),
    ("multi_worker_mirrored", _cluster("worker", 0, worker=["localhost:{port}"]),
     r"TF_CONFIG gives this task \(worker 0\) the address localhost:\d+, whose port is in use on this machine: stop "
     r"what holds it \(a task of an earlier run\?\) or give this task a free port\."),
    ("parameter_server", _cluster("ps", 0, chief=["localhost:2220"], worker=["localhost:2221"], ps=["localhost:{port}"]),
     r"TF_CONFIG gives this task \(ps 0\) the address localhost:\d+, whose port is in use"),
])
def test_a_malformed_tf_config_is_one_line(tfrecords, tmp_path, strategy, tf_config, message):
    """TensorFlow reported each in a 22-49 line traceback (the ps task's port: when its server started)."""
    with socket.create_server(("localhost", 0)) as taken:
        config = _config_file(tmp_path / "config.py", tfrecords)
        result = subprocess.run(
            _deeplab_train(f"--config={config}", f"--workdir={tmp_path / 'run'}", f"--config.train.strategy={strategy}"),
            capture_output=True, text=True, timeout=300,
            env={**_env(), "TF_CONFIG": tf_config.replace("{port}", str(taken.getsockname()[1]))})
    assert result.returncode == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and re.fullmatch(f"deeplab-train: {message}.*", lines[0]), result.stderr[-3000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tf_config, message", [
    ("[]", "TF_CONFIG is not an object with a cluster and a task: give e.g. "),
    (_cluster("worker", 0, workers=["a:1"]), "TF_CONFIG has 'workers': ['a:1'] in its cluster; give lists of addresses "
                                             "for the roles chief, worker, ps."),
    (_cluster("worker", 0, worker="a:1"), "TF_CONFIG has 'worker': 'a:1' in its cluster"),
    (_cluster("worker", 0, worker=["a"]), "TF_CONFIG gives worker 0 the address 'a', not host:port with a port in "
                                          "1..65535."),
    (_cluster("worker", 0, worker=["a:1", "b:70000"]), "TF_CONFIG gives worker 1 the address 'b:70000', not host:port"),
    (_cluster("worker", "0", worker=["a:1"]), "TF_CONFIG gives this task the index '0', but its cluster has 1 worker"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), "TF_CONFIG gives this task the type None, which is not a role"),
])
def test_tf_config_shapes_are_checked_before_tensorflow_reads_them(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError) as error:
        strategies.task_from_tf_config()
    assert str(error.value).startswith(message), str(error.value)
    monkeypatch.setenv("TF_CONFIG", _cluster("worker", 1, worker=["a:1", "b:2"]))
    assert strategies.task_from_tf_config() == ("worker", 1)
    assert strategies.check_own_port() is None  # b is not this machine: nothing to tell


# --- a full disk while checkpointing --------------------------------------------------------------

def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_the_rerun_resumes(
        tfrecords, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    save = tf.train.CheckpointManager.save

    def save_until_the_disk_fills(manager, checkpoint_number=None, **kwargs):
        if checkpoint_number < 4:
            return save(manager, checkpoint_number=checkpoint_number, **kwargs)
        # What TF leaves when the disk fills mid-write: a partial shard in the temp folder.
        temp = os.path.join(manager.directory, f"ckpt-{checkpoint_number}_temp")
        os.makedirs(temp)
        with open(os.path.join(temp, "part-00000-of-00001.data-00000-of-00001.tempstate1"), "wb") as f:
            f.write(b"\0" * 100_000)
        raise tf.errors.ResourceExhaustedError(None, None, f"{temp}/part-00000-of-00001.data-00000-of-00001."
                                                           f"tempstate1; No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save_until_the_disk_fills)
    config = small_config(tfrecords, steps=5, checkpoint_every_steps=2)
    with pytest.raises(workdir_lib.WorkdirError) as error:
        train(config, str(workdir), log=lambda line: None)
    checkpoints = workdir_lib.checkpoint_dir(str(workdir))
    assert str(error.value) == (
        f"could not write checkpoint {checkpoints}/ckpt-4 ({checkpoints}/ckpt-4_temp/part-00000-of-00001.data-"
        f"00000-of-00001.tempstate1; No space left on device); the partial files were removed and "
        f"{checkpoints}/ckpt-2 is kept: free disk space in {checkpoints}, then run the same command to resume.")
    assert sorted(os.listdir(checkpoints)) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    assert not (workdir / workdir_lib.LOCK_FILE).exists()

    monkeypatch.undo()  # Space freed: the same run resumes from step 2.
    lines = []
    summary = train(config, str(workdir), log=lines.append)
    assert any(line.startswith(f"Resuming from {checkpoints}/ckpt-2 at step 2") for line in lines), lines
    assert summary["step"] == 5 and summary["checkpoint"] == f"{checkpoints}/ckpt-5"
