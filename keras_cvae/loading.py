"""Loading whatever `run_dir.locate` found: the one way every command gets a model.

A run dir or checkpoint gives its Keras model (safe mode: no code runs; importing keras_cvae
registered every class it can name as soon as Keras was imported); an export gives a `SavedModelClient`, which only
calls the SavedModel's signatures. Each task's methods accept either.
"""

from __future__ import annotations

from typing import Any

from keras_cvae.run_dir import ModelLocation
from keras_cvae.serving_client import SavedModelClient


def load(location: ModelLocation) -> Any:
    """The model at `location`: a Keras model for a run dir or checkpoint, a SavedModelClient
    for an export."""
    if location.kind == "export":
        return SavedModelClient(location.path)
    import keras

    return keras.saving.load_model(location.path, safe_mode=True)
