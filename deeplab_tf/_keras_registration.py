"""Our Keras classes registered as soon as Keras is there, so `keras.saving.load_model` finds `DeepLabV3`,
`SegmentationLoss`, `MeanIoU`, `PolyLearningRate`, ... after a bare `import deeplab_tf`.

Keras imports a saved object's module only for its own packages; any other class must be registered before the
file is read. Importing our Keras modules at `import deeplab_tf` would load TensorFlow there (seconds, and in
every binary's --help), so the registration waits for Keras: at once if it is loaded, else right after its
import completes (a one-shot import hook).
"""

import importlib
import importlib.abc
import importlib.util
import sys

# The modules whose classes carry @keras.saving.register_keras_serializable (deeplab_tf.saving imports the rest).
_KERAS_MODULES = ("deeplab_tf.saving",)
_pending = False


def _register():
    global _pending
    try:
        for module in _KERAS_MODULES:
            importlib.import_module(module)
        _pending = False
    except ImportError:
        # Keras was first imported by one of our own modules, half-way through its import: importing them back
        # now is circular. The package's next public name registers them (`register_pending`).
        _pending = True


def register_pending():
    """Registers our classes if Keras' import came too early for it (see `_register`)."""
    if _pending:
        _register()


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds `keras` as the other finders do, and registers our classes once its module has run. Stays in place
    until then: TensorFlow looks Keras up (`importlib.util.find_spec`) long before anything imports it."""

    def __init__(self):
        self._searching = False

    def find_spec(self, name, path, target=None):
        if name != "keras" or self._searching:
            return None
        self._searching = True  # The search below goes through sys.meta_path again.
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._searching = False
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _register()

        spec.loader.exec_module = exec_then_register
        return spec


def register_when_keras_loads():
    if "keras" in sys.modules:
        _register()
    elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())
