"""How long evaluation takes: the judge's training, `evaluate.py` cold and warm, and the
importance-weighted log-weights against the machine's matrix-product peak.

    python benchmarks/evaluate_speed.py --repeats 3 --output benchmarks/results/evaluate_speed

Per repeat, on Fashion-MNIST:
1. `evaluate.py` (the default: K = 100, the judge, FID and KID) of the 10-epoch reference model
   (`train.py --epochs 10 --seed 0`, trained first into a scratch folder unless --model is given)
   with an empty judge cache (cold: the judge is trained first, its training time read from its
   cache file), then again with that cache (warm); wall times of the whole command.
2. The IW log-weights at K = 5,000 for --iw-images test images through evaluate's own two
   paths (the float64 log-mean-exp included): the export's signature (a serving graph, without
   XLA) and the run dir's Keras model in process (the likelihood's XLA-fused form), in ms per
   image, with the decoder's FLOPs per image, the achieved GFLOP/s, and the peak: a plain
   float32 matrix product of the decoder's largest shape, [K, hidden] × [hidden, pixels].
Writes evaluate_speed.json and evaluate_speed.md to --output.
"""

from __future__ import annotations

import argparse
import datetime
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

from quality import machine, scratch_directory, spread  # noqa: E402

IW_SAMPLES = 5000
PATHS = {"export": "the export's signature", "keras": "the run dir's model, fused likelihood"}


def timed_command(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, result.stdout


def reference_model(scratch: Path) -> tuple[Path, Path]:
    """The 10-epoch reference model's run dir and export, trained here (about 2 minutes)."""
    print("Training the 10-epoch reference model (train.py --epochs 10 --seed 0)", flush=True)
    timed_command(["train.py", "--dataset", "fashion_mnist", "--epochs", "10", "--seed", "0", "--run-dir",
                   str(scratch / "run"), "--export", str(scratch / "export")], dict(os.environ))
    return scratch / "run", scratch / "export" / "1"


def matmul_peak(rows: int, inner: int, columns: int, repeats: int = 20) -> float:
    """GFLOP/s of a float32 [rows, inner] × [inner, columns] product, the median of `repeats`."""
    import numpy as np
    import tensorflow as tf

    a, b = tf.random.normal([rows, inner]), tf.random.normal([inner, columns])
    product = tf.function(tf.linalg.matmul)
    product(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2.0 * rows * inner * columns / float(np.median(times)) / 1e9


def iw_speed(model: Path, images: int) -> dict[str, float]:
    """ms per image of evaluate's IW path at K = 5,000 for `model` (an export or a run dir), and
    the decoder's FLOPs per image."""
    import numpy as np

    from keras_cvae.data import load_dataset
    from keras_cvae.evaluation.estimators import iw_log_likelihood
    from keras_cvae.loading import load
    from keras_cvae.run_dir import locate
    from keras_cvae.tasks.classes import as_class_model

    backend = as_class_model(load(locate(model)))
    data = load_dataset("fashion_mnist")
    x, y = data.x_test[:images].astype(np.float32) / 255.0, data.y_test[:images]
    iw_log_likelihood(backend, x[:2], y[:2], IW_SAMPLES, np.random.default_rng(1))  # traced
    start = time.perf_counter()
    iw_log_likelihood(backend, x, y, IW_SAMPLES, np.random.default_rng(0))
    seconds = time.perf_counter() - start
    config = backend.model.get_config() if hasattr(backend, "model") else \
        json.loads((model / "assets" / "config.json").read_text())["model"]
    hidden, latent = int(config["hidden_units"][-1]), int(config["latent_dim"])
    conditions = sum(len(c["values"]) for c in config["conditions"]) if config["conditional"] else 0
    pixels = int(np.prod(x.shape[1:]))
    flops = IW_SAMPLES * 2.0 * ((latent + conditions) * hidden + hidden * pixels)
    return {"ms_per_image": 1000 * seconds / images, "gflop_per_image": flops / 1e9,
            "gflops": flops * images / seconds / 1e9, "hidden": hidden, "pixels": pixels}


def markdown(runs: list[dict], args: argparse.Namespace, command: str) -> str:
    def column(key: str, digits: int = 1) -> str:
        return spread([r[key] for r in runs], digits)

    hidden, pixels = runs[0]["hidden"], runs[0]["pixels"]
    return "\n".join([
        "# Evaluation speed: the judge, `evaluate.py` cold and warm, the IW log-weights",
        "",
        f"Command: `python benchmarks/evaluate_speed.py {command}`. Machine: {machine()}. "
        f"Written {datetime.datetime.now().date().isoformat()}. Fashion-MNIST (60,000 training, 10,000 test "
        f"images); the 10-epoch reference model (`train.py --epochs 10 --seed 0`); mean ± std over "
        f"{len(runs)} repeats.",
        "",
        "| measure | mean ± std |",
        "|---|---:|",
        f"| judge training, 60,000 images (s) | {column('judge_seconds')} |",
        f"| judge on real test images / on blurred ones (σ = 1 px) | {column('judge_accuracy', 4)} / "
        f"{column('judge_blurred_accuracy', 4)} |",
        f"| conditional accuracy the judge gives the reference model's samples | {column('conditional_accuracy', 3)} |",
        f"| `evaluate.py`, cold judge cache (s, whole command) | {column('cold_seconds')} |",
        f"| `evaluate.py`, warm judge cache (s, whole command) | {column('warm_seconds')} |",
        f"| decoder work per image at K = {IW_SAMPLES:,} (GFLOP) | {runs[0]['gflop_per_image']:.2f} |",
        f"| peak: float32 matmul [{IW_SAMPLES}, {hidden}] × [{hidden}, {pixels}] (GFLOP/s) | {column('peak_gflops')} |",
        *[row for path, label in PATHS.items() for row in [
            f"| IW log-weights at K = {IW_SAMPLES:,}, {args.iw_images} images, {label} (ms per image) | "
            f"{column(f'iw_{path}_ms_per_image')} |",
            f"| … achieved (GFLOP/s) / share of the peak | {column(f'iw_{path}_gflops')} / "
            f"{spread([r[f'iw_{path}_gflops'] / r['peak_gflops'] for r in runs], 2)} |",
            f"| … 10,000 test images (min) | {spread([r[f'iw_{path}_ms_per_image'] * 10_000 / 60_000 for r in runs], 1)} |",
        ]],
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="the reference model's export version dir (with --run-dir; default: train it)")
    parser.add_argument("--run-dir", help="the reference model's run dir (with --model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iw-images", type=int, default=200, help="test images timed at K = 5,000")
    parser.add_argument("--output", default="benchmarks/results/evaluate_speed")
    args = parser.parse_args(argv)
    scratch = scratch_directory("evaluate-speed-")
    run_dir, model = (Path(args.run_dir), Path(args.model)) if args.model and args.run_dir else reference_model(scratch)
    output = Path(args.output)
    runs = []
    for repeat in range(args.repeats):
        cache = scratch / f"cache-{repeat}"
        env = {**os.environ, "KERAS_CVAE_CACHE": str(cache)}
        evaluate = ["evaluate.py", "--model", str(model), "--dataset", "fashion_mnist"]
        print(f"== repeat {repeat}: evaluate.py, cold judge cache", flush=True)
        cold, _ = timed_command([*evaluate, "--output", str(scratch / f"cold-{repeat}")], env)
        print(f"   {cold:.0f} s; warm", flush=True)
        warm, _ = timed_command([*evaluate, "--output", str(scratch / f"warm-{repeat}")], env)
        judge = json.loads(next(cache.glob("classifier-*.json")).read_text())
        metrics = json.loads((scratch / f"warm-{repeat}" / "metrics.json").read_text())
        print(f"   {warm:.0f} s; IW at K={IW_SAMPLES}", flush=True)
        iw = {path: iw_speed(source, args.iw_images) for path, source in (("export", model), ("keras", run_dir))}
        runs.append({"cold_seconds": cold, "warm_seconds": warm, "judge_seconds": judge["train_seconds"],
                     "judge_accuracy": judge["per_condition_test_accuracy"]["labels"],
                     "judge_blurred_accuracy": judge["blurred_test_accuracy"],
                     "conditional_accuracy": metrics["conditional_accuracy"],
                     **{f"iw_{path}_{key}": iw[path][key] for path in PATHS for key in ("ms_per_image", "gflops")},
                     "gflop_per_image": iw["export"]["gflop_per_image"], "hidden": iw["export"]["hidden"],
                     "pixels": iw["export"]["pixels"],
                     "peak_gflops": matmul_peak(IW_SAMPLES, iw["export"]["hidden"], iw["export"]["pixels"])})
        print(f"   {runs[-1]}", flush=True)
        output.mkdir(parents=True, exist_ok=True)
        (output / "evaluate_speed.json").write_text(json.dumps({"command": " ".join(argv), "runs": runs}, indent=2) + "\n")
        (output / "evaluate_speed.md").write_text(markdown(runs, args, " ".join(argv)))
    print(markdown(runs, args, " ".join(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
