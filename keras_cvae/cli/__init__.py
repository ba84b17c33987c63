"""The command line: one module per command (train, export, generate, evaluate), each parse →
library call → print. Every command validates what it can before importing TensorFlow and
answers bad input with one line on stderr and exit status 2 (`--debug` shows the traceback)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from keras_cvae.cli import evaluate, export, generate, train
from keras_cvae.cli.common import EXIT_USAGE

COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "train": train.main,
    "export": export.main,
    "generate": generate.main,
    "evaluate": evaluate.main,
}


def dispatch(argv: Sequence[str] | None = None) -> int:
    """`python -m keras_cvae COMMAND ...`: route to the command's own parser."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write(
            f"keras_cvae: error: expected a command, one of: {', '.join(COMMANDS)} "
            f"(python -m keras_cvae COMMAND --help)\n"
        )
        return EXIT_USAGE
    return COMMANDS[argv[0]](argv[1:])
