"""A recipe's full protocol (warm-up, early stopping, epoch cap), its test NLL at milestone epochs.

    python benchmarks/long_run.py --recipe recipes/exemplar_vae.toml \\
        --run-dir benchmarks/results/long_run/exemplar_vae/run --output benchmarks/results/long_run/exemplar_vae
    python benchmarks/long_run.py --recipe recipes/vampprior.toml \\
        --run-dir benchmarks/results/long_run/vampprior/run --output benchmarks/results/long_run/vampprior
    python benchmarks/long_run.py --recipe recipes/exemplar_vae.toml --milestones 2 --epochs 3 --iw-samples 10 \\
        --test-limit 20 --run-dir /tmp/r --output /tmp/l   # a quick look

Trains --recipe with seed --seed into --run-dir (default runs/long/<recipe>-seed<N>) in stages
that end at the --milestones epochs (default 100, 200, 500) and then at the recipe's epoch cap
(--epochs overrides it), or earlier where early stopping ends the run. After each stage it
measures the best epoch so far, the one the run would export: its β = 1 validation ELBO and its
test NLL by importance sampling (K = --iw-samples, 5,000 as in Exemplar VAE and VampPrior). A
class-conditional recipe's figure is −log p(x | y), the class given; --unconditional names the
long_run.json of the same protocol without the class, whose −log p(x) the report sets beside it.

Long runs outlast a session. Run the same command again and it goes on where it stopped: a stage
resumes from the run dir's newest checkpoint (`train(..., resume=True)`, which also restores the
early stopping's best epoch and patience), and a milestone already in --output's long_run.json is
not measured again. A run dir under benchmarks/results/ travels with the repository when its
config.json, history.csv and its newest and best checkpoints are committed (its samples/ are
ignored), so a fresh clone resumes it too. The training hours are the sum of the epochs' wall
times, which --output/epoch_seconds.json keeps across sessions with the machine that trained each
epoch. Writes long_run.json and long_run.md to --output after every milestone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import by_machine, machine  # noqa: E402

# The published test NLL each recipe's protocol reproduces (Norouzi et al. 2020, Table 1,
# dynamically binarized Fashion-MNIST, MLP).
PUBLISHED = {
    "exemplar_vae": ("Exemplar VAE's table, MLP VAE with a Gaussian prior", 228.70),
    "vampprior": ("Exemplar VAE's table, VampPrior MLP", 227.35),
}


def stage_config(args: argparse.Namespace, epochs: int | None = None):
    """The recipe's run config with --seed and the run dir's export; trained up to `epochs`
    (default: the recipe's own epoch cap)."""
    from keras_cvae.recipes import load_recipe

    config = load_recipe(args.recipe).config()
    config.train.epochs = config.train.epochs if epochs is None else epochs
    config.train.seed = args.seed
    config.train.export = str(Path(args.run_dir) / "export")
    return config


def stages(args: argparse.Namespace, milestones: list[int], recipe) -> list[int]:
    """The epochs each stage trains up to: the milestones below the epoch cap (--epochs, else
    the recipe's own `epochs`), then the cap."""
    cap = args.epochs or recipe.train.epochs
    return [m for m in milestones if m < cap] + [cap]


def best_row(history: list[dict], warmup_epochs: int) -> dict:
    """The epoch the run keeps: the best β = 1 validation ELBO after the `warmup_epochs` epochs
    below β = 1 (TrainConfig.warmup_epochs), or the last epoch while the warm-up lasts."""
    scored = [row for row in history if row["epoch"] > warmup_epochs]
    return max(scored, key=lambda row: row["val_elbo"]) if scored else history[-1]


PIPE = "\\|"  # a "|" inside a markdown table cell


def measure(conditional: bool) -> str:
    """What the test figure is: the class-conditional model's −log p(x | y) or a VAE's −log p(x)."""
    return "−log p(x | y)" if conditional else "−log p(x)"


def end_row(run: dict) -> dict | None:
    """A long run's last milestone if the run has ended, by early stopping or at its epoch cap; else None."""
    last = run["milestones"][-1]
    return last if last["stopped"] or last["epochs"] >= run["epoch_cap"] else None


def class_gain(result: dict, unconditional: dict, source: str) -> list[str]:
    """The lines that set a CVAE's −log p(x | y) beside its VAE counterpart's −log p(x) at the epochs
    both runs measured, and at both runs' ends, with the ln 10 that knowing one of 10 equally
    likely classes can gain within one model."""
    mine_end, their_end = end_row(result), end_row(unconditional)
    theirs = {row["epochs"]: row for row in unconditional["milestones"] if row is not their_end}
    pairs = [(f"{row['epochs']:,}", theirs[row["epochs"]], row) for row in result["milestones"]
             if row is not mine_end and row["epochs"] in theirs]
    if mine_end is not None and their_end is not None:
        pairs.append((f"the end: {mine_end['epochs']:,} and {their_end['epochs']:,}", their_end, mine_end))
    lines = ["", f"The same protocol without the class (`{source}`), at the epochs both runs have measured and at "
             "both runs' ends:", ""]
    if pairs:
        lines += [f"| epochs trained | −log p(x), without the class | −log p(x {PIPE} y), this run | difference |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {epochs} | {vae['test_nll']:.2f} | {cvae['test_nll']:.2f} | {vae['test_nll'] - cvae['test_nll']:.2f} |"
                  for epochs, vae, cvae in pairs]
    else:
        lines.append("No epoch measured by both yet.")
    return lines + ["", f"Within one model with 10 equally likely classes, log p(x | y) − log p(x) = "
                    f"log p(y | x) + ln 10 ≤ ln 10 = {math.log(10):.2f}: a difference above ln 10 means the "
                    "class-conditional model is the better model of x as well, as the mixture (1/10) Σ_y p(x | y)."]


def machine_lines(result: dict) -> str:
    """Where the epochs trained (the time columns) and where each milestone's test NLL was measured:
    a long run's sessions may run on several machines."""
    where = by_machine(((row.get("machine"), f"{row['epochs']:,}") for row in result["milestones"]), "epochs ")
    trained = f"Epochs trained on {result['trained_on']}." if "trained_on" in result else \
        "The machine of each epoch is not recorded."
    return (f"{trained} The time columns cover epochs 1 to the row's, so they compare only where one machine "
            f"trained them. The test NLL of each milestone was measured on {where}.")


def markdown(result: dict, args: argparse.Namespace, unconditional: dict | None = None) -> str:
    label, published = PUBLISHED.get(Path(args.recipe).stem, (None, None))
    rows = result["milestones"]
    figure = measure(result["conditional"])
    lines = [
        f"# The full protocol of `{Path(args.recipe).name}`, seed {args.seed}: test NLL as training goes on",
        "",
        f"Dynamically binarized Fashion-MNIST as the recipe states it (warm-up {result['kl_warmup']} epochs, "
        f"patience {result['patience']} epochs after it, at most {result['epoch_cap']:,} epochs); at each "
        f"milestone the best epoch so far, the one the run would export, is measured: its β = 1 validation "
        f"−ELBO and its test {figure} by importance sampling, K = {args.iw_samples:,}, on {result['test_images']:,} "
        f"test images. Training hours are the sum of the epochs' wall times. Command: "
        f"`python benchmarks/long_run.py {' '.join(args.argv)}` (run again, it resumes).",
        "",
        f"{machine_lines(result)} Written {datetime.datetime.now().date().isoformat()}.",
        "",
        f"| epochs trained | best epoch | its validation −ELBO | test {figure.replace('|', PIPE)} (nats) | training hours | s per epoch |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['epochs']:,}{' (stopped)' if row['stopped'] else ''} | {row['best_epoch']:,} | "
                     f"{-row['best_val_elbo']:.2f} | {row['test_nll']:.2f} | {row['train_hours']:.2f} | "
                     f"{row['seconds_per_epoch']:.1f} |")
    if end_row(result) is None:
        lines += ["", f"The run has not ended: it has trained past epoch {rows[-1]['epochs']:,}, and the command goes "
                  "on from the run dir's newest checkpoint when it runs again."]
    if unconditional is not None:
        lines += class_gain(result, unconditional, args.unconditional)
    if published is not None:
        lines += ["", f"{label}: {published:.2f} nats, at the end of its protocol (its epoch is not published)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--milestones", default="100,200,500", help="comma-separated epochs to measure at")
    parser.add_argument("--epochs", type=int, help="the epoch cap, instead of the recipe's")
    parser.add_argument("--iw-samples", type=int, default=5000)
    parser.add_argument("--test-limit", type=int, help="evaluate on the first N test images only")
    parser.add_argument("--run-dir", help="default runs/long/<recipe>-seed<N>")
    parser.add_argument("--unconditional", help="the long_run.json of the same protocol without the class, to "
                        "set a class-conditional run's −log p(x | y) beside")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    args.argv = argv
    args.run_dir = args.run_dir or str(ROOT / "runs" / "long" / f"{Path(args.recipe).stem}-seed{args.seed}")
    try:
        milestones = sorted({int(m) for m in args.milestones.split(",")})
    except ValueError:
        parser.error(f"--milestones: comma-separated whole numbers, got {args.milestones!r}")
    if min(milestones) < 1 or args.iw_samples < 1 or (args.epochs is not None and args.epochs < 1):
        parser.error("--milestones, --epochs and --iw-samples must be positive")

    import numpy as np
    from timing import EpochTimer

    from keras_cvae.atomic import atomic_write_text
    from keras_cvae.config import ConfigError
    from keras_cvae.data import load_configured
    from keras_cvae.evaluation.estimators import KerasBackend, iw_log_likelihood
    from keras_cvae.training import train

    try:
        recipe = stage_config(args)
    except (ConfigError, OSError) as error:
        parser.error(f"--recipe: {error}")
    try:
        unconditional = json.loads(Path(args.unconditional).read_text()) if args.unconditional else None
    except (OSError, json.JSONDecodeError) as error:
        parser.error(f"--unconditional: {error}")
    if unconditional is not None and not (recipe.model.conditional and unconditional.get("milestones")):
        parser.error("--unconditional sets a VAE's long run beside a class-conditional recipe's; "
                     f"{args.recipe} is {'class-conditional' if recipe.model.conditional else 'not class-conditional'} "
                     f"and {args.unconditional} {'has' if unconditional.get('milestones') else 'has no'} milestones")
    plan = stages(args, milestones, recipe)
    cap = plan[-1]
    figure = measure(recipe.model.conditional)
    dataset = load_configured(recipe.data)
    x_test = dataset.x_test[:args.test_limit].astype(np.float32) / 255.0
    y_test = dataset.y_test[:args.test_limit]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    settings = {"recipe": Path(args.recipe).read_text(), "seed": args.seed, "iw_samples": args.iw_samples,
                "test_images": len(x_test), "epoch_cap": cap, "kl_warmup": recipe.train.kl_warmup,
                "patience": recipe.train.early_stopping}
    earlier = json.loads((output / "long_run.json").read_text()) if (output / "long_run.json").exists() else {}
    rows = earlier.get("milestones", []) if all(earlier.get(k) == v for k, v in settings.items()) else []
    settings["conditional"] = recipe.model.conditional  # follows from the recipe: not compared
    timer = EpochTimer(output / "epoch_seconds.json", machine())
    print(f"Training {args.recipe} (seed {args.seed}) into {args.run_dir} up to {cap:,} epochs; the test {figure} "
          f"(K = {args.iw_samples:,}, {len(x_test):,} images) after epochs {', '.join(map(str, plan))} "
          "or where early stopping ends it.", flush=True)
    for stage in plan:
        if rows and (rows[-1]["stopped"] or rows[-1]["epochs"] >= stage):
            print(f"== epoch {stage:,}: kept from {output / 'long_run.json'}", flush=True)
            if rows[-1]["stopped"]:
                break
            continue
        print(f"== training to epoch {stage:,}", flush=True)
        result = train(stage_config(args, stage), dataset, args.run_dir, resume=True, callbacks=[timer])
        epochs = len(result.history)
        best = best_row(result.history, recipe.train.warmup_epochs)
        start = time.perf_counter()
        log_px = iw_log_likelihood(KerasBackend(result.model), x_test, y_test, args.iw_samples,
                                   np.random.default_rng(args.seed))
        trained = timer.first_epochs(epochs)
        rows.append({"epochs": epochs, "stopped": epochs < stage, "best_epoch": int(best["epoch"]),
                     "best_val_elbo": float(best["val_elbo"]), "test_nll": -float(np.mean(log_px)),
                     "train_hours": sum(trained) / 3600, "seconds_per_epoch": float(np.median(trained)),
                     "evaluate_minutes": (time.perf_counter() - start) / 60, "machine": machine()})
        print(f"   epoch {epochs:,}: best epoch {best['epoch']:,}, test {figure} "
              f"{rows[-1]['test_nll']:.2f}", flush=True)
        settings["trained_on"] = by_machine(timer.trained_on(epochs), "epochs ")  # follows from the epochs: not compared
        atomic_write_text(output / "long_run.json", json.dumps({**settings, "milestones": rows}, indent=2) + "\n")
        atomic_write_text(output / "long_run.md", markdown({**settings, "milestones": rows}, args, unconditional))
        if rows[-1]["stopped"]:
            break
    print(markdown({**settings, "milestones": rows}, args, unconditional))
    return 0


if __name__ == "__main__":
    sys.exit(main())
