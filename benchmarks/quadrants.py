"""Image completion (Sohn et al. 2015): baseline, CVAE, GSNN and hybrid at 1, 2 and 3 quadrants.

    python benchmarks/quadrants.py --dataset fashion_mnist --epochs 10 --output Q
    python benchmarks/quadrants.py --protocol pyro --quadrants 1 --models baseline,cvae --repeats 3 --output P
    python benchmarks/quadrants.py --epochs 1 --limit 5000 --test-limit 500 --output /tmp/q   # a quick look

Two protocols. `keras_cvae`: the library's defaults (MLP 400 units, latent 20) for --epochs
(default 10). `pyro`: Pyro's CVAE example (hidden 500-500, latent 200, Adam 1e-3, batch 128),
at most --epochs (default 101) with early stopping after 3 epochs without a better validation
loss, ending with the best epoch's weights. Validation is the last 10% of the training set, as
train.py holds out (Pyro's example stops on the test set). For each number of visible quadrants,
model and seed, trains with train.py's code and evaluates with evaluate.py's: the negative
conditional log-likelihood of the missing pixels on the test set, −log p(y | x), by importance
sampling with K draws from the recognition network (nats per image, summed over the missing
pixels; the baseline's figure is its own Bernoulli NLL), and what z carries: the KL of q(z | x, y)
from the prior network summed over dimensions, and the active units. Writes to --output:
quadrants.json ({"1": {model: mean −log p(y | x)}, …}), quadrants_runs.json (every run),
quadrants.md and completions.png (a few test inputs: input, truth, the baseline model's
prediction, CVAE samples; first seed).
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

from quality import scratch_directory  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

MODELS = ("baseline", "cvae", "gsnn", "hybrid")
QUADRANTS = (1, 2, 3)
EXAMPLES_PER_COUNT = 3
# name: (hidden units, latent size, early-stopping patience, default --epochs); None: the library's default
PROTOCOLS = {"keras_cvae": (None, 20, 0, 10), "pyro": ((500, 500), 200, 3, 101)}


def train_one(config, dataset, scratch: Path):
    """The library's own training run (run dir and export in `scratch`), as train.py would do it."""
    from keras_cvae.run_dir import default_name
    from keras_cvae.training import train

    name = f"{default_name(config)}-seed{config.train.seed}"
    config.train.export = str(scratch / "exports" / name)
    return train(config, dataset, scratch / "runs" / name)


def markdown(runs: list[dict], args: argparse.Namespace, minutes: float) -> str:
    from benchmarks.quality import spread

    models = [m for m in MODELS if any(r["model"] == m for r in runs)]
    counts = sorted({r["quadrants"] for r in runs})
    hidden, latent, patience, _ = PROTOCOLS[args.protocol]
    stopping = f"early stopping (patience {patience}) within {args.epochs} epochs" if patience else f"{args.epochs} epochs"
    seeds = len({r["seed"] for r in runs})
    lines = [
        f"# Image completion on {args.dataset}: −log p(y | x), nats per image (lower is better)",
        "",
        f"Protocol {args.protocol}: hidden {hidden or 'default'}, latent {latent}, {stopping}; K={args.iw_samples} "
        f"importance samples; {args.test_images} test images; mean ± std over {seeds} seed(s); {minutes:.1f} min in "
        f"all. Command: `python benchmarks/quadrants.py {' '.join(args.argv)}`",
        "",
        "| visible quadrants | " + " | ".join(models) + " | CVAE below baseline |",
        "|---|" + "---:|" * (len(models) + 1),
    ]
    for count in counts:
        mine = {m: [r for r in runs if r["quadrants"] == count and r["model"] == m] for m in models}
        gap = "–"
        if mine.get("baseline") and mine.get("cvae"):
            by_seed = {r["seed"]: r["ncll"] for r in mine["baseline"]}
            gap = spread([100 * (1 - r["ncll"] / by_seed[r["seed"]]) for r in mine["cvae"] if r["seed"] in by_seed]) + " %"
        lines.append(f"| {count} | " + " | ".join(spread([r["ncll"] for r in mine[m]]) for m in models) + f" | {gap} |")
    lines += ["", "What z carries (KL of q(z | x, y) from the prior network, nats summed over z; active units of "
              f"{latent}), and the epochs trained:", "", "| visible quadrants | model | KL | active units | epochs |",
              "|---|---|---:|---:|---:|"]
    for count in counts:
        for model in models:
            mine = [r for r in runs if r["quadrants"] == count and r["model"] == model]
            if mine and "kl" in mine[0]:
                lines.append(f"| {count} | {model} | {spread([r['kl'] for r in mine])} | "
                             f"{spread([r['active_units'] for r in mine])} | {spread([r['epochs'] for r in mine])} |")
    return "\n".join(lines) + "\n"


def write_results(output: Path, runs: list[dict], panels: list, examples, args: argparse.Namespace,
                  start: float) -> str:
    """quadrants.json, quadrants_runs.json, quadrants.md and completions.png for the runs so far; returns the table."""
    import numpy as np

    from keras_cvae.atomic import atomic_write_text
    from keras_cvae.plotting import completion_figure, save_figure

    output.mkdir(parents=True, exist_ok=True)
    counts = sorted({r["quadrants"] for r in runs})
    means = {str(c): {r["model"]: round(float(np.mean([o["ncll"] for o in runs
                                                        if o["quadrants"] == c and o["model"] == r["model"]])), 2)
                      for r in runs if r["quadrants"] == c} for c in counts}
    atomic_write_text(output / "quadrants.json", json.dumps(means, indent=2) + "\n")
    atomic_write_text(output / "quadrants_runs.json", json.dumps(runs, indent=2) + "\n")
    table = markdown(runs, args, (time.perf_counter() - start) / 60)
    atomic_write_text(output / "quadrants.md", table)
    if panels:
        inputs, baseline, samples = (np.concatenate(parts) for parts in zip(*panels))
        truth = np.concatenate([examples] * len(panels))
        title = "rows: " + ", ".join(f"{c} visible quadrant(s)" for c in counts[:len(panels)])
        save_figure(completion_figure(inputs, truth, baseline, samples, title=title), output / "completions.png")
    return table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="keras_cvae")
    parser.add_argument("--epochs", type=int, help="epochs (pyro: at most; default keras_cvae 10, pyro 101)")
    parser.add_argument("--iw-samples", type=int, default=100, help="K for the conditional NLL (default 100)")
    parser.add_argument("--limit", type=int, help="use only the first N training images")
    parser.add_argument("--test-limit", type=int, help="measure on the first N test images only")
    parser.add_argument("--quadrants", default="1,2,3", help="which quadrant counts (default 1,2,3)")
    parser.add_argument("--models", default=",".join(MODELS), help="which objectives (default all four)")
    parser.add_argument("--repeats", type=int, default=1, help="seeds 0, 1, …")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    args.argv = argv
    hidden, latent, patience, default_epochs = PROTOCOLS[args.protocol]
    args.epochs = args.epochs or default_epochs
    counts = [int(c) for c in args.quadrants.split(",")]
    models = args.models.split(",")
    if args.epochs < 1 or args.iw_samples < 1 or args.repeats < 1:
        parser.error("--epochs, --iw-samples and --repeats must be positive")
    if not set(counts) <= set(QUADRANTS) or not set(models) <= set(MODELS):
        parser.error(f"--quadrants must be a subset of 1,2,3 and --models of {','.join(MODELS)}")

    import numpy as np

    from keras_cvae.config import RunConfig
    from keras_cvae.data import load_dataset
    from keras_cvae.tasks import EvaluationOptions, get_task
    from keras_cvae.tasks.completion import completion_columns

    start = time.perf_counter()
    dataset = load_dataset(args.dataset, args.data_dir)
    test_images = dataset.x_test[: args.test_limit].astype("float32") / 255.0
    args.test_images = len(test_images)
    examples = test_images[:: max(1, len(test_images) // EXAMPLES_PER_COUNT)][:EXAMPLES_PER_COUNT]
    noise = np.random.default_rng(0).standard_normal((6, EXAMPLES_PER_COUNT, latent)).astype("float32")
    scratch = scratch_directory("quadrants-")
    runs: list[dict] = []
    panels = []
    for count in counts:
        for seed in range(args.repeats):
            trained = {}
            for name in models:
                print(f"== {count} quadrant(s), {name}, seed {seed}", flush=True)
                config = RunConfig()
                config.data.dataset, config.data.task, config.data.quadrants = args.dataset, "completion", count
                config.data.data_dir, config.data.limit, config.model.objective = args.data_dir, args.limit, name
                config.model.hidden_units, config.model.latent_dim = hidden, latent
                config.train.epochs, config.train.early_stopping, config.train.seed = args.epochs, patience, seed
                result = train_one(config, dataset, scratch)
                options = EvaluationOptions(dataset_name=args.dataset, model_name=name, iw_samples=args.iw_samples,
                                            limit=args.test_limit, seed=seed)
                metrics = get_task("completion").evaluate(result.model, dataset, scratch / "eval" / f"{count}-{name}-{seed}",
                                                         options)
                run = {"quadrants": count, "model": name, "seed": seed, "ncll": metrics["ncll"],
                       "epochs": len(result.history)}
                if "kl_per_dim" in metrics:
                    run.update(kl=float(np.sum(metrics["kl_per_dim"])), active_units=metrics["active_units"])
                runs.append(run)
                trained[name] = result.model
                print(f"   −log p(y|x) = {metrics['ncll']:.2f} nats after {run['epochs']} epochs", flush=True)
                if seed == 0 and name == models[-1] and {"baseline", "cvae"} <= set(trained):
                    inputs, _, samples = completion_columns(trained["cvae"], examples, noise)
                    panels.append((inputs, np.asarray(trained["baseline"].complete(examples, baseline=True)), samples))
                write_results(Path(args.output), runs, panels, examples, args, start)  # an interrupted run keeps these

    print("\n" + write_results(Path(args.output), runs, panels, examples, args, start))
    print(f"wrote {Path(args.output) / 'quadrants.json'}, quadrants_runs.json, quadrants.md and completions.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
