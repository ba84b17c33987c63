"""Images per second of the SavedModel's serving_default signature at batch 1, 64 and 1024.

    python benchmarks/generate_speed.py                       # a fresh default MLP model, exported to a temp dir
    python benchmarks/generate_speed.py --model saved_models/fashion_mnist-mlp/1

Speed does not depend on the weights, so without --model an untrained model of the default
architecture is exported and timed. Runs on the GPU when TensorFlow sees one. Writes
benchmarks/results/generate_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"


def time_batches(serve, batch_size: int, seconds: float) -> dict:
    import tensorflow as tf

    labels = tf.constant([i % 10 for i in range(batch_size)], tf.int32)
    for _ in range(3):  # warm-up: tracing, allocation, GPU kernels
        serve(labels=labels)["images"].numpy()
    timings = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(timings) < 5:
        start = time.perf_counter()
        serve(labels=labels)["images"].numpy()  # .numpy(): include the copy back to the host
        timings.append(time.perf_counter() - start)
    median = statistics.median(timings)
    return {"batch_size": batch_size, "calls": len(timings), "median_ms": median * 1e3,
            "images_per_s": batch_size / median}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="SavedModel version dir (default: export a fresh default model)")
    parser.add_argument("--arch", default="mlp", choices=["mlp", "conv"], help="architecture for the fresh model")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per batch size")
    parser.add_argument("--batch-sizes", default="1,64,1024")
    parser.add_argument("--output", default=str(RESULTS / "generate_speed.json"))
    args = parser.parse_args(argv)

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model
        if model_path is None:
            from keras_cvae.export import export_saved_model
            from keras_cvae.models.cvae import CVAE

            model_path = str(export_saved_model(CVAE(arch=args.arch), tmp))
        serve = tf.saved_model.load(model_path).signatures["serving_default"]
        gpus = tf.config.list_physical_devices("GPU")
        device = (tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
                  if gpus else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})")
        rows = [time_batches(serve, int(b), args.seconds) for b in args.batch_sizes.split(",")]

    result = {"device": device, "model": args.model or f"fresh default {args.arch}",
              "tensorflow": tf.__version__, "results": rows}
    print(f"serving_default on {device}")
    print("| batch | median ms/call | images/s |\n|---:|---:|---:|")
    for row in rows:
        print(f"| {row['batch_size']} | {row['median_ms']:.2f} | {row['images_per_s']:,.0f} |")
    from keras_cvae.atomic import atomic_write_text

    atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
