import ctypes
import ctypes.util
import gc
import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's oneDNN build keeps large tensors in a pool it never returns to the system: the suite's one process
# grew by each module's peak (a freed 3 GB tensor left RSS at 7 GB) to over 12 GB, and CI was killed for memory.
# The system allocator returns what is freed; the console scripts the tests start inherit it.
os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
# glibc keeps freed memory for reuse; a heavy module's 300-400 MB of it goes back with malloc_trim (glibc only).
_MALLOC_TRIM = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", lambda pad: 0)


@pytest.fixture(scope="module", autouse=True)
def _free_each_modules_models():
    """Collects what a test module's fixtures held (models, traced functions, TFLite converters) before the next
    module builds its own, so the suite's one process does not grow by every module's peak."""
    yield
    segment = sys.modules.get("deeplab_tf.evaluation.segment")
    if segment is not None:  # its cache keeps the last models segmented, and their traced functions, alive
        segment._predict_fn.cache_clear()
    gc.collect()
    _MALLOC_TRIM(0)
