"""Where the time of one importance-weighted call goes: the log-weights of 6 images at K = 5,000
(30,000 decoder rows) taken apart into the decoder, the images' tiling and the Bernoulli
log-probability, unfused and fused.

    python benchmarks/iw_profile.py --repeats 3 --output benchmarks/results/evaluate_speed

Builds train.py's default model (MLP 400 units, latent 20, 10 classes; the timings do not depend
on the weights) and times, each as its own compiled function on the same tensors, the median of
20 calls, its result fetched to numpy: the whole call (unfused, as an export's signature runs it,
and fused, as a run dir's model does), the decoder's logits, the tiling of the images K times,
the log-probability of those logits summed per row, unfused and fused, and the fetch of the
logits alone; beside them a plain float32 matrix product of the decoder's largest shape,
[30,000, 400] × [400, 784]. Writes iw_profile.json and iw_profile.md to --output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import machine, spread  # noqa: E402

IMAGES, DRAWS, CALLS = 6, 5000, 20


def median_ms_per_image(function, *arguments) -> float:
    """The median wall time of `CALLS` calls of a compiled `function`, per image, in ms."""
    import numpy as np
    import tensorflow as tf

    def finish(result):
        return tf.nest.map_structure(lambda tensor: tensor.numpy(), result)

    finish(function(*arguments))  # traced and compiled
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        finish(function(*arguments))
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times)) / IMAGES


def profile() -> dict[str, float]:
    import numpy as np
    import tensorflow as tf

    from keras_cvae import CVAE

    model = CVAE(seed=0)
    rng = np.random.default_rng(0)
    images = (rng.random((IMAGES, 28, 28, 1)) < 0.5).astype(np.float32)
    rows = tf.constant(np.eye(10, dtype=np.float32)[np.arange(IMAGES)])
    eps = tf.constant(rng.standard_normal((DRAWS, IMAGES, model.latent_dim)).astype(np.float32))
    tiled_images, tiled_rows = tf.tile(images, [DRAWS, 1, 1, 1]), tf.tile(rows, [DRAWS, 1])
    z = tf.constant(rng.standard_normal((DRAWS * IMAGES, model.latent_dim)).astype(np.float32))
    logits = model.decoder_logits(z, tiled_rows)
    hidden, weights = tf.random.normal([DRAWS * IMAGES, 400]), tf.random.normal([400, 784])
    likelihood = model.likelihood
    return {
        "whole_unfused": median_ms_per_image(tf.function(model.log_importance_weights), images, rows, eps),
        "whole_fused": median_ms_per_image(
            tf.function(lambda x, y, e: model.log_importance_weights(x, y, e, fused=True)), images, rows, eps),
        "decoder": median_ms_per_image(tf.function(model.decoder_logits), z, tiled_rows),
        "matmul": median_ms_per_image(tf.function(tf.linalg.matmul), hidden, weights),
        "tile": median_ms_per_image(tf.function(lambda x: tf.tile(x, [DRAWS, 1, 1, 1])), images),
        "fetch": median_ms_per_image(tf.function(tf.identity), logits),
        "log_prob_unfused": median_ms_per_image(tf.function(likelihood.log_prob), tiled_images, logits),
        "log_prob_fused": median_ms_per_image(
            tf.function(lambda x, o: likelihood.log_prob(x, o, fused=True)), tiled_images, logits),
    }


ROWS = {
    "whole_unfused": "the whole call, unfused (an export's signature)",
    "whole_fused": "the whole call, fused (a run dir's model)",
    "decoder": "the decoder's logits (two dense layers)",
    "matmul": "… a plain matrix product [30,000, 400] × [400, 784]",
    "tile": "the images tiled K times",
    "fetch": "fetching the 30,000 × 784 logits to numpy (part of the decoder's row, not of a whole call)",
    "log_prob_unfused": "Bernoulli log-probability summed per row, unfused",
    "log_prob_fused": "… fused by XLA",
}


def markdown(runs: list[dict], command: str) -> str:
    return "\n".join([
        "# Where the time of the importance-weighted log-weights goes",
        "",
        f"Command: `python benchmarks/iw_profile.py {command}`. Machine: {machine()}. Written "
        f"{datetime.datetime.now().date().isoformat()}. One call: {IMAGES} images at K = {DRAWS:,} "
        f"({IMAGES * DRAWS:,} decoder rows), train.py's default model; each part compiled alone, the "
        f"median of {CALLS} calls; mean ± std over {len(runs)} repeats.",
        "",
        "| part | ms per image |",
        "|---|---:|",
        *[f"| {label} | {spread([run[key] for run in runs])} |" for key, label in ROWS.items()],
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/results/evaluate_speed")
    args = parser.parse_args(argv)
    runs = []
    for repeat in range(args.repeats):
        runs.append(profile())
        print(f"repeat {repeat}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()), flush=True)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "iw_profile.json").write_text(json.dumps({"command": " ".join(argv), "runs": runs}, indent=2) + "\n")
    (output / "iw_profile.md").write_text(markdown(runs, " ".join(argv)))
    print(markdown(runs, " ".join(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
