"""`python -m keras_cvae generate`: a picture from any saved model, drawn by its task: a grid of
samples (one row per category, or a sweep of a continuous condition), one test image's z under
every category, or completed test images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from keras_cvae.cli.common import OneLineParser, add_model_flags, load_test_data, run_command, writable_dir
from keras_cvae.errors import UsageError
from keras_cvae.run_dir import locate


def _generate(args: argparse.Namespace) -> int:
    if args.num < 1:
        raise UsageError(f"--num must be at least 1, got {args.num}")
    location = locate(args.model)
    out = Path(args.out)
    writable_dir(out.parent if str(out.parent) else Path("."), "output dir")

    from keras_cvae.loading import load
    from keras_cvae.plotting import save_figure
    from keras_cvae.tasks import GenerateRequest, get_task

    task = get_task(location.task)
    request = GenerateRequest(label=args.label, conditions=tuple(args.condition or ()), num=args.num, seed=args.seed,
                              style_from=args.style_from, from_test=args.from_test)
    dataset = None
    if task.needs_test_images(request):
        _, dataset = load_test_data(location, args)
    save_figure(task.generate(load(location), request, dataset), out)
    print(f"Wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="keras_cvae generate",
        description="Draw a picture from a saved model (export, run dir or checkpoint). "
        "Example: python -m keras_cvae generate --model saved_models/fashion_mnist-mlp/1 --label all --out grid.png",
    )
    add_model_flags(parser, "SavedModel version dir or export root, run dir, or checkpoint")
    parser.add_argument("--label", default="all",
                        help="the first categorical condition's category (name or index), or 'all' for one row each")
    parser.add_argument("--condition", action="append", metavar="NAME=VALUE",
                        help="hold a condition at a category (name or index) or a value; repeatable. Rows vary "
                             "the first categorical condition not given, else sweep the first continuous one")
    parser.add_argument("--num", type=int, default=8, help="samples per row (default 8)")
    parser.add_argument("--out", default="samples.png", help="output PNG (default samples.png)")
    parser.add_argument("--style-from", type=int, help="class models: re-render test image INDEX's z under every label")
    parser.add_argument("--from-test", type=int, help="completion models: complete the first N test images")
    args = parser.parse_args(argv)
    return run_command(_generate, args, parser)
