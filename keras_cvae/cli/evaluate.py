"""`evaluate.py` / `python -m keras_cvae evaluate`: any saved model, evaluated on the test set by
its task; writes metrics.json, report.md and the figures."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from keras_cvae.cli.common import OneLineParser, add_model_flags, load_test_data, run_command, writable_dir
from keras_cvae.errors import UsageError
from keras_cvae.run_dir import locate


def _evaluate(args: argparse.Namespace) -> int:
    if args.iw_samples < 1:
        raise UsageError(f"--iw-samples must be at least 1, got {args.iw_samples}")
    if args.limit is not None and args.limit < 2:
        raise UsageError(f"--limit must be at least 2, got {args.limit}")
    locations = [locate(args.model)] + ([locate(args.compare)] if args.compare else [])
    if len({location.task for location in locations}) > 1:
        raise UsageError(f"--compare needs two models of one task, got {' and '.join(location.task for location in locations)}")
    output = Path(args.output) if args.output else locations[0].default_output
    writable_dir(output, "output dir")
    dataset_name, dataset = load_test_data(locations[0], args)

    from keras_cvae.evaluation.report import comparison_table
    from keras_cvae.loading import load
    from keras_cvae.tasks import EvaluationOptions, get_task

    task = get_task(locations[0].task)
    results = []
    for index, location in enumerate(locations):
        out = output if index == 0 else output / "compared"
        print(f"Evaluating {location.path} on {dataset_name} ({dataset.source})", flush=True)
        options = EvaluationOptions(dataset_name=dataset_name, model_name=str(location.path),
                                    iw_samples=args.iw_samples, seed=args.seed, limit=args.limit,
                                    judge=not args.likelihood_only)
        history = location.run_dir.read_history() if location.kind == "run" else None
        metrics = task.evaluate(load(location), dataset, out, options, history)
        metrics["model"] = str(location.path)
        results.append(metrics)
        print(f"{location.path}: {task.summary(metrics)}; wrote {out}/metrics.json", flush=True)
    if len(results) == 2:
        from keras_cvae.atomic import atomic_write_text

        table = comparison_table(results)
        print(table)
        atomic_write_text(output / "comparison.md", table + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="evaluate.py",
        description="Evaluate a trained model on the test set: metrics.json, figures, report.md. "
        "Example: python evaluate.py --model saved_models/fashion_mnist-mlp/1",
    )
    add_model_flags(parser, "a SavedModel version dir (or export root), a run dir, or a checkpoint")
    parser.add_argument("--iw-samples", type=int, default=100, help="K for the importance-weighted NLL (default 100)")
    parser.add_argument("--output", help="output dir (default: <run dir>/evaluation or <version dir>-evaluation)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N test images")
    parser.add_argument("--likelihood-only", action="store_true",
                        help="only the likelihood metrics (ELBO, IW-NLL, latent usage): no reference classifier is "
                             "trained or loaded, so no conditional accuracy, FID or KID")
    parser.add_argument("--compare", help="a second model of the same task, evaluated on the same images and seeds")
    args = parser.parse_args(argv)
    return run_command(_evaluate, args, parser)
