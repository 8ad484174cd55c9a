"""Every binary the package installs, and every converter in datasets/, answers --help: exit 0, its own
description and its own flags (a duplicate flag definition or a broken import fails here first).

The console scripts are read from this checkout's setup.py (the installed metadata may come from another
checkout), and run as the installed wrappers do: `from <module> import <function>; <function>()`, with
sys.argv[0] set to the script name, so absl sees what it sees behind a pip-generated wrapper.
"""

import ast
import glob
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def console_scripts():
    """{name: "module:function"} from setup.py's entry_points, without running setup.py."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            entries = ast.literal_eval(node.value)["console_scripts"]
            return dict(entry.replace(" ", "").split("=", 1) for entry in entries)
    raise AssertionError("setup.py has no entry_points")


def converter_scripts():
    return sorted(os.path.relpath(path, REPO) for path in glob.glob(os.path.join(REPO, "datasets", "build_*.py")))


def _env():
    return {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}


def console_script_command(name, target, *args):
    """The command an installed console script `name` = `target` ("module:function") runs."""
    module, function = target.split(":")
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {function}; sys.exit({function}())"
    return [sys.executable, "-c", code, *args]


def _lists_flag(help_text, flag):
    return f"--{flag}:" in help_text or f"--[no]{flag}:" in help_text  # absl shows booleans as --[no]flag.


def _help(command):
    return subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)


def _own_flags(module_path):
    """The flag names DEFINE_*d in a source file."""
    source = open(module_path, encoding="utf-8").read()
    return re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source)


def test_setup_lists_every_cli_module():
    modules = {target.split(":")[0] for target in console_scripts().values()}
    cli = {f"deeplab_tf.cli.{os.path.basename(p)[:-3]}" for p in glob.glob(os.path.join(REPO, "deeplab_tf/cli/*.py"))}
    assert modules <= cli
    assert "deeplab-local-cluster" in console_scripts()


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_console_script_help(name):
    target = console_scripts()[name]
    result = _help(console_script_command(name, target, "--help"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    # The module docstring starts with the binary's name, and its own flags are listed.
    assert result.stdout.lstrip().startswith(f"{name}:"), result.stdout[:500]
    module_path = os.path.join(REPO, *target.split(":")[0].split(".")) + ".py"
    for flag in _own_flags(module_path):
        assert _lists_flag(result.stdout, flag), f"{name} --help does not list --{flag}"


@pytest.mark.parametrize("script", converter_scripts())
def test_converter_help(script):
    result = _help([sys.executable, script, "--help"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "flags:" in result.stdout and "python datasets/" in result.stdout, result.stdout[:500]
    for flag in _own_flags(os.path.join(REPO, script)):
        assert _lists_flag(result.stdout, flag), f"{script} --help does not list --{flag}"


def test_local_cluster_log_dir_flag_is_listed():
    """--log_dir is absl.logging's flag, reused: defining it again was a DuplicateFlagError (issue 12, item 1)."""
    result = _help(console_script_command("deeplab-local-cluster", console_scripts()["deeplab-local-cluster"],
                                          "--help"))
    assert "--log_dir:" in result.stdout and "--num_ps:" in result.stdout, result.stdout


@pytest.mark.parametrize("inference_only, preset, expected", [
    (False, None, None), (True, None, "1"), (True, "0", "0"), (False, "0", "0")])
def test_only_inference_tools_let_onednn_keep_laid_out_weights(monkeypatch, inference_only, preset, expected):
    """entry.run(inference_only=True) (deeplab-eval, deeplab-vis) sets TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 for
    its process unless the user set it; the other tools, which train or trace for others, leave it alone."""
    from deeplab_tf.cli import entry

    # setenv first, so that monkeypatch restores the variable's absence after entry.run set it: leaked into
    # this process, it would reach the trainers that later tests start (and stall their weights).
    monkeypatch.setenv(entry.ASSUME_FROZEN_WEIGHTS, preset or "")
    if preset is None:
        monkeypatch.delenv(entry.ASSUME_FROZEN_WEIGHTS)
    monkeypatch.setattr(entry.app, "run", lambda main, flags_parser: main(["tool"]))  # absl runs once a process
    seen = []
    entry.run(lambda argv: seen.append(os.environ.get(entry.ASSUME_FROZEN_WEIGHTS)), __name__,
              inference_only=inference_only)
    assert seen == [expected]


def test_only_eval_and_vis_opt_in():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deeplab_tf", "cli")
    for name in ("train", "demo", "export", "local_cluster", "eval", "vis"):
        source = open(os.path.join(root, name + ".py")).read()
        assert ("inference_only=True" in source) == (name in ("eval", "vis")), name


def test_a_tool_that_trains_refuses_frozen_weights_from_the_environment(tmp_path):
    """A user who exported TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 for serving gets a clear stop from deeplab-train,
    not a training whose convolutions keep their first weights."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(["deeplab-train", "--config=experiments/configs/voc_recipe.py:stage1_trainaug_os16",
                             f"--workdir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=root,
                            env=dict(os.environ, TF_ONEDNN_ASSUME_FROZEN_WEIGHTS="1", TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 1
    assert "deeplab-train: TF_ONEDNN_ASSUME_FROZEN_WEIGHTS is on" in result.stderr
    assert "Traceback" not in result.stderr and not os.path.exists(tmp_path / "run")
