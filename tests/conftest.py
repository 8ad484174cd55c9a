import gc
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="module", autouse=True)
def _free_each_modules_models():
    """Collects what a test module's fixtures held (models, traced functions, TFLite converters) before the next
    module builds its own, so the suite's one process does not grow by every module's peak."""
    yield
    gc.collect()
