"""keras_cvae: conditional variational autoencoders for Keras 3 / TensorFlow.

The public names are imported lazily, so that `import keras_cvae` (and the command line's
input validation) does not pay for importing TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CVAE": "keras_cvae.model",
    "DataConfig": "keras_cvae.config",
    "ModelConfig": "keras_cvae.config",
    "TrainConfig": "keras_cvae.config",
    "RunConfig": "keras_cvae.config",
    "load_dataset": "keras_cvae.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_cvae' has no attribute {name!r}")
