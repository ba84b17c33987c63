"""keras_cvae: conditional variational autoencoders for Keras 3 / TensorFlow.

    >>> from keras_cvae import CVAE, export_saved_model
    >>> model = CVAE(image_shape=(28, 28, 1), num_classes=10)
    >>> model.compile(optimizer="adam")
    >>> model.fit(x, y, epochs=10)                 # x [N, 28, 28, 1] uint8, y int [N]
    >>> images = model.generate([0, 1, 2], seed=1)
    >>> export_saved_model(model, "saved_models/mine")

`__all__` is the public API. Its names are imported on first use, so that `import keras_cvae`
(and the command line's input validation) does not pay for importing TensorFlow. Each Keras
class registers itself with Keras when its module is imported; importing any of the models
(`from keras_cvae import CVAE`, or `import keras_cvae.models`) registers all of them and
FusedAdam, so `keras.saving.load_model` finds every class a keras_cvae `.keras` file names.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "CVAE": "keras_cvae.models.cvae",
    "CompletionCVAE": "keras_cvae.models.completion",
    "SemiSupervisedCVAE": "keras_cvae.models.semi_supervised",
    "FusedAdam": "keras_cvae.models.optimizers",
    "condition_vector": "keras_cvae.models.base",
    "Condition": "keras_cvae.conditions",
    "LoadedDataset": "keras_cvae.data",
    "load_dataset": "keras_cvae.data",
    "DataConfig": "keras_cvae.config",
    "ModelConfig": "keras_cvae.config",
    "TrainConfig": "keras_cvae.config",
    "RunConfig": "keras_cvae.config",
    "train": "keras_cvae.training",
    "TrainResult": "keras_cvae.training",
    "export_saved_model": "keras_cvae.export",
    "load": "keras_cvae.loading",
    "load_client": "keras_cvae.serving_client",
    "SavedModelClient": "keras_cvae.serving_client",
}
_MODULES = ("networks",)  # public submodules, also reachable as attributes

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"keras_cvae.{name}")
    raise AttributeError(f"module 'keras_cvae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
