"""Model quality comparable with the literature: test NLL on dynamically binarized data.

    python benchmarks/quality.py --dataset fashion_mnist --epochs 100 --repeats 3 --output Q
    python benchmarks/quality.py --epochs 1 --iw-samples 50 --test-limit 500 --repeats 1 --output /tmp/q   # a quick look
    python benchmarks/quality.py --models vae,gated_vae,gated_vamp_vae --epochs 50 --iw-samples 1000 --output C

For each seed, trains each of `--models` (default: the plain VAE, `--no-conditional`, and the
class-conditional CVAE; MODELS lists the others: VampPrior's gated 2×300 network with z = 40, and
the mixture and VampPrior priors) with `--binarize dynamic` (fresh Bernoulli draws every batch;
the test set binarized once, seed 0) and train.py's other defaults (MLP 400 units, latent 20,
batch 128, Adam 1e-3), then evaluates the
importance-weighted NLL (K = --iw-samples, default 5000, as Exemplar VAE's tables) on the test
set, with the active units, FID and KID (samples drawn as binary images, like the test set). Also
the sanity figure: the FID of as many real training images (binarized once, seed 1) against the
test set (near 0: the feature space sees no difference between two samples of one distribution). Writes quality.json ({"<dataset>": {"vae": mean NLL, "cvae": mean NLL, "runs": […],
"train_vs_test_fid": …}}) and quality.md to --output after every run. A run (model, seed) already in
--output's quality.json with the same epochs, K and test images is kept, not repeated: an
interrupted benchmark, or one given more --repeats, goes on where it stopped.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# name: the ModelConfig settings that differ from train.py's defaults.
GATED = {"activation": "gated", "hidden_units": (300, 300), "latent_dim": 40}  # VampPrior's MLP
MODELS = {
    "vae": {"conditional": False},
    "cvae": {"conditional": True},
    "gated_vae": {"conditional": False, **GATED},
    "gated_vamp_vae": {"conditional": False, "prior": "vamp", **GATED},
    "gated_cvae": {"conditional": True, **GATED},
    "gated_mixture_cvae": {"conditional": True, "prior": "mixture", **GATED},
    "gated_vamp_cvae": {"conditional": True, "prior": "vamp", **GATED},
}
# Exemplar VAE (Norouzi et al., NeurIPS 2020), dynamically binarized, nats: the literature's figures.
LITERATURE = {
    "fashion_mnist": {"MLP VAE, Gaussian prior": 228.70, "best VampPrior / Exemplar MLP": 226.75, "best overall": 223.26},
    "mnist": {"MLP VAE, Gaussian prior": 84.45},
}


def machine() -> str:
    """The machine the runs were measured on, in words: the cores this process may run on."""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = f"{usable} CPU cores" if usable == os.cpu_count() else \
        f"{usable} of the {os.cpu_count()} CPU cores (pinned with taskset)"
    return f"{cores} ({names[0] if names else platform.machine()}), no GPU used"


def scratch_directory(prefix: str) -> Path:
    """A folder for a benchmark's intermediate runs, exports and data, removed when Python exits
    (also on Ctrl-C; a process killed by a signal leaves it behind)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def spread(values: list[float], digits: int = 2) -> str:
    import numpy as np

    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def by_machine(labelled: Iterable[tuple[str | None, str]], what: str = "") -> str:
    """Labels grouped by the machine each was measured on, in words ("A: epochs 1, 2; B: epochs 3"
    with `what` "epochs "): machines in the order they first appear, a label without one (None) under
    "not recorded"."""
    grouped: dict[str, list[str]] = {}
    for name, label in labelled:
        grouped.setdefault(name or "not recorded", []).append(label)
    return "; ".join(f"{name}: {what}{', '.join(labels)}" for name, labels in grouped.items())


def machines(runs: list[dict], name: Callable[[dict], str] = lambda run: f"{run['model']} seed {run['seed']}") -> str:
    """The machines the runs were measured on (each run's "machine"), in words: one, or each
    with the runs measured there, as `name` calls them."""
    if len({run.get("machine") for run in runs}) == 1:
        return f"Machine: {runs[0].get('machine') or 'not recorded'}."
    return ("Machines (the time columns compare only within one): "
            + by_machine((run.get("machine"), name(run)) for run in runs) + ".")


def markdown(result: dict, args: argparse.Namespace) -> str:
    runs = result["runs"]
    lines = [
        f"# Test NLL on dynamically binarized {args.dataset} (nats, IW K={args.iw_samples}, lower is better)",
        "",
        f"{args.epochs} epochs, batch 128, Adam 1e-3, train.py's defaults (MLP 400 units, latent 20, prior N(0, I)) "
        f"but for each model's settings; {result['test_images']} test "
        f"images; mean ± std over {len({r['seed'] for r in runs})} seed(s). Command(s): "
        + ", ".join(f"`python benchmarks/quality.py {c}`" for c in dict.fromkeys(r["command"] for r in runs)),
        "",
        f"{machines(runs)} Written {datetime.datetime.now().date().isoformat()}.",
        "",
        "| model | settings | test NLL | test ELBO | active units | FID | train (min) | evaluate (min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, settings in MODELS.items():
        mine = [run for run in runs if run["model"] == name]
        if not mine:
            continue
        described = ", ".join(f"{k}={v}" for k, v in settings.items())
        fids = [r["fid"] for r in mine if r.get("judge") == result["judge"]]
        lines.append(
            f"| {name} | {described} | {spread([r['nll'] for r in mine])} | {spread([r['elbo'] for r in mine])} | "
            f"{spread([r['active_units'] for r in mine], 1)} | {spread(fids) if fids else '—'} | "
            f"{spread([r['train_minutes'] for r in mine], 1)} | {spread([r['evaluate_minutes'] for r in mine], 1)} |")
    lines.append("")
    for vae, cvae in (("vae", "cvae"), ("gated_vae", "gated_cvae")):
        gap = [a["nll"] - b["nll"] for a in runs if a["model"] == vae for b in runs
               if b["model"] == cvae and b["seed"] == a["seed"]]
        if gap:
            lines.append(f"{vae} − {cvae}, per seed: {spread(gap)} nats (within one model at most ln 10 = 2.30 "
                         "for 10 classes).")
    lines += [f"FID of the real training set against the test set: {result['train_vs_test_fid']:.3f}.",
              f"FID is in the feature space of the judge `{result['judge']}`; a run judged by another "
              f"judge is left out of the FID column ({sum(r.get('judge') != result['judge'] for r in runs)} of "
              f"{len(runs)} runs here).", ""]
    for name, value in LITERATURE.get(args.dataset, {}).items():
        lines.append(f"- Exemplar VAE's table, {name}: {value}")
    return "\n".join(lines) + "\n"


def earlier_runs(path: Path, dataset: str, settings: dict) -> list[dict]:
    """The runs of an earlier call with the same settings, to be kept rather than repeated."""
    if not path.exists():
        return []
    earlier = json.loads(path.read_text()).get(dataset, {})
    return list(earlier.get("runs", [])) if all(earlier.get(k) == v for k, v in settings.items()) else []


def write_results(output: Path, args: argparse.Namespace, runs: list[dict], settings: dict,
                  train_vs_test: float, judge: str) -> str:
    """quality.json and quality.md for the runs so far; returns the table."""
    import numpy as np

    from keras_cvae.atomic import atomic_write_text

    runs = sorted(runs, key=lambda run: (run["seed"], list(MODELS).index(run["model"])))
    result = {name: float(np.mean([r["nll"] for r in runs if r["model"] == name]))
              for name in MODELS if any(r["model"] == name for r in runs)}
    result.update(runs=runs, train_vs_test_fid=train_vs_test, judge=judge, **settings)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "quality.json", json.dumps({args.dataset: result}, indent=2) + "\n")
    table = markdown(result, args)
    atomic_write_text(output / "quality.md", table)
    return table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="seeds 0, 1, …")
    parser.add_argument("--iw-samples", type=int, default=5000)
    parser.add_argument("--test-limit", type=int, help="evaluate on the first N test images only")
    parser.add_argument("--models", default="vae,cvae", help=f"comma-separated, of: {', '.join(MODELS)}")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    models = args.models.split(",")
    if unknown := [m for m in models if m not in MODELS]:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    args.argv = argv
    if args.epochs < 1 or args.repeats < 1 or args.iw_samples < 1:
        parser.error("--epochs, --repeats and --iw-samples must be positive")

    from keras_cvae.config import RunConfig
    from keras_cvae.data import binarize, load_configured
    from keras_cvae.evaluation.classifier import judge_at, judge_cache_path
    from keras_cvae.evaluation.sample_quality import frechet_distance
    from keras_cvae.tasks import EvaluationOptions, get_task
    from keras_cvae.training import train

    scratch = scratch_directory("quality-")
    base = RunConfig()
    base.data.dataset, base.data.data_dir, base.data.binarize = args.dataset, args.data_dir, "dynamic"
    dataset = load_configured(base.data)
    judge_stem = judge_cache_path(dataset, args.dataset)
    judge, judge_name = judge_at(judge_stem, dataset, args.dataset), judge_stem.name
    # Like with like: training images binarized once (seed 1) against the binarized test set.
    train_images = binarize(dataset.x_train[:len(dataset.x_test)], seed=1)
    train_vs_test = frechet_distance(judge.features(train_images.astype("float32") / 255.0),
                                     judge.features(dataset.x_test.astype("float32") / 255.0))
    output = Path(args.output)
    settings = {"test_images": len(dataset.x_test[: args.test_limit]), "epochs": args.epochs,
                "iw_samples": args.iw_samples}
    runs = earlier_runs(output / "quality.json", args.dataset, settings)
    for seed in range(args.repeats):
        for name in models:
            if any(run["model"] == name and run["seed"] == seed for run in runs):
                print(f"== {name}, seed {seed}: kept from {output / 'quality.json'}", flush=True)
                continue
            print(f"== {name}, seed {seed}", flush=True)
            config = RunConfig.from_dict(base.to_dict())
            for key, value in MODELS[name].items():
                setattr(config.model, key, value)
            config.train.epochs, config.train.seed = args.epochs, seed
            config.train.export = str(scratch / f"export-{name}-{seed}")
            start = time.perf_counter()
            model = train(config, dataset, scratch / f"run-{name}-{seed}").model
            trained = time.perf_counter()
            options = EvaluationOptions(dataset_name=args.dataset, model_name=name, iw_samples=args.iw_samples,
                                        limit=args.test_limit, seed=seed)
            metrics = get_task("classes").evaluate(model, dataset, scratch / f"eval-{name}-{seed}", options)
            runs.append({"model": name, "seed": seed, "command": " ".join(args.argv),
                         "nll": metrics["test_nll_iw"], "elbo": metrics["test_elbo"],
                         "active_units": metrics["active_units"], "fid": metrics["fid"], "kid": metrics["kid"],
                         "judge": judge_name, "machine": machine(),
                         "train_minutes": (trained - start) / 60, "evaluate_minutes": (time.perf_counter() - trained) / 60})
            print(f"   NLL {metrics['test_nll_iw']:.2f}, active units {metrics['active_units']}", flush=True)
            write_results(output, args, runs, settings, train_vs_test, judge_name)
    print("\n" + write_results(output, args, runs, settings, train_vs_test, judge_name))
    print(f"wrote {output / 'quality.json'} and quality.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
