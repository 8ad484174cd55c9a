"""Asynchronous training as separate processes on localhost: chief + 2 workers + 1 ps via TF_CONFIG.

A worker is killed (SIGKILL) mid-run and restarted: ClusterCoordinator reschedules its steps and the
job still completes every step. Then the chief is killed and restarted: it resumes from its last
checkpoint. Every wait is bounded.
"""

import os
import re
import signal
import sys
import time

import pytest
import tensorflow as tf

from deeplab_tf import workdir as workdir_lib
from deeplab_tf.training import local_cluster
from training_utils import make_learnable_voc, small_config

STEPS = 12
DEADLINE_SECONDS = 420


def _log(log_dir, task):
    path = os.path.join(log_dir, f"{task}.log")
    return open(path, errors="replace").read() if os.path.exists(path) else ""


def _wait_for(predicate, what, processes, deadline):
    while time.time() < deadline:
        if predicate():
            return
        dead = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
        if "chief" in dead:
            break
        time.sleep(0.5)
    raise AssertionError(f"Timed out or the chief exited while waiting for {what}: exited {dead}")


def _progress_steps(text):
    return [int(step) for step in re.findall(r"^step (\d+)/", text, re.MULTILINE)]


@pytest.mark.timeout(DEADLINE_SECONDS + 120)
def test_worker_and_chief_killed_and_restarted(tmp_path):
    tfrecords = make_learnable_voc(str(tmp_path / "voc"))
    config = small_config(tfrecords, strategy="parameter_server", steps=STEPS, steps_per_schedule=2,
                          checkpoint_every_steps=4, checkpoint_every_minutes=100.0)
    config_file = tmp_path / "config.py"
    config_file.write_text("import json, ml_collections\n\n"
                           "def get_config():\n"
                           f"    return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n")
    workdir, log_dir = str(tmp_path / "run"), str(tmp_path / "logs")
    command = [sys.executable, "-m", "deeplab_tf.cli.train", f"--config={config_file}", f"--workdir={workdir}"]
    cluster = local_cluster.make_cluster(num_workers=2, num_ps=1)
    processes = {f"{task}-{index}": process
                 for (task, index), process in local_cluster.start_servers(command, cluster, log_dir=log_dir).items()}
    deadline = time.time() + DEADLINE_SECONDS
    try:
        processes["chief"] = local_cluster.start_task(command, cluster, "chief", 0, log_dir=log_dir)

        # Kill worker 1 once training is under way, then start it again on the same address.
        _wait_for(lambda: _progress_steps(_log(log_dir, "chief-0")), "the first steps", processes, deadline)
        processes["worker-1"].send_signal(signal.SIGKILL)
        processes["worker-1"].wait(timeout=30)
        killed_at = max(_progress_steps(_log(log_dir, "chief-0")))
        processes["worker-1"] = local_cluster.start_task(command, cluster, "worker", 1, log_dir=log_dir)

        # Kill the chief after a checkpoint later than the worker's death.
        checkpoints = workdir_lib.checkpoint_dir(workdir)

        def saved_after_kill():
            latest = tf.train.latest_checkpoint(checkpoints)
            return latest is not None and int(latest.rsplit("-", 1)[1]) > killed_at

        _wait_for(saved_after_kill, "a checkpoint after the worker was killed", processes, deadline)
        processes["chief"].send_signal(signal.SIGKILL)
        processes["chief"].wait(timeout=30)
        saved = int(tf.train.latest_checkpoint(checkpoints).rsplit("-", 1)[1])
        assert saved < STEPS, "the job finished before the chief could be killed; raise STEPS"

        processes["chief"] = local_cluster.start_task(command, cluster, "chief", 0, log_dir=log_dir)
        processes["chief"].wait(timeout=max(deadline - time.time(), 1))
        chief_log = _log(log_dir, "chief-0")
        assert processes["chief"].returncode == 0, chief_log[-3000:]
        assert f"at step {saved}." in chief_log.split("Resuming from")[-1].splitlines()[0]
        assert f"Training finished at step {STEPS}:" in chief_log
        assert tf.train.latest_checkpoint(checkpoints).endswith(f"ckpt-{STEPS}")
        model, _, _ = workdir_lib.load_model(workdir, output_stride=8)
        assert model(tf.zeros([1, 33, 33, 3]), training=False).shape == (1, 33, 33, 21)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
        for process in processes.values():
            process.wait(timeout=30)
