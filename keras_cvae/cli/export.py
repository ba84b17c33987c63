"""`python -m keras_cvae export`: write a trained run's model.keras as a new SavedModel version."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from keras_cvae.cli.common import OneLineParser, run_command, writable_dir
from keras_cvae.errors import UsageError
from keras_cvae.run_dir import RunDir, default_export_root, locate


def _export(args: argparse.Namespace) -> int:
    run_dir = RunDir(args.run_dir)
    if not run_dir.model_path.is_file():
        raise UsageError(f"{run_dir.path} holds no model.keras; train it first (python train.py --run-dir {run_dir.path})")
    location = locate(run_dir.path)  # refuses a run dir without config.json
    config = run_dir.load_config()
    export_root = Path(args.export) if args.export else default_export_root(config)
    if args.version is not None and (export_root / str(args.version)).exists():
        raise UsageError(f"{export_root / str(args.version)} already exists; choose another --version")
    writable_dir(export_root, "export dir")

    from keras_cvae.export import export_saved_model
    from keras_cvae.loading import load

    version_dir = export_saved_model(load(location), export_root, version=args.version, dataset=config.data.dataset,
                                     data=location.data)
    print(f"Exported {run_dir.model_path} to {version_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="keras_cvae export", description="Export a trained run as a SavedModel.")
    parser.add_argument("--run-dir", required=True, help="a run directory holding model.keras and config.json")
    parser.add_argument("--export", help="export root (default: the run's --export)")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    return run_command(_export, args, parser)
