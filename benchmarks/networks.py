"""The built-in convolutional networks side by side on colour images: `conv` against `resnet`.

    python examples/make_folders.py emoji data/emoji
    python benchmarks/networks.py --data-dir data/emoji --epochs 60 --repeats 3 --output benchmarks/results/networks

For each seed, trains each of `--archs` with --recipe's settings (default recipes/emoji.toml: the
emoji folder at 32×32, conditions category and vendor, the discretized logistic likelihood,
train.py's other defaults) for `--epochs` epochs,
keeping the epoch with the best validation ELBO (early stopping with a patience of all the
epochs: the run never stops early, it ends on the best epoch's weights), then evaluates it as
`evaluate.py` does: the IW-NLL in bits per dimension (K = --iw-samples), the share of samples
the judge recognises as the category and the vendor asked for, FID and KID. The judge is the
dataset's cached reference classifier, the same for every run (runs in networks.json that another
judge scored are repeated). Writes networks.json, networks.md
and each architecture's seed-0 sample grid (rows: categories) to --output after every run; a run
(arch, seed) already in networks.json with the same settings is kept, not repeated.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quality import machine, scratch_directory, spread  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def markdown(runs: list[dict], args: argparse.Namespace, judge: dict, base) -> str:
    d, m = base.data, base.model
    lines = [
        "# conv against resnet on colour images: emoji at 32×32",
        "",
        "Data: npm's emoji-datasource 16.0.0, the Google and Twitter sets (`python examples/make_folders.py emoji "
        f"data/emoji`), `{Path(args.recipe).name}`: {'×'.join(map(str, d.image_size))} RGB, conditions {d.conditions}, "
        f"the {m.likelihood} likelihood, train.py's other defaults "
        f"(latent 20, hidden units 128, Adam 1e-3, batch 128). {args.epochs} epochs each, the epoch with the best "
        f"validation ELBO kept; IW K={args.iw_samples}. Mean ± std over "
        f"{len({r['seed'] for r in runs})} seed(s). Command: "
        + ", ".join(f"`python benchmarks/networks.py {c}`" for c in dict.fromkeys(r["command"] for r in runs)),
        "",
        f"Machine: {machine()}. Written {datetime.datetime.now().date().isoformat()}.",
        "",
        "| arch | samples showing the category asked for | … the vendor | FID | test NLL (bits/dim) | best epoch "
        "| s per epoch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for arch in args.archs:
        mine = [r for r in runs if r["arch"] == arch]
        if mine:
            lines.append(
                f"| {arch} | {spread([r['category_accuracy'] for r in mine], 3)} | "
                f"{spread([r['vendor_accuracy'] for r in mine], 3)} | {spread([r['fid'] for r in mine])} | "
                f"{spread([r['bits_per_dim'] for r in mine], 3)} | "
                f"{', '.join(str(r['best_epoch']) for r in mine)} | {spread([r['seconds_per_epoch'] for r in mine], 1)} |")
    lines += ["", f"The judge on real test emoji: category {judge['category']:.3f}, vendor {judge['vendor']:.3f}.", ""]
    for arch in args.archs:
        if (Path(args.output) / f"{arch}_samples.png").exists():
            lines += [f"![{arch} samples, seed 0, rows: the category asked for]({arch}_samples.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(Path(__file__).resolve().parent.parent / "recipes" / "emoji.toml"))
    parser.add_argument("--data-dir", default="data/emoji")
    parser.add_argument("--archs", default="conv,resnet", type=lambda text: text.split(","))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="seeds 0, 1, …")
    parser.add_argument("--iw-samples", type=int, default=100)
    parser.add_argument("--output", default="benchmarks/results/networks")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1 or args.iw_samples < 1:
        parser.error("--epochs, --repeats and --iw-samples must be positive")

    from keras_cvae.atomic import atomic_write_text
    from keras_cvae.config import ARCHITECTURES
    from keras_cvae.data import load_configured
    from keras_cvae.evaluation.classifier import judge_cache_path
    from keras_cvae.recipes import load_recipe
    from keras_cvae.tasks import EvaluationOptions, get_task
    from keras_cvae.training import train

    if unknown := [a for a in args.archs if a not in ARCHITECTURES]:
        parser.error(f"--archs: unknown {', '.join(unknown)}; choose from {', '.join(ARCHITECTURES)}")
    base = load_recipe(args.recipe).config()
    base.data.data_dir = args.data_dir
    base.train.epochs, base.train.early_stopping = args.epochs, args.epochs
    dataset = load_configured(base.data)
    output, scratch = Path(args.output), scratch_directory("networks-")
    # The judge's cache file names its definition: runs scored by another judge are not kept.
    settings = {"epochs": args.epochs, "iw_samples": args.iw_samples, "data_dir": args.data_dir,
                "judge_file": judge_cache_path(dataset, Path(args.data_dir).name).name}
    earlier = json.loads((output / "networks.json").read_text()) if (output / "networks.json").exists() else {}
    runs = earlier.get("runs", []) if all(earlier.get(k) == v for k, v in settings.items()) else []
    judge: dict = earlier.get("judge", {})
    for seed in range(args.repeats):
        for arch in args.archs:
            if any(r["arch"] == arch and r["seed"] == seed for r in runs):
                print(f"== {arch}, seed {seed}: kept from {output / 'networks.json'}", flush=True)
                continue
            print(f"== {arch}, seed {seed}", flush=True)
            config = type(base).from_dict(base.to_dict())
            config.model.arch, config.train.seed = arch, seed
            config.train.export = str(scratch / f"export-{arch}-{seed}")
            start = time.perf_counter()
            result = train(config, dataset, scratch / f"run-{arch}-{seed}")
            seconds = time.perf_counter() - start
            best = max(result.history, key=lambda row: row["val_elbo"])
            evaluation = scratch / f"eval-{arch}-{seed}"
            options = EvaluationOptions(dataset_name=Path(args.data_dir).name, model_name=arch,
                                        iw_samples=args.iw_samples, seed=seed)
            metrics = get_task("classes").evaluate(result.model, dataset, evaluation, options)
            judge = metrics["classifier_per_condition_test_accuracy"]
            runs.append({"arch": arch, "seed": seed, "command": " ".join(argv),
                         "category_accuracy": metrics["per_condition_accuracy"]["category"],
                         "vendor_accuracy": metrics["per_condition_accuracy"]["vendor"],
                         "fid": metrics["fid"], "kid": metrics["kid"], "bits_per_dim": metrics["test_bits_per_dim"],
                         "best_epoch": int(best["epoch"]), "best_val_elbo": float(best["val_elbo"]),
                         "seconds_per_epoch": seconds / len(result.history)})
            print(f"   category {runs[-1]['category_accuracy']:.3f}, FID {metrics['fid']:.2f}, best epoch "
                  f"{runs[-1]['best_epoch']}", flush=True)
            output.mkdir(parents=True, exist_ok=True)
            if seed == 0:
                shutil.copyfile(evaluation / "samples.png", output / f"{arch}_samples.png")
            runs.sort(key=lambda r: (r["seed"], args.archs.index(r["arch"]) if r["arch"] in args.archs else 99))
            atomic_write_text(output / "networks.json",
                              json.dumps({**settings, "judge": judge, "runs": runs}, indent=2) + "\n")
            atomic_write_text(output / "networks.md", markdown(runs, args, judge, base))
    print(markdown(runs, args, judge, base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
