"""absl's app.run for our binaries, so that `--help` of an installed console script or a converter says
what `python -m` would: the tool's docstring and its flags, then exit 0.

Without it a console script's `--help` printed only "USAGE: deeplab-train [flags]": absl takes the usage
text from `__main__` (the pip-generated wrapper, which has no docstring) and lists the flags of the module
named by sys.argv[0] (the wrapper's path, which defines none). absl also exits 1 after printing help.
"""

import logging as python_logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from deeplab_tf.constants import ASSUME_FROZEN_WEIGHTS

HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def _asked_for_help(argv):
    """Whether a help flag comes before `--` (after it, the flags belong to a wrapped command)."""
    own = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    return any(arg in HELP_FLAGS for arg in own)


def parse_flags(argv):
    """absl's flag parsing, except that printing the help asked for exits 0."""
    try:
        return app.parse_flags_with_usage(argv)
    except SystemExit as exit_:
        if exit_.code == 1 and _asked_for_help(argv):
            sys.exit(0)  # Help was asked for and printed: a success.
        raise


def _hide_tensorflow_info(record):
    """Drops INFO (and DEBUG) records logged from TensorFlow's own modules; keeps warnings and ours."""
    return record.levelno >= python_logging.WARNING or f"{os.sep}tensorflow{os.sep}" not in record.pathname


def run(main, module_name="__main__", *, flags_parser=parse_flags, inference_only=False):
    """Runs `main` as app.run does, with `module_name`'s docstring and key flags as the usage text.

    Args:
        main: the tool's main(argv).
        module_name: `__name__` of the module that defines main and the flags.
        flags_parser: parses argv (`parse_flags`, or a tool's wrapper around it).
        inference_only: the tool never changes a model's weights after running it, so its process
            may let oneDNN keep laid-out weights (`ASSUME_FROZEN_WEIGHTS`; a value the user set wins).
    """
    if inference_only:
        os.environ.setdefault(ASSUME_FROZEN_WEIGHTS, "1")
    module = sys.modules[module_name]

    def quiet_main(argv):
        # TensorFlow's Python INFO lines (checkpoint sharding, ~300 renamed captures while saving) bury the
        # tool's own report and progress (absl INFO, kept); --verbosity=0 shows them again.
        if not flags.FLAGS["verbosity"].present:
            absl_logging.get_absl_handler().addFilter(_hide_tensorflow_info)
        return main(argv)

    if module_name != "__main__":
        sys.modules["__main__"].__doc__ = module.__doc__
        for flag in flags.FLAGS.get_key_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(quiet_main, flags_parser=flags_parser)
