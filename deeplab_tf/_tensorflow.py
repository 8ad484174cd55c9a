"""TensorFlow imported without the lines its C++ start-up prints before its logging reads TF_CPP_MIN_LOG_LEVEL:
the binaries (cli/tensorflow_start.py) and the package's lazy names (`import deeplab_tf`, then first use) load
it through here, so a CPU-only machine shows no CUDA or oneDNN notices that read as failures.
"""

import os
import re
import sys
import tempfile

# What TensorFlow 2.21 writes to stderr on every start-up, whatever TF_CPP_MIN_LOG_LEVEL says (its C++
# logging is not yet initialised): the oneDNN notice, and twice over, no CUDA driver on a CPU machine.
_START_UP_LINES = re.compile(r"All log messages before absl::InitializeLog\(\) is called|\] oneDNN custom operations "
                             r"are on|\] Could not find cuda drivers|\] failed call to cuInit")


def import_tensorflow_quietly():
    """Imports TensorFlow and lists its devices with stderr captured, then writes back every captured line
    but the start-up notices (an import error's message and traceback still reach the user). Only when
    TF_CPP_MIN_LOG_LEVEL asks for warnings and errors only (our default) and TensorFlow is not loaded yet:
    TF_CPP_MIN_LOG_LEVEL=0 shows everything, as it is, should TensorFlow itself fail to start."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") not in ("2", "3"):
        return
    sys.stderr.flush()
    original = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe logs here
        finally:
            sys.stderr.flush()
            os.dup2(original, 2)
            os.close(original)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not _START_UP_LINES.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()
