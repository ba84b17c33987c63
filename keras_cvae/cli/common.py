"""What every command shares: a parser that reports errors in one line, the conversion of the
project's own errors into one line and exit status 2, and the train flags generated from the
config's declarations."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, NoReturn

from keras_cvae.config import ConfigError, DataConfig, RunConfig, Setting, settings
from keras_cvae.data import LoadedDataset, load_configured
from keras_cvae.errors import DataError, NonFiniteLossError, SlowPathWarning, UsageError
from keras_cvae.run_dir import ModelLocation

EXIT_USAGE = 2
EXIT_TRAINING_FAILED = 3


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of dumping the usage text."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_USAGE)


def writable_dir(path: Path, what: str) -> None:
    """Create `path` if needed and prove it writable, before any long work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A uniquely named probe: workers of one multi-worker run check the same dir at once.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test-"):
            pass
    except OSError as err:
        raise UsageError(f"{what} {path} is not writable ({err.strerror or err})") from None


def add_model_flags(parser: argparse.ArgumentParser, model_help: str) -> None:
    """The flags of a command that reads a saved model and its dataset's test images."""
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--dataset", help="dataset of the test images (default: the model's)")
    parser.add_argument("--data-dir", help="the IDX files, .npz or image folder (default: the one the model was "
                                           "trained from, else the dataset's usual places)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every noise draw (default 0)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def load_test_data(location: ModelLocation, args: argparse.Namespace) -> tuple[str, LoadedDataset]:
    """The dataset a saved model was trained on (its name and arrays), found again from its
    recorded data settings; --dataset and --data-dir override them."""
    data = DataConfig(**location.data) if location.data else DataConfig()
    data.dataset = args.dataset or location.dataset
    if data.dataset is None:
        raise UsageError("the model does not record its dataset; pass --dataset")
    return data.dataset, load_configured(data, args.data_dir)


ARGUMENT_NAME = re.compile(r"`([a-z][a-z0-9_]*)(?:=([^`]*))?`")


def as_flags(text: str, parser: argparse.ArgumentParser) -> str:
    """`text` with the library's argument names (`latent_dim`, `task=completion`,
    `conditional=False`) written as `parser`'s flags (--latent-dim, --task completion,
    --no-conditional); names the parser has no flag for stay as they are."""
    flags, switches = {}, {}
    for action in parser._actions:
        if action.option_strings:
            name = action.dest.rsplit(".", 1)[-1]
            flags.setdefault(name, action.option_strings[0])
            if action.const is not None:
                switches[(name, str(action.const))] = action.option_strings[0]

    def flag(match: re.Match) -> str:
        name, value = match.groups()
        if value is not None and (name, value) in switches:
            return switches[(name, value)]
        if name not in flags:
            return match.group(0)
        return flags[name] if value is None else f"{flags[name]} {value}"

    return ARGUMENT_NAME.sub(flag, text)


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                parser: argparse.ArgumentParser) -> int:
    """Run `command`, turning the project's own input errors into one line and exit status 2,
    the library's argument names shown as the parser's flags."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    prog = parser.prog
    with warnings.catch_warnings():
        warnings.showwarning = one_line_warnings(prog, parser, warnings.showwarning)
        return _run(command, args, parser)


def one_line_warnings(prog: str, parser: argparse.ArgumentParser, fallback: Callable) -> Callable:
    """A `warnings.showwarning` that prints the library's slow-path warnings as one line,
    `<prog>: warning: …` with flags for argument names, and leaves any other warning to `fallback`."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, SlowPathWarning):
            sys.stderr.write(f"{prog}: warning: {as_flags(str(message), parser)}\n")
        else:
            fallback(message, category, filename, lineno, file, line)

    return show


def _run(command: Callable[[argparse.Namespace], int], args: argparse.Namespace,
         parser: argparse.ArgumentParser) -> int:
    prog = parser.prog
    try:
        return command(args)
    except (UsageError, ConfigError, DataError, FileNotFoundError) as err:
        if getattr(args, "debug", False):
            raise
        message = as_flags(str(err).replace("\n", " "), parser)
        sys.stderr.write(f"{prog}: error: {message}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; files already written are intact\n")
        return 130
    except NonFiniteLossError as err:
        if getattr(args, "debug", False):
            raise
        sys.stderr.write(f"{prog}: error: {err}\n")
        return EXIT_TRAINING_FAILED


# ------------------------------------------------------------------------------------------
# Flags generated from the config


def _dest(item: Setting) -> str:
    return f"{item.section}.{item.name}"


def _argument_type(item: Setting) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return item.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = getattr(item.parse, "__name__", "value")  # argparse names the type in its errors
    return parse


def add_config_flags(parser: argparse.ArgumentParser, only: Collection[str] | None = None) -> None:
    """One flag per declared setting (`config.setting`), or per setting named in `only`; a flag
    left out is absent from the parsed namespace, so defaults < saved config < command line can be
    told apart."""
    for item in settings():
        if only is not None and item.name not in only:
            continue
        default = "" if item.default is None else f" (default {item.default})"
        if item.switch:
            for flag, value in item.switch.items():
                parser.add_argument(flag, dest=_dest(item), action="store_const", const=value,
                                    default=argparse.SUPPRESS, help=item.help if value != item.default else None)
        else:
            parser.add_argument(item.flag, dest=_dest(item), type=_argument_type(item), choices=item.choices,
                                metavar=None if item.choices else item.name.upper(),
                                default=argparse.SUPPRESS, help=item.help + default)
    for action in parser._actions:  # the settings' help names each other as flags
        if action.help:
            action.help = as_flags(action.help, parser)


def given_settings(args: argparse.Namespace) -> list[tuple[Setting, Any]]:
    """The settings given on the command line, with their values."""
    values = vars(args)
    return [(item, values[_dest(item)]) for item in settings() if _dest(item) in values]


def apply_settings(config: RunConfig, given: list[tuple[Setting, Any]]) -> None:
    for item, value in given:
        config.set(item, value)
