"""keras_cvae: conditional variational autoencoders for Keras 3 / TensorFlow.

The public names are imported lazily, so that `import keras_cvae` (and the command line's
input validation) does not pay for importing TensorFlow. Every class a `.keras` file written by
keras_cvae can name (the models and FusedAdam) is registered with Keras as soon as Keras itself
is imported, before or after this package, so `keras.saving.load_model` finds them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CVAE": "keras_cvae.models.cvae",
    "CompletionCVAE": "keras_cvae.models.completion",
    "FusedAdam": "keras_cvae.models.optimizers",
    "SemiSupervisedCVAE": "keras_cvae.models.semi_supervised",
    "DataConfig": "keras_cvae.config",
    "ModelConfig": "keras_cvae.config",
    "TrainConfig": "keras_cvae.config",
    "RunConfig": "keras_cvae.config",
    "load_dataset": "keras_cvae.data",
}
_REGISTERING_PACKAGE = "keras_cvae.models"  # importing it registers every serializable class

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_cvae' has no attribute {name!r}")


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Imports keras_cvae.models right after `keras` is first imported, wherever from.

    If the import of keras came from inside keras_cvae.models, that import is already under way
    and Python hands back the partly initialised package: it finishes registering by itself.
    """

    def find_spec(self, name, path, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            importlib.import_module(_REGISTERING_PACKAGE)

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    importlib.import_module(_REGISTERING_PACKAGE)
else:
    sys.meta_path.insert(0, _RegisterWhenKerasLoads())
