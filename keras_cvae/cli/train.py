"""`train.py` / `python -m keras_cvae train`: parse, resolve the config, call training.train, print.

Flags left out keep their defaults (or `--recipe`'s values), or on `--resume` the values saved in
the run's config.json; a flag that `--resume` may not change, or that the run would ignore, is
refused in one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from keras_cvae.cli.common import (
    OneLineParser,
    add_config_flags,
    apply_settings,
    given_settings,
    run_command,
    writable_dir,
)
from keras_cvae.config import RunConfig
from keras_cvae.data import dataset_name, get_spec, load_configured
from keras_cvae.distribute import is_chief
from keras_cvae.errors import UsageError
from keras_cvae.recipes import load_recipe
from keras_cvae.run_dir import RunDir, default_export_root, default_run_dir


def parser(prog: str = "train.py") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Train a conditional VAE. Example: python train.py --dataset fashion_mnist --epochs 10",
    )
    parser.add_argument("--recipe", metavar="FILE.toml",
                        help="start from a recipe's settings (recipes/); flags override it")
    add_config_flags(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def resolve_config(args: argparse.Namespace) -> tuple[RunConfig, RunDir]:
    """The run's config (defaults < recipe, or the saved config on --resume, < command line) and
    its run dir."""
    if args.recipe and args.resume:
        raise UsageError("--resume continues from the run's own config.json (which records its recipe); drop --recipe")
    recipe = load_recipe(args.recipe) if args.recipe else None
    given = [*(recipe.values if recipe else ()), *given_settings(args)]
    config = recipe.config() if recipe else RunConfig()
    apply_settings(config, given)
    config.data.dataset = dataset_name(config.data.dataset, config.data.data_dir)
    run_dir = RunDir(default_run_dir(config))
    if run_dir.resumes(args.resume, config.train.strategy) and run_dir.config_path.exists():
        saved = run_dir.load_config()
        for item, value in given:
            if not item.resumable and saved.get(item) != value:
                raise UsageError(
                    f"{run_dir.path} was trained with {item.name}={saved.get(item)!r}; --resume cannot change it to "
                    f"{value!r} (drop {item.flag} or use a new --run-dir)")
        apply_settings(saved, given)
        config = saved
    elif not args.resume and is_chief():  # only the chief writes the run dir, so only it needs it empty
        run_dir.refuse_to_overwrite()
    config.train.run_dir = str(run_dir.path)
    config.train.export = str(default_export_root(config))
    config.validate()
    config.refuse_unused([item for item, _ in given])
    return config, run_dir


def _train(args: argparse.Namespace) -> int:
    config, run_dir = resolve_config(args)
    if config.data.data_dir is None:
        get_spec(config.data.dataset)  # an unknown name fails before anything is written
    dataset = load_configured(config.data)
    from keras_cvae.tasks import get_task

    get_task(config.data.task).check(config, dataset)  # before the run dir is made
    writable_dir(run_dir.path, "run dir")

    from keras_cvae.training import train

    print(f"Training on {config.data.dataset} from {dataset.source} into {run_dir.path}", flush=True)
    result = train(config, dataset, run_dir, resume=args.resume)
    if result.export_dir is None:
        print("Done (worker): the chief writes the run dir and the export", flush=True)
        return 0
    last = result.history[-1] if result.history else {}
    print(
        f"Done: {len(result.history)} epochs, final validation ELBO {last.get('val_elbo', float('nan')):.2f} "
        f"nats/image; run dir {run_dir.path} (history.csv, samples/, elbo_curve.png, model.keras); "
        f"SavedModel {result.export_dir}",
        flush=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    train_parser = parser()
    return run_command(_train, train_parser.parse_args(argv), train_parser)
