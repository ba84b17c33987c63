"""Image folders against IDX files: the same test ELBO, the cost of decoding once, the same epochs.

    python examples/make_folders.py fashion-png data/fashion_png
    python benchmarks/image_folders.py --folder data/fashion_png --epochs 5 --repeats 3 --output benchmarks/results/image_folders

Fashion-MNIST written out as PNG class folders (train/ and test/, the IDX files' own split) is
loaded by `load_dataset` like any user's folder. For each seed, one MLP CVAE (keras_cvae's defaults)
is trained from the IDX files and one from the folder, and each is scored on its own test set by
the test ELBO (nats per image, one z per image); the two sources' spread over seeds is the
run-to-run noise their difference is judged against. Also timed, with a fresh cache each repeat:
decoding the folder (once), loading it again from the cache, loading the IDX files, and the
steady epoch time of training from each source. Writes image_folders.json and image_folders.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def train_and_score(dataset, data_dir: str | None, seed: int, epochs: int, scratch: Path) -> tuple[float, list[float]]:
    """Test ELBO of one training run, and its epoch wall times."""
    import keras

    from keras_cvae.config import RunConfig
    from keras_cvae.data import make_pipeline
    from keras_cvae.training import train

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    times: list[float] = []
    config = RunConfig()
    config.data.dataset, config.data.data_dir = "fashion_mnist", data_dir
    config.train.epochs, config.train.seed = epochs, seed
    config.train.export = str(scratch / f"export-{seed}-{bool(data_dir)}")
    result = train(config, dataset, scratch / f"run-{seed}-{bool(data_dir)}", callbacks=[EpochTimes()])
    test = make_pipeline(dataset.x_test, dataset.y_test, 1000, shuffle=False)
    return float(result.model.evaluate(test, verbose=0, return_dict=True)["elbo"]), times


def markdown(results: dict, args: argparse.Namespace) -> str:
    idx, folder = results["test_elbo"]["idx"], results["test_elbo"]["folder"]
    t = results["seconds"]

    def row(name: str, s: dict) -> str:
        return f"| {name} | {s['median']:.2f} | {s['min']:.2f}–{s['max']:.2f} |"

    return "\n".join([
        "# Fashion-MNIST from PNG folders vs from IDX files",
        "",
        f"Command: `python benchmarks/image_folders.py {' '.join(args.argv)}`. MLP CVAE, keras_cvae's defaults, "
        f"{args.epochs} epochs, seeds 0–{args.repeats - 1}; the ELBO is measured on each source's own test set "
        "(the same 10,000 images).",
        "",
        "| source | test ELBO, mean ± std over seeds (nats/image) | per seed |",
        "|---|---:|---|",
        f"| IDX files | {idx['mean']:.2f} ± {idx['std']:.2f} | {', '.join(f'{v:.2f}' for v in results['test_elbo_runs']['idx'])} |",
        f"| PNG folder | {folder['mean']:.2f} ± {folder['std']:.2f} | "
        f"{', '.join(f'{v:.2f}' for v in results['test_elbo_runs']['folder'])} |",
        "",
        f"Difference of the means: {folder['mean'] - idx['mean']:+.2f} nats; run-to-run std within a source: "
        f"{idx['std']:.2f} (IDX), {folder['std']:.2f} (folder).",
        "",
        "| seconds (over repeats) | median | range |",
        "|---|---:|---:|",
        row("decode the PNG folder (70,000 files, first load)", t["decode"]),
        row("load the folder again (from the cache)", t["cached"]),
        row("load the IDX files", t["idx_load"]),
        row("steady epoch from the folder's arrays", t["epoch_folder"]),
        row("steady epoch from the IDX arrays", t["epoch_idx"]),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, help="Fashion-MNIST as PNG folders (examples/make_folders.py)")
    parser.add_argument("--dataset", default="fashion_mnist", help="the IDX dataset it was written from")
    parser.add_argument("--data-dir", help="where the IDX files are (default: the dataset's usual places)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    args.argv = argv

    from keras_cvae.atomic import atomic_write_text
    from keras_cvae.data import load_dataset

    seconds: dict[str, list[float]] = {"decode": [], "cached": [], "idx_load": [], "epoch_folder": [], "epoch_idx": []}
    elbo: dict[str, list[float]] = {"idx": [], "folder": []}
    for seed in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["KERAS_CVAE_CACHE"] = cache
            folder, decode = timed(load_dataset, None, args.folder)
            _, cached = timed(load_dataset, None, args.folder)
        idx, idx_load = timed(load_dataset, args.dataset, args.data_dir)
        seconds["decode"].append(decode)
        seconds["cached"].append(cached)
        seconds["idx_load"].append(idx_load)
        with tempfile.TemporaryDirectory() as scratch:
            for source, dataset, data_dir in (("idx", idx, args.data_dir), ("folder", folder, args.folder)):
                print(f"== seed {seed}, {source}", flush=True)
                score, epochs = train_and_score(dataset, data_dir, seed, args.epochs, Path(scratch))
                elbo[source].append(score)
                seconds[f"epoch_{source}"].append(statistics.median(epochs[1:]))  # the first compiles
                print(f"   test ELBO {score:.2f}, epochs {', '.join(f'{e:.1f}' for e in epochs)} s", flush=True)

    results = {"test_elbo": {k: spread(v) for k, v in elbo.items()}, "test_elbo_runs": elbo,
               "seconds": {k: spread(v) for k, v in seconds.items()}, "seconds_runs": seconds, "epochs": args.epochs}
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "image_folders.json", json.dumps(results, indent=2) + "\n")
    table = markdown(results, args)
    atomic_write_text(output / "image_folders.md", table)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
