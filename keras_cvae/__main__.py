"""`python -m keras_cvae COMMAND ...` (train, export, generate, evaluate)."""

import sys

from keras_cvae.cli import dispatch

sys.exit(dispatch())
