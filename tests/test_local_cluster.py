"""deeplab-local-cluster itself, as the README runs it, at test size (ResNet-50, 65x65 crops, a few steps).

- The README's asynchronous example (read from README.md at run time, paths and sizes overridden).
- --num_ps=0: a 2-process MultiWorkerMirroredStrategy job gives the losses of a 2-replica MirroredStrategy
  run, step for step, on the same data split and the same initial weights.
- Killing one worker of that job ends it with a one-line message and a checkpoint that restores.
- SIGTERM to the launcher, or Ctrl-C's SIGINT to its process group, reaches the chief, which saves; then every task
  stops and the launcher exits non-zero with one line. A killed ps is one line naming it and the command to resume.
  No task outlives the launcher, and no scratch checkpoint is left.

Every wait is bounded and every process is killed in `finally`.
"""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from deeplab_tf import workdir as workdir_lib
from training_utils import make_learnable_voc, small_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
DEADLINE_SECONDS = 900  # Generous: a loaded 2-core machine takes minutes to trace ResNet-50 steps.
# Test-size overrides of the paper's config, as a user would type them.
TINY = ["--config.train.init_checkpoint=", "--config.model.backbone=resnet_v1_50", "--config.model.multi_grid=()",
        "--config.train.crop_size=(65, 65)", "--config.train.shuffle_buffer=8", "--config.train.log_every_steps=1"]


def _env(**extra):
    return {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def readme_command(binary):
    """The first command of README.md's ```bash blocks that starts with `binary`, as an argv list."""
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    for block in re.findall(r"```bash\n(.*?)```", readme, re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip().startswith(binary):
                return shlex.split(command)
    raise AssertionError(f"README.md has no ```bash command starting with {binary}")


def _replace_flag(argv, name, value):
    """argv with every --name=... set to value (the flag must be there: the README's command is what we test)."""
    prefix = f"--{name}="
    assert any(arg.startswith(prefix) for arg in argv), f"{name} is not in {argv}"
    return [prefix + value if arg.startswith(prefix) else arg for arg in argv]


def _summary_losses(workdir):
    """{step: loss} of a run's TensorBoard scalars (float32, unlike the 4 decimals of the progress lines)."""
    losses = {}
    for path in tf.io.gfile.glob(os.path.join(workdir, "train", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "train/loss":
                    losses[event.step] = float(tf.make_ndarray(value.tensor))
    return losses


def _config_file(tmp_path, config):
    path = tmp_path / "config.py"
    path.write_text("import json, ml_collections\n\n"
                    "def get_config():\n"
                    f"    return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n")
    return str(path)


def _start(command, **env):
    """Starts `command` in a process group of its own, as a shell starts a job (Ctrl-C signals the group)."""
    return subprocess.Popen(command, cwd=REPO, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _stop(process):
    """SIGKILL to the command's group: the launcher's tasks die with it (they run in sessions of their own)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # The group already ended.
        pass
    process.wait(timeout=30)


def _run(command, timeout):
    """subprocess.run that also kills the command's cluster tasks when it times out or fails."""
    process = _start(command)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    finally:
        _stop(process)


@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_readme_async_example_runs(tmp_path):
    tfrecords = make_learnable_voc(str(tmp_path / "voc"))
    workdir, log_dir = str(tmp_path / "async"), str(tmp_path / "async_logs")
    command = readme_command("deeplab-local-cluster")
    command = _replace_flag(command, "log_dir", log_dir)
    command = _replace_flag(command, "workdir", workdir)
    command = _replace_flag(command, "config.dataset.train_pattern", os.path.join(tfrecords, "train-*"))
    command += TINY + ["--config.train.batch_size=2", "--config.train.steps=4", "--config.train.steps_per_schedule=2"]

    result = _run(command, DEADLINE_SECONDS)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "ParameterServerStrategy" in result.stdout and "Training finished at step 4:" in result.stdout
    assert tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(workdir)).endswith("ckpt-4")
    cluster = json.load(open(os.path.join(log_dir, "cluster.json")))
    assert (len(cluster["worker"]), len(cluster["ps"])) == (2, 1)
    assert {"ps-0.log", "worker-0.log", "worker-1.log", "chief-0.log"} <= set(os.listdir(log_dir))
    # Each task's TF_CONFIG, ready to restart it by hand as the README says.
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    assert "tf_config_worker_1.json" in readme
    for task_type, index in (("chief", 0), ("worker", 0), ("worker", 1), ("ps", 0)):
        tf_config = json.load(open(os.path.join(log_dir, f"tf_config_{task_type}_{index}.json")))
        assert tf_config == {"cluster": cluster, "task": {"type": task_type, "index": index}}


def _sync_config(tmp_path, tfrecords, init_workdir, **train):
    """Global batch 4 = 2 per replica; no dropout (its random masks differ per process); every replica starts
    from `init_workdir`'s weights (initialisation is not seeded)."""
    config = small_config(tfrecords, strategy="multi_worker_mirrored", batch_size=4, init_checkpoint=init_workdir,
                          init_exclude=(), **train)
    config.model.dropout_rate = 0.0
    return config


def _local_cluster(config_file, workdir, log_dir, *extra):
    return ["deeplab-local-cluster", "--num_workers=2", "--num_ps=0", f"--log_dir={log_dir}", "--",
            "deeplab-train", f"--config={config_file}", f"--workdir={workdir}", *extra]


def _initial_weights(tmp_path, tfrecords):
    init_workdir = str(tmp_path / "init")
    result = _run([sys.executable, os.path.join(HERE, "run_training_job.py"), "init", tfrecords, init_workdir], 300)
    assert result.returncode == 0, result.stderr[-3000:]
    return init_workdir


def _mirrored_losses(tfrecords, workdir, config):
    """The per-step losses of `config` run as MirroredStrategy with 2 CPU replicas, one input pipeline each."""
    config_json = workdir + ".json"
    with open(config_json, "w") as f:
        f.write(config.to_json())
    result = _run([sys.executable, os.path.join(HERE, "run_training_job.py"), "mirrored_per_replica", tfrecords,
                   workdir, config_json], DEADLINE_SECONDS)
    assert result.returncode == 0, result.stderr[-3000:]
    return _summary_losses(workdir)


@pytest.mark.timeout(3 * DEADLINE_SECONDS)
def test_multi_worker_mirrored_matches_mirrored(tmp_path):
    """A 2-process MultiWorkerMirroredStrategy job and a 2-replica MirroredStrategy run from the same weights
    on the same per-replica batches (replica i reads input pipeline i of 2 in both) give the same losses.

    Before and after the first update they agree to float32 rounding (1e-5 relative; oneDNN splits the
    convolutions' sums differently in one process with two replicas than in two processes). From the second
    update on, this tiny network on 2-image replicas amplifies any rounding-level difference a
    thousandfold per step (a near-tie in a max pool or a ReLU flips and routes a gradient elsewhere), so
    there the test measures that amplification on two more runs, Mirrored again with the learning rate
    changed by +1e-5 and by -1e-5 relative, and requires the two strategies to differ by no more than 3x the
    larger of those spreads (one direction alone under-estimated it: 1.0e-3 against 3.5e-3 at step 4).
    """
    tfrecords = make_learnable_voc(str(tmp_path / "voc"))
    config = _sync_config(tmp_path, tfrecords, _initial_weights(tmp_path, tfrecords), steps=4,
                          base_learning_rate=1e-3, image_summary_every_steps=1000)
    sync = _run(_local_cluster(_config_file(tmp_path, config), str(tmp_path / "mwms"), str(tmp_path / "logs")),
                DEADLINE_SECONDS)
    assert sync.returncode == 0, sync.stdout[-2000:] + sync.stderr[-3000:]
    assert "with 2 replica(s) in sync" in sync.stdout
    sync_losses = _summary_losses(str(tmp_path / "mwms"))
    mirrored_losses = _mirrored_losses(tfrecords, str(tmp_path / "mirrored"), config)
    learning_rate = config.train.base_learning_rate
    perturbed = []
    for sign in (1, -1):
        config.train.base_learning_rate = learning_rate * (1 + sign * 1e-5)
        perturbed.append(_mirrored_losses(tfrecords, str(tmp_path / f"perturbed{sign}"), config))
    print("MultiWorkerMirrored", sync_losses, "\nMirrored", mirrored_losses, "\nMirrored, lr x (1 +- 1e-5)",
          perturbed)

    assert sorted(sync_losses) == sorted(mirrored_losses) == [1, 2, 3, 4]
    # Only the chief wrote into the workdir, and the losses moved (a frozen model would match trivially).
    assert tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(str(tmp_path / "mwms"))).endswith("ckpt-4")
    assert len(os.listdir(tmp_path / "mwms" / "train")) == 1
    assert abs(sync_losses[1] - sync_losses[4]) > 1e-2
    np.testing.assert_allclose([sync_losses[1], sync_losses[2]], [mirrored_losses[1], mirrored_losses[2]], rtol=1e-5)
    for step in (3, 4):
        rounding_spread = max(abs(losses[step] - mirrored_losses[step]) for losses in perturbed)
        assert abs(sync_losses[step] - mirrored_losses[step]) <= 3 * rounding_spread + 1e-5 * mirrored_losses[step], (
            step, sync_losses, mirrored_losses, perturbed)


def _tasks_of(parent_pid):
    """{(type, index): pid} of the children of `parent_pid` that have a TF_CONFIG: the launcher's tasks."""
    tasks = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent_pid:
            continue
        for entry in environ:
            if entry.startswith(b"TF_CONFIG="):
                task = json.loads(entry[len(b"TF_CONFIG="):])["task"]
                tasks[task["type"], task["index"]] = int(pid)
    return tasks


@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_killed_worker_ends_multi_worker_job_with_a_checkpoint(tmp_path):
    tfrecords = make_learnable_voc(str(tmp_path / "voc"))
    config = _sync_config(tmp_path, tfrecords, "", steps=60, checkpoint_every_steps=2,
                          checkpoint_every_minutes=100.0)
    workdir, log_dir = str(tmp_path / "mwms"), str(tmp_path / "logs")
    cluster = _start(_local_cluster(_config_file(tmp_path, config), workdir, log_dir))
    deadline = time.time() + DEADLINE_SECONDS
    try:
        checkpoints = workdir_lib.checkpoint_dir(workdir)
        while tf.train.latest_checkpoint(checkpoints) is None:
            assert cluster.poll() is None and time.time() < deadline, "no checkpoint before the cluster ended"
            time.sleep(0.5)
        worker = _tasks_of(cluster.pid).get(("worker", 1))
        assert worker, "worker 1 is not a child of deeplab-local-cluster"
        os.kill(worker, signal.SIGKILL)

        stdout, stderr = cluster.communicate(timeout=max(deadline - time.time(), 1))
        assert cluster.returncode != 0, stdout[-2000:]
        message = stderr.strip().splitlines()
        assert len(message) == 1 and message[0].startswith("deeplab-local-cluster: lost "), stderr[-3000:]
        assert "/job:worker/replica:0/task:1" in message[0]
        assert "run the same command to resume: deeplab-local-cluster --num_workers=2" in message[0]
        assert "Traceback" not in stderr, stderr[-3000:]
        # The checkpoint it names restores; it is a step the job reached before the kill.
        saved = tf.train.latest_checkpoint(checkpoints)
        assert saved in message[0]
        model, prefix, _ = workdir_lib.load_model(workdir, output_stride=8)
        assert model(tf.zeros([1, 33, 33, 3]), training=False).shape == (1, 33, 33, 21)
        assert 2 <= int(prefix.rsplit("-", 1)[1]) < 60
    finally:
        _stop(cluster)


def _async_command(tmp_path, tfrecords, steps=200):
    """deeplab-local-cluster running the asynchronous tiny config, saving every 2 steps (a signal's save is then the
    only checkpoint at an odd step, or a later one)."""
    config = small_config(tfrecords, strategy="parameter_server", steps=steps, steps_per_schedule=1,
                          checkpoint_every_steps=2, checkpoint_every_minutes=100.0, image_summary_every_steps=1000)
    return ["deeplab-local-cluster", "--num_workers=2", "--num_ps=1", f"--log_dir={tmp_path / 'logs'}", "--",
            "deeplab-train", f"--config={_config_file(tmp_path, config)}", f"--workdir={tmp_path / 'run'}"]


def _tasks_once_training(launcher, workdir, deadline):
    """{(type, index): pid} of the launcher's tasks, once the chief has saved its first checkpoint."""
    while tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(workdir)) is None:
        assert launcher.poll() is None and time.time() < deadline, "no checkpoint before the cluster ended"
        time.sleep(0.5)
    return _tasks_of(launcher.pid)


def _alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(DEADLINE_SECONDS + 60)
@pytest.mark.parametrize("how", ["sigterm_async", "ctrl_c_sync"])
def test_a_stopped_launcher_saves_then_stops_every_task(tmp_path, how):
    """SIGTERM to the launcher of an asynchronous cluster, or Ctrl-C (SIGINT to its terminal's process group) to a
    synchronous one: the chief saves at the step it reached, every task ends, one line, a non-zero status, and the
    synchronous worker's scratch checkpoints are gone (TMPDIR is where they go)."""
    tfrecords = make_learnable_voc(str(tmp_path / "voc"))
    workdir, scratch = str(tmp_path / "run"), tmp_path / "tmp"
    scratch.mkdir()
    if how == "sigterm_async":
        command, sig = _async_command(tmp_path, tfrecords), signal.SIGTERM
    else:
        config = _sync_config(tmp_path, tfrecords, "", steps=200, checkpoint_every_steps=2,
                              checkpoint_every_minutes=100.0, image_summary_every_steps=1000)
        command, sig = _local_cluster(_config_file(tmp_path, config), workdir, str(tmp_path / "logs")), signal.SIGINT
    launcher = _start(command, TMPDIR=str(scratch))
    deadline = time.time() + DEADLINE_SECONDS
    try:
        tasks = _tasks_once_training(launcher, workdir, deadline)
        assert len(tasks) == (4 if how == "sigterm_async" else 2), tasks
        if sig == signal.SIGINT:
            os.killpg(launcher.pid, sig)
        else:
            launcher.send_signal(sig)
        stdout, stderr = launcher.communicate(timeout=max(deadline - time.time(), 1))
        assert launcher.returncode == 128 + sig, stdout[-2000:] + stderr[-3000:]
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"deeplab-local-cluster: {sig.name} received: the chief saved")
        assert "run the same command to resume: deeplab-local-cluster " in lines[0]
        saved = re.search(rf"{sig.name} received: saved (\S+) at step (\d+);", stdout)
        assert saved, stdout[-2000:]
        assert saved.group(1).endswith(f"ckpt-{saved.group(2)}") and os.path.exists(saved.group(1) + ".index")
        assert tf.train.latest_checkpoint(workdir_lib.checkpoint_dir(workdir)) == saved.group(1)
        assert not [task for task, pid in tasks.items() if _alive(pid)]
        assert not os.path.exists(os.path.join(workdir, "train.lock"))
        assert os.listdir(scratch) == []
    finally:
        _stop(launcher)


@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_a_killed_ps_is_one_line_naming_it_and_the_command_to_resume(tmp_path):
    tfrecords = make_learnable_voc(str(tmp_path / "voc"))
    command = _async_command(tmp_path, tfrecords)
    launcher = _start(command)
    deadline = time.time() + DEADLINE_SECONDS
    try:
        tasks = _tasks_once_training(launcher, str(tmp_path / "run"), deadline)
        os.kill(tasks[("ps", 0)], signal.SIGKILL)
        stdout, stderr = launcher.communicate(timeout=max(deadline - time.time(), 1))
        assert launcher.returncode == 1, stdout[-2000:] + stderr[-3000:]
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr[-3000:]
        assert lines[0].startswith("deeplab-local-cluster: lost /job:ps/replica:0/task:0 of the parameter-server")
        assert lines[0].endswith(f"run the same command to resume: {shlex.join(command)}")
        assert not [task for task, pid in tasks.items() if _alive(pid)]
        # The noise is in the chief's log.
        assert "GRPC" in open(tmp_path / "logs" / "chief-0.log", errors="replace").read()
    finally:
        _stop(launcher)
