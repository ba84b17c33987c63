"""Loading a saved model, whatever `run_dir.locate` finds at a path: the one way every command
gets a model.

A run dir or checkpoint gives its Keras model (safe mode: no code runs; importing
keras_cvae.models first registers every class a keras_cvae file can name); an export gives a
`SavedModelClient`, which only calls the SavedModel's signatures. Each task's methods accept either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keras_cvae.run_dir import ModelLocation, locate
from keras_cvae.serving_client import SavedModelClient


def load(location: ModelLocation | str | Path) -> Any:
    """The model at `location` (a path, or what `locate` made of one): a Keras model for a run
    dir or checkpoint, a SavedModelClient for an export (a version dir or an export root).

    Example:
        >>> model = load("runs/fashion_mnist-mlp")            # the run's model.keras
        >>> client = load("saved_models/fashion_mnist-mlp")   # its newest export
    """
    if not isinstance(location, ModelLocation):
        location = locate(location)
    if location.kind == "export":
        return SavedModelClient(location.path)
    import keras

    import keras_cvae.models  # noqa: F401  (registers the classes a .keras file names)

    return keras.saving.load_model(location.path, safe_mode=True)
