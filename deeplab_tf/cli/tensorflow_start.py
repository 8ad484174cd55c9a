"""Imported first by the binaries and converters that use TensorFlow: imports it without the lines its C++
start-up prints before its logging reads TF_CPP_MIN_LOG_LEVEL (not when only --help is asked for: the help
stays quick and free of TensorFlow).
"""

import sys

from deeplab_tf._tensorflow import import_tensorflow_quietly
from deeplab_tf.cli.entry import _asked_for_help

if not _asked_for_help(sys.argv):
    import_tensorflow_quietly()
