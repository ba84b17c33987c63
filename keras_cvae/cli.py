"""Command line: `train`, `export`, `generate` and `evaluate`.

Every command validates its input before importing TensorFlow, and answers bad input with one
line on stderr and exit status 2 (`--debug` shows the traceback instead). Flags left out keep
their dataclass defaults, or on `--resume` the values saved in the run's config.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from keras_cvae.config import ARCHITECTURES, LIKELIHOODS, ConfigError, RunConfig
from keras_cvae.data import DATASETS, DataError, load_dataset

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of dumping the usage text."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_USAGE)


def _hidden_units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 400 or 512,256, got {text!r}") from None
    return units


def _writable_dir(path: Path, what: str) -> None:
    """Create `path` if needed and prove it writable, before any long work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"{what} {path} is not writable ({err.strerror or err})") from None


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    """Run `command`, turning the project's own input errors into one line and exit status 2."""
    _quiet_tensorflow()
    try:
        return command(args)
    except (UsageError, ConfigError, DataError, FileNotFoundError) as err:
        if getattr(args, "debug", False):
            raise
        message = str(err).replace("\n", " ")
        sys.stderr.write(f"{prog}: error: {message}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; files already written are intact\n")
        return 130


# ------------------------------------------------------------------------------------------
# train

# flag dest → (config section, field)
TRAIN_FLAGS = {
    "dataset": ("data", "dataset"),
    "data_dir": ("data", "data_dir"),
    "limit": ("data", "limit"),
    "validation_fraction": ("data", "validation_fraction"),
    "arch": ("model", "arch"),
    "hidden_units": ("model", "hidden_units"),
    "latent_dim": ("model", "latent_dim"),
    "likelihood": ("model", "likelihood"),
    "beta": ("model", "beta"),
    "conditional": ("model", "conditional"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "learning_rate": ("train", "learning_rate"),
    "seed": ("train", "seed"),
    "kl_warmup": ("train", "kl_warmup"),
    "run_dir": ("train", "run_dir"),
    "export": ("train", "export"),
    "tensorboard": ("train", "tensorboard"),
    "jit_compile": ("train", "jit_compile"),
}
# What may change when a run is resumed; everything else must match the saved config.
RESUMABLE_FIELDS = {"epochs", "export", "tensorboard", "run_dir", "data_dir", "jit_compile"}


def train_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Train a conditional VAE. Example: python train.py --dataset fashion_mnist --epochs 10",
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    add("--dataset", choices=sorted(DATASETS), help="dataset (default mnist)")
    add("--data-dir", help="folder of the four IDX files (.gz or raw) or a Keras-style .npz; the only source tried")
    add("--limit", type=int, help="use only the first N training images")
    add("--validation-fraction", type=float, help="share of the training set held out for validation (default 0.1)")
    add("--arch", choices=ARCHITECTURES, help="network architecture (default mlp)")
    add("--hidden-units", type=_hidden_units, help="dense layer sizes, e.g. 400 or 512,512 (default mlp 400, conv 128)")
    add("--latent-dim", type=int, help="size of z (default 20)")
    add("--likelihood", choices=LIKELIHOODS, help="pixel likelihood (default bernoulli)")
    add("--beta", type=float, help="weight of the KL term (default 1.0)")
    add("--no-conditional", dest="conditional", action="store_false", help="train a plain VAE (no condition)")
    add("--epochs", type=int, help="total number of epochs, also with --resume (default 100)")
    add("--batch-size", type=int, help="batch size (default 128)")
    add("--learning-rate", type=float, help="Adam learning rate (default 1e-3)")
    add("--seed", type=int, help="random seed (default 0)")
    add("--kl-warmup", type=int, help="raise the KL weight linearly over this many epochs (default 0: off)")
    add("--run-dir", help="where the run's files go (default runs/<dataset>-<arch>)")
    add("--export", help="SavedModel export root (default saved_models/<dataset>-<arch>)")
    add("--tensorboard", action="store_true", help="log scalars and sample grids for TensorBoard")
    add("--no-jit", dest="jit_compile", action="store_false", help="do not XLA-compile the train step")
    add("--resume", action="store_true", default=False, help="continue the run in --run-dir")
    add("--debug", action="store_true", default=False, help="show tracebacks")
    return parser


def _apply(config: RunConfig, given: dict[str, Any]) -> None:
    for dest, value in given.items():
        section, field = TRAIN_FLAGS[dest]
        setattr(getattr(config, section), field, value)


def resolve_train_config(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """The run's config (defaults < saved config on --resume < command line) and its run dir."""
    given = {dest: value for dest, value in vars(args).items() if dest in TRAIN_FLAGS}
    if "hidden_units" in given:
        given["hidden_units"] = tuple(given["hidden_units"])
    probe = RunConfig()
    _apply(probe, given)
    default_name = f"{probe.data.dataset}-{probe.model.arch}"
    run_dir = Path(probe.train.run_dir or Path("runs") / default_name)

    saved_config = run_dir / "config.json"
    if args.resume and saved_config.exists():
        config = RunConfig.load(saved_config)
        for dest, value in given.items():
            section, field = TRAIN_FLAGS[dest]
            saved = getattr(getattr(config, section), field)
            if field not in RESUMABLE_FIELDS and saved != value:
                flag = "--" + dest.replace("_", "-")
                raise UsageError(
                    f"{run_dir} was trained with {field}={saved!r}; --resume cannot change it to {value!r} "
                    f"(drop {flag} or use a new --run-dir)"
                )
        _apply(config, given)
    else:
        config = probe
        if not args.resume and run_dir.exists() and any(run_dir.iterdir()):
            raise UsageError(
                f"run dir {run_dir} is not empty; pass --resume to continue it, or choose another --run-dir"
            )
    config.train.run_dir = str(run_dir)
    config.train.export = config.train.export or str(Path("saved_models") / default_name)
    config.validate()
    return config, run_dir


def _train(args: argparse.Namespace) -> int:
    config, run_dir = resolve_train_config(args)
    _writable_dir(run_dir, "run dir")
    dataset = load_dataset(config.data.dataset, config.data.data_dir)
    config.save(run_dir / "config.json")

    from keras_cvae.training import train

    print(f"Training on {config.data.dataset} from {dataset.source} into {run_dir}", flush=True)
    result = train(config, dataset, run_dir, resume=args.resume)
    last = result.history[-1] if result.history else {}
    val_elbo = last.get("val_elbo", float("nan"))
    print(
        f"Done: {len(result.history)} epochs, final validation ELBO {val_elbo:.2f} nats/image; "
        f"run dir {run_dir} (history.csv, samples/, elbo_curve.png, model.keras)",
        flush=True,
    )
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    parser = train_parser()
    args = parser.parse_args(argv)
    return run_command(_train, args, parser.prog)


# ------------------------------------------------------------------------------------------
# python -m keras_cvae <command>

COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "train": train_main,
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
