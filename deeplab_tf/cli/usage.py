"""What every binary does with its flags' values and its user's mistakes, without defining any flag."""

import contextlib
import sys

from absl import app


def require(flag, example):
    """The flag's value; a usage error naming it (with an example) if it is unset."""
    if not flag.value:
        raise app.UsageError(f"--{flag.name} is required, e.g. --{flag.name}={example}")
    return flag.value


@contextlib.contextmanager
def exit_on_user_error(program):
    """Ends the program with the error's one-line message (exit status 1) instead of a traceback
    when a user mistake surfaces: a missing file, an empty split, a wrong checkpoint."""
    import tensorflow as tf  # Here, not at the top: a binary's --help must not wait for TensorFlow.

    from deeplab_tf.data.faults import op_error_summary

    try:
        yield
    except tf.errors.ResourceExhaustedError as error:
        sys.exit(f"{program}: out of memory ({op_error_summary(error)}); evaluate large images "
                 "in tiles with --window_size=513, or use fewer --eval_scales.")
    except tf.errors.OpError as error:
        sys.exit(f"{program}: {op_error_summary(error)}")
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        sys.exit(f"{program}: {error}")
