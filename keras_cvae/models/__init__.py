"""The Keras models, their networks and their optimizer.

Importing this package (which importing any module inside it does first) registers every class
that a `.keras` file written by keras_cvae can name, so `keras.saving.load_model` finds them all:
the models and FusedAdam, whichever of them the caller asked for.
"""

from keras_cvae.models import (  # noqa: F401
    base,
    completion,
    cvae,
    optimizers,  # noqa: F401  (first: it needs nothing of the others)
    semi_supervised,
)
