"""Image completion (Sohn et al. 2015): baseline, CVAE, GSNN and hybrid at 1, 2 and 3 quadrants.

    python benchmarks/quadrants.py --dataset fashion_mnist --epochs 10 --output Q
    python benchmarks/quadrants.py --epochs 1 --limit 5000 --test-limit 500 --output /tmp/q   # a quick look

For each number of visible quadrants, trains each model on the training set (the last 10% held
out, as train.py does) with keras_cvae's defaults (MLP 400 units, latent 20, batch 128, Adam
1e-3), then measures the negative conditional log-likelihood of the missing pixels on the test
set, −log p(y | x), by importance sampling with K draws from the recognition network (nats per
image, summed over the missing pixels; the baseline's figure is its own Bernoulli NLL). Writes
quadrants.json ({"1": {"baseline": …, "cvae": …, "gsnn": …, "hybrid": …}, "2": …, "3": …}),
quadrants.md and completions.png (a few test inputs: input, truth, the baseline model's
prediction, CVAE samples) to --output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = ("baseline", "cvae", "gsnn", "hybrid")
QUADRANTS = (1, 2, 3)
EXAMPLES_PER_COUNT = 3


def train_one(config, dataset, scratch: Path):
    """The library's own training run (run dir and export in `scratch`), as train.py would do it."""
    from keras_cvae.run_dir import default_name
    from keras_cvae.training import train

    name = default_name(config)
    config.train.export = str(scratch / "exports" / name)
    return train(config, dataset, scratch / "runs" / name).model


def markdown(results: dict, args: argparse.Namespace, minutes: float) -> str:
    lines = [
        f"# Image completion on {args.dataset}: −log p(y | x), nats per image (lower is better)",
        "",
        f"{args.epochs} epochs each; K={args.iw_samples} importance samples; {args.test_images} test images; "
        f"{minutes:.1f} min in all. Command: `python benchmarks/quadrants.py {' '.join(args.argv)}`",
        "",
        "| visible quadrants | " + " | ".join(MODELS) + " |",
        "|---|" + "---:|" * len(MODELS),
    ]
    for count, row in results.items():
        lines.append(f"| {count} | " + " | ".join(f"{row[m]:.2f}" for m in MODELS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iw-samples", type=int, default=100, help="K for the conditional NLL (default 100)")
    parser.add_argument("--limit", type=int, help="use only the first N training images")
    parser.add_argument("--test-limit", type=int, help="measure on the first N test images only")
    parser.add_argument("--quadrants", default="1,2,3", help="which quadrant counts (default 1,2,3)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    args.argv = argv
    counts = [int(c) for c in args.quadrants.split(",")]
    if args.epochs < 1 or args.iw_samples < 1 or not set(counts) <= set(QUADRANTS):
        parser.error("--epochs and --iw-samples must be positive, --quadrants a subset of 1,2,3")

    import tempfile

    import numpy as np

    from keras_cvae.atomic import atomic_write_text
    from keras_cvae.config import RunConfig
    from keras_cvae.data import load_dataset
    from keras_cvae.evaluation.estimators import conditional_nll
    from keras_cvae.plotting import completion_figure, save_figure
    from keras_cvae.tasks.completion import completion_columns

    start = time.perf_counter()
    dataset = load_dataset(args.dataset, args.data_dir)
    test_images = dataset.x_test[: args.test_limit].astype("float32") / 255.0
    args.test_images = len(test_images)
    examples = test_images[:: max(1, len(test_images) // EXAMPLES_PER_COUNT)][:EXAMPLES_PER_COUNT]
    noise = np.random.default_rng(0).standard_normal((6, EXAMPLES_PER_COUNT, 20)).astype("float32")
    scratch = Path(tempfile.mkdtemp(prefix="quadrants-"))
    results: dict[str, dict[str, float]] = {}
    panels = []
    for count in counts:
        results[str(count)] = {}
        trained = {}
        for name in MODELS:
            print(f"== {count} quadrant(s), {name}", flush=True)
            config = RunConfig()
            config.data.dataset, config.data.task, config.data.quadrants = args.dataset, "completion", count
            config.data.data_dir, config.data.limit, config.model.objective = args.data_dir, args.limit, name
            config.train.epochs = args.epochs
            model = train_one(config, dataset, scratch)
            nll = float(np.mean(conditional_nll(model, test_images, args.iw_samples)))
            results[str(count)][name] = round(nll, 2)
            trained[name] = model
            print(f"   −log p(y|x) = {nll:.2f} nats", flush=True)
        inputs, _, samples = completion_columns(trained["cvae"], examples, noise)
        baseline = np.asarray(trained["baseline"].complete(examples, baseline=True))
        panels.append((inputs, baseline, samples))

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "quadrants.json", json.dumps(results, indent=2) + "\n")
    table = markdown(results, args, (time.perf_counter() - start) / 60)
    atomic_write_text(output / "quadrants.md", table)
    inputs, baseline, samples = (np.concatenate(parts) for parts in zip(*panels))
    truth = np.concatenate([examples] * len(counts))
    title = "rows: " + ", ".join(f"{c} visible quadrant(s)" for c in counts)
    save_figure(completion_figure(inputs, truth, baseline, samples, title=title), output / "completions.png")
    print("\n" + table)
    print(f"wrote {output / 'quadrants.json'}, quadrants.md and completions.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
