"""The error type for problems in a user's files and folders, and the output-folder check that raises it
(no TensorFlow here: the converters and binaries run it before anything slow, or noisy, starts)."""

import os
import tempfile


class DataError(ValueError):
    """A problem with the user's data (not a bug): the message says which file and what to do."""


def check_output_dir(output_dir, name=None):
    """Creates `output_dir` if needed and makes sure a file can be written there, before any work is done.

    Raises:
        DataError: it cannot be created or written to; the message starts with `name` (default
            "--output_dir=<output_dir>") and says the fix.
    """
    if "://" in output_dir:  # a remote file system (gs://...): TensorFlow reports its own errors
        return
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        reason = "a file of that name exists" if os.path.isfile(output_dir) else e.strerror
        raise DataError(f"{name or '--output_dir=' + output_dir}: cannot create it or write in it ({reason}): "
                        "choose a folder you can write to, or fix its permissions.") from None
