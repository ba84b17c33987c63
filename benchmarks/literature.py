"""keras_cvae's Exemplar-VAE recipe beside a faithful PyTorch port of their code, at equal epochs.

    python -m venv .venv-reference && .venv-reference/bin/pip install -r benchmarks/reference/requirements.txt
    python benchmarks/literature.py --epochs 50 --repeats 3 --output benchmarks/results/literature
    python benchmarks/literature.py --epochs 1 --repeats 1 --iw-samples 100 --test-limit 200 --output /tmp/l   # a quick look
    taskset -c 1 python benchmarks/literature.py --epochs 5 --repeats 3 --iw-samples 100 --test-limit 500 \\
        --output benchmarks/results/literature_speed   # seconds per epoch, both on one core, taking turns
    taskset -c 0 python benchmarks/literature.py --full-protocol --implementations port --repeats 1 \\
        --output benchmarks/results/literature_full   # the port under the recipe's whole protocol; resumable

For each seed, trains recipes/exemplar_vae.toml with keras_cvae and benchmarks/reference/
exemplar_vae_port.py with PyTorch (in its own environment, --reference-python) for --epochs
epochs, with no warm-up and the best validation epoch kept. Both use the same data: Fashion-MNIST's
first 50,000 training images (grey, binarized afresh every batch), the last 10,000 for
validation and the test set, each binarized once by keras_cvae. Both are evaluated with the same
importance-weighted formula, −mean log (1/K) Σ_k w_k at K = --iw-samples. Reports each one's test
NLL and seconds per epoch, and their ratio. Writes literature.json and literature.md to --output
after every run; a run (implementation, seed) already there with the same settings is kept.

--full-protocol trains under the recipe's own protocol instead: its KL warm-up, its early stopping
on the β = 1 validation loss with the patience counted after the warm-up, and its epoch cap
(--epochs overrides the cap). The port then keeps a checkpoint in --output after every epoch, so
that the same command, run again in a later session, goes on where it stopped; keras_cvae's side
of that protocol is benchmarks/long_run.py's, which resumes too.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import machine, machines, scratch_directory, spread  # noqa: E402

RECIPE = ROOT / "recipes" / "exemplar_vae.toml"
PORT = ROOT / "benchmarks" / "reference" / "exemplar_vae_port.py"
MILESTONES = (100, 200, 500)  # the epochs at which benchmarks/long_run.py measures keras_cvae's run
IMPLEMENTATIONS = {"keras_cvae": "keras_cvae, recipes/exemplar_vae.toml", "port": "the PyTorch port of their code"}


def recipe_config(args: argparse.Namespace, seed: int, scratch: Path):
    """The recipe at --epochs: without its warm-up and the best validation epoch kept, or under
    its own warm-up and early stopping with --full-protocol."""
    from keras_cvae.recipes import load_recipe

    config = load_recipe(RECIPE).config()
    if not args.full_protocol:
        config.train.kl_warmup, config.train.early_stopping = 0, args.epochs
    config.train.epochs = args.epochs or config.train.epochs
    config.train.seed, config.train.export = seed, str(scratch / f"export-{seed}")
    return config


def shared_data(args: argparse.Namespace, scratch: Path):
    """The dataset keras_cvae trains on, and the same split written for the port as an .npz."""
    import numpy as np

    from keras_cvae.data import binarize, load_configured, split_training_set

    config = recipe_config(args, 0, scratch)
    dataset = load_configured(config.data)
    (x_train, _), (x_val, _) = split_training_set(dataset.x_train, dataset.y_train, config.data)
    flat = {"train": x_train, "validation": binarize(x_val), "test": dataset.x_test[:args.test_limit]}
    path = scratch / "data.npz"
    np.savez(path, **{k: (v.reshape(len(v), -1) / 255.0).astype(np.float32) for k, v in flat.items()})
    return dataset, path


def keras_run(args: argparse.Namespace, seed: int, dataset, scratch: Path) -> dict:
    import numpy as np
    from timing import EpochTimer

    from keras_cvae.evaluation.estimators import KerasBackend, iw_log_likelihood
    from keras_cvae.training import train

    timer = EpochTimer()
    result = train(recipe_config(args, seed, scratch), dataset, scratch / f"run-{seed}", callbacks=[timer])
    best = max(result.history, key=lambda row: row["val_elbo"])
    start = time.perf_counter()
    x_test = dataset.x_test[:args.test_limit].astype(np.float32) / 255.0
    log_px = iw_log_likelihood(KerasBackend(result.model), x_test, dataset.y_test[:args.test_limit], args.iw_samples,
                               np.random.default_rng(seed))
    return {"test_nll": -float(np.mean(log_px)), "best_epoch": int(best["epoch"]), "epochs": len(result.history),
            "seconds_per_epoch": timer.steady_seconds(),
            "evaluate_seconds": time.perf_counter() - start}


def port_run(args: argparse.Namespace, seed: int, data: Path, scratch: Path) -> dict:
    output = scratch / f"port-{seed}.json"
    train = recipe_config(args, seed, scratch).train
    command = [args.reference_python, str(PORT), "--data", str(data), "--epochs", str(train.epochs), "--seed", str(seed),
               "--warmup", str(train.kl_warmup), "--patience", str(train.early_stopping),
               "--iw-samples", str(args.iw_samples), "--output", str(output)]
    if args.test_limit:
        command += ["--test-limit", str(args.test_limit)]
    if args.full_protocol:
        Path(args.output).mkdir(parents=True, exist_ok=True)
        command += ["--checkpoint", str(Path(args.output) / f"port-seed{seed}.pt")]
    done = subprocess.run(command, stdout=None if args.full_protocol else subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode:
        raise SystemExit(f"the port failed:\n{done.stderr[-3000:]}")
    result = json.loads(output.read_text())
    history = result.pop("history")
    if args.full_protocol:
        write_history(Path(args.output) / f"port-seed{seed}-history.csv", history)
    result["seconds_per_epoch"] = float(sum(r["seconds"] for r in history[1:]) / max(1, len(history) - 1)) \
        if len(history) > 1 else history[0]["seconds"]
    return {**{k: result[k] for k in ("test_nll", "best_epoch", "epochs", "seconds_per_epoch", "evaluate_seconds")},
            "timed": "epoch", "training_hours": sum(r["seconds"] for r in history) / 3600,
            "best_val_loss_by": {m: min(r["val_loss"] for r in history[train.kl_warmup:m]) for m in MILESTONES
                                 if len(history) >= m > train.kl_warmup}}


def write_history(path: Path, history: list[dict]) -> None:
    """The port's epochs as CSV, as keras_cvae's run dir keeps its history.csv."""
    from keras_cvae.atomic import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["epoch", "val_loss", "seconds", "train_seconds"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buffer.getvalue())


def run_name(run: dict) -> str:
    """A run as the machine line names it."""
    return f"{run['implementation']} seed {run['seed']}"


def markdown(runs: list[dict], args: argparse.Namespace) -> str:
    train = recipe_config(args, 0, Path()).train
    protocol = (f"β = epoch/{train.kl_warmup} over the first {train.kl_warmup} epochs, then early stopping once the "
                f"β = 1 validation loss has not improved for {train.early_stopping} epochs, at most {train.epochs:,} "
                "epochs, the best epoch kept" if args.full_protocol else "no warm-up, the best validation epoch kept")
    lines = [
        f"# Exemplar VAE's standard-prior VAE: keras_cvae's recipe beside a PyTorch port, "
        f"{'the full protocol' if args.full_protocol else f'{args.epochs} epochs'}",
        "",
        f"Dynamically binarized Fashion-MNIST (50,000 train, the last 10,000 of the training file validate, "
        f"{runs[0]['test_images']:,} test images binarized once); 2×300 gated units, z = 40, He-normal weights, "
        "log-variance in [−6, 2], the Monte Carlo KL, AdamNormGrad lr 5e-4, batch 100; "
        f"{protocol}; test NLL by importance sampling, K = {args.iw_samples:,}. Seconds per epoch: "
        "the wall time of an epoch after the first, its validation pass included (keras_cvae's also writes "
        "the epoch's checkpoint and sample grid). Mean ± std over "
        f"{len({r['seed'] for r in runs})} seed(s). Command: `python benchmarks/literature.py {' '.join(args.argv)}`",
        "",
        f"{machines(runs, run_name)} Written {datetime.datetime.now().date().isoformat()}.",
        "",
        "| implementation | test NLL (nats) | best epoch | s per epoch | seeds |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in IMPLEMENTATIONS.items():
        mine = [r for r in runs if r["implementation"] == name]
        if mine:
            lines.append(f"| {label} | {spread([r['test_nll'] for r in mine])} | "
                         f"{', '.join(str(r['best_epoch']) for r in mine)} | "
                         f"{spread([r['seconds_per_epoch'] for r in mine], 1)} | {len(mine)} |")
    for run in runs:
        if "training_hours" in run:
            by = "; ".join(f"by epoch {m}, {loss:.2f}" for m, loss in run["best_val_loss_by"].items())
            lines += ["", f"{run_name(run)}: {run['epochs']:,} epochs, {run['training_hours']:.2f} training hours "
                      "(the sum of its epochs' wall times)" + (f"; its best β = 1 validation loss {by}" if by else "")
                      + f". port-seed{run['seed']}-history.csv gives each epoch's; "
                      "benchmarks/results/long_run/exemplar_vae/long_run.md gives keras_cvae's at the same epochs."]
    if untimed := [run_name(r) for r in runs if r["implementation"] == "port" and r.get("timed") != "epoch"]:
        lines += ["", f"Seconds per epoch of {', '.join(untimed)}: the training pass alone, without validation."]
    pairs = [(a, b) for a in runs if a["implementation"] == "keras_cvae" for b in runs
             if b["implementation"] == "port" and b["seed"] == a["seed"]]
    if pairs:
        lines += ["", f"keras_cvae − port, test NLL per seed: {spread([a['test_nll'] - b['test_nll'] for a, b in pairs])} "
                  f"nats; seconds per epoch, keras_cvae / port: "
                  f"{spread([a['seconds_per_epoch'] / b['seconds_per_epoch'] for a, b in pairs])}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="epochs (default 50), or the cap with --full-protocol "
                        "(default: the recipe's)")
    parser.add_argument("--full-protocol", action="store_true",
                        help="the recipe's warm-up, early stopping and epoch cap; the port resumes")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS),
                        help=f"which to run, comma-separated, of {', '.join(IMPLEMENTATIONS)}")
    parser.add_argument("--repeats", type=int, default=3, help="seeds 0, 1, …")
    parser.add_argument("--iw-samples", type=int, default=5000)
    parser.add_argument("--test-limit", type=int, help="evaluate on the first N test images only")
    parser.add_argument("--reference-python", default=str(ROOT / ".venv-reference" / "bin" / "python"),
                        help="the Python of the environment with torch")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    args.argv = argv
    args.implementations = args.implementations.split(",")
    if unknown := set(args.implementations) - set(IMPLEMENTATIONS):
        parser.error(f"--implementations: unknown {', '.join(sorted(unknown))}; choose from {', '.join(IMPLEMENTATIONS)}")
    if args.epochs is None:
        args.epochs = recipe_config(args, 0, Path()).train.epochs if args.full_protocol else 50
    if args.epochs < 1 or args.repeats < 1 or args.iw_samples < 1:
        parser.error("--epochs, --repeats and --iw-samples must be positive")
    if not Path(args.reference_python).exists():
        parser.error(f"--reference-python {args.reference_python} not found: make the environment (module docstring)")

    from keras_cvae.atomic import atomic_write_text

    scratch = scratch_directory("literature-")
    dataset, data = shared_data(args, scratch)
    output = Path(args.output)
    settings = {"epochs": args.epochs, "iw_samples": args.iw_samples, "test_limit": args.test_limit}
    if args.full_protocol:
        settings["full_protocol"] = True
    earlier = json.loads((output / "literature.json").read_text()) if (output / "literature.json").exists() else {}
    same = all(earlier.get(k) == v for k, v in settings.items()) and earlier.get("full_protocol", False) == args.full_protocol
    runs = earlier.get("runs", []) if same else []
    for seed in range(args.repeats):
        for name in args.implementations:
            if any(r["implementation"] == name and r["seed"] == seed for r in runs):
                print(f"== {name}, seed {seed}: kept from {output / 'literature.json'}", flush=True)
                continue
            print(f"== {name}, seed {seed}", flush=True)
            result = keras_run(args, seed, dataset, scratch) if name == "keras_cvae" else port_run(args, seed, data, scratch)
            runs.append({"implementation": name, "seed": seed, "test_images": len(dataset.x_test[:args.test_limit]),
                         "machine": machine(), **result})
            print(f"   test NLL {result['test_nll']:.2f}, {result['seconds_per_epoch']:.1f} s per epoch", flush=True)
            output.mkdir(parents=True, exist_ok=True)
            atomic_write_text(output / "literature.json", json.dumps({**settings, "runs": runs}, indent=2) + "\n")
            atomic_write_text(output / "literature.md", markdown(runs, args))
    print(markdown(runs, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
