"""Package attributes that import their module on first use (PEP 562), so that `import deeplab_tf`
and the converters' `--help` do not wait for TensorFlow."""

import importlib


def lazy_exports(package, exports, *, quiet_tensorflow=False):
    """(`__getattr__`, `__dir__`) for `package` (its `__name__`) exporting {name: submodule}; with
    `quiet_tensorflow` (the public API, whose names all need it) TensorFlow loads first without its start-up
    notices."""
    namespace = vars(importlib.import_module(package))

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if quiet_tensorflow:
            from deeplab_tf._tensorflow import import_tensorflow_quietly

            import_tensorflow_quietly()
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
