"""Every shell command in README.md's ```bash blocks, read at run time, is a template whose parts exist.

For our console scripts (setup.py), `python datasets/*.py` and `python -m experiments.<module>`: the binary,
file or module exists and every --flag is in its `--helpfull`; `--config=<file>[:<setting>]` names an
experiment file and setting that load, and every `--config.<section>.<field>=` override names a field of
that config. A command after deeplab-local-cluster's `--` is checked the same way. Other programs (pip,
pytest, tensorflow_model_server, curl) are reported as skipped: their flags are not ours to check. Paths to
data the user supplies are not checked.
"""

import functools
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

from test_console_scripts import REPO, _env, console_script_command, console_scripts


def readme_commands():
    """[(block number, command as an argv list)] of README.md's ```bash blocks; continuation lines joined,
    comments dropped, `a && b` split into two commands."""
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    commands = []
    for number, block in enumerate(re.findall(r"```bash\n(.*?)```", readme, re.DOTALL), 1):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            while argv:
                end = argv.index("&&") if "&&" in argv else len(argv)
                commands.append((number, argv[:end]))
                argv = argv[end + 1:]
    return commands


@functools.cache
def flags_of(program):
    """The flag names `program` (a console script name or a datasets/ file) lists in --helpfull."""
    if program in console_scripts():
        command = console_script_command(program, console_scripts()[program], "--helpfull")
    elif program.startswith("experiments."):
        command = [sys.executable, "-m", program, "--helpfull"]
    else:
        command = [sys.executable, program, "--helpfull"]
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(re.findall(r"^\s+--(?:\[no\])?([\w.]+):", result.stdout, re.MULTILINE))


def _load_experiment(value):
    """The ConfigDict of --config=<file>[:<setting>]: the file's get_config(setting)."""
    path, _, setting = value.partition(":")
    assert os.path.exists(os.path.join(REPO, path)), f"--config={value}: {path} does not exist"
    spec = importlib.util.spec_from_file_location("readme_config", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(setting) if setting else module.get_config()


def check_command(argv):
    """Asserts the binary and flags of one of our commands exist; returns the program checked."""
    program, args = argv[0], argv[1:]
    if program == "python" and args and args[0].startswith("datasets/"):
        program, args = args[0], args[1:]
        assert os.path.exists(os.path.join(REPO, program)), f"{program} does not exist"
    elif program == "python" and args[:1] == ["-m"] and len(args) > 1 and args[1].startswith("experiments."):
        program, args = args[1], args[2:]
        assert os.path.exists(os.path.join(REPO, *program.split(".")) + ".py"), f"{program} does not exist"
    assert program in console_scripts() or program.startswith(("datasets/", "experiments.")), f"{program} is not ours"
    if "--" in args:  # deeplab-local-cluster -- <command>
        inner = args[args.index("--") + 1:]
        args = args[:args.index("--")]
        check_command(inner)
    known = flags_of(program) if args else set()
    config = None
    for arg in args:
        assert arg.startswith("--"), f"{program}: unexpected argument {arg!r}"
        name, _, value = arg[2:].partition("=")
        if name == "config":
            config = _load_experiment(value)
        elif name.startswith("config."):
            assert config is not None, f"{arg} comes before --config"
            section, _, field = name[len("config."):].partition(".")
            assert section in config and field in config[section], f"{program}: no config field {name}"
        else:
            assert name in known or (name.startswith("no") and name[2:] in known), f"{program}: no flag --{name}"
    return program


def _ours(argv):
    return argv[0] in console_scripts() or (argv[0] == "python" and len(argv) > 1 and (
        argv[1].startswith("datasets/") or (argv[1] == "-m" and len(argv) > 2 and argv[2].startswith("experiments."))))


COMMANDS = readme_commands()


def test_readme_has_commands():
    assert any(_ours(argv) for _, argv in COMMANDS)


@pytest.mark.parametrize("argv", [argv for _, argv in COMMANDS],
                         ids=[f"block{number}-{' '.join(argv[:2])[:40]}" for number, argv in COMMANDS])
def test_readme_command(argv):
    if not _ours(argv):
        pytest.skip(f"not our program, flags not checked: {' '.join(argv)[:100]}")
    check_command(argv)
