"""Semi-supervised learning (Kingma et al. 2014, M2) against a classifier trained on the labels alone.

    python benchmarks/semi_supervised.py --dataset fashion_mnist --labeled 100 --output S
    python benchmarks/semi_supervised.py --labeled 100,600,1000,3000 --repeats 3 --epochs 10 --output S

For each number of labels N and each draw (the seeds 0, 1, …: which images keep their label, the
weights, the data order), trains the library's `semi_supervised` task (train.py's defaults: MLP
400 units, latent 20, batch 128, Adam 1e-3) and measures q(y | x)'s accuracy on the test set.
The baseline is the same classifier network (models.networks.build_classifier) trained on the
same N labelled images alone, with the same optimizer, for the same number of steps, on batches
as large as M2's labelled share of a batch. Also times an epoch of the `classes` task on the same
data, to state what enumerating the classes costs.

Writes semi_supervised.json ({"<N>": {"m2": mean accuracy, "baseline": mean accuracy, "m2_runs":
[…], "baseline_runs": […], "m2_std", "baseline_std", "steps"}}), semi_supervised_speed.json and
semi_supervised.md to --output.
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


def epoch_timer():
    """A callback that records every epoch's wall time."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    return EpochTimer()


def run_config(args: argparse.Namespace, task: str, seed: int, scratch: Path, labeled: int | None = None):
    from keras_cvae.config import RunConfig

    config = RunConfig()
    config.data.dataset, config.data.data_dir, config.data.task = args.dataset, args.data_dir, task
    config.data.labeled, config.data.limit = labeled, args.limit
    config.train.epochs, config.train.seed = args.epochs if task == "semi_supervised" else args.timing_epochs, seed
    if task == "semi_supervised":
        config.model.classifier_weight = args.classifier_weight
    config.train.export = str(scratch / f"export-{task}-{labeled}-{seed}")
    return config


def labels_only_accuracy(model, config, dataset, steps: int, x_test, y_test) -> float:
    """The baseline: M2's classifier network, fresh, trained on the N labelled images alone for
    `steps` Adam steps, then its test accuracy."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_cvae.data import limit_and_split
    from keras_cvae.networks import build_classifier
    from keras_cvae.tasks.semi_supervised import labeled_per_batch, select_labeled

    tc = config.train
    keras.utils.set_random_seed(tc.seed)
    (x_train, y_train), _ = limit_and_split(dataset.x_train, dataset.y_train, config.data.limit,
                                            config.data.validation_fraction)
    chosen = select_labeled(y_train, config.data.labeled, dataset.conditions[0].values, tc.seed)
    batch = min(len(chosen), labeled_per_batch(tc.batch_size, len(chosen), len(x_train)))
    images = x_train[chosen].astype("float32") / 255.0
    labels = y_train[chosen, 0].astype("int32")
    data = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().shuffle(len(chosen), seed=tc.seed).batch(batch)
    classifier = build_classifier(model.image_shape, model.num_classes, model.arch, model.hidden_units)
    classifier.compile(optimizer=keras.optimizers.Adam(tc.learning_rate),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    predicted = np.argmax(classifier.predict(x_test, batch_size=1000, verbose=0), axis=1)
    return float(np.mean(predicted == y_test))


def spread(values: list[float]) -> str:
    import numpy as np

    return f"{np.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def markdown(results: dict, speed: dict, args: argparse.Namespace, minutes: float) -> str:
    lines = [
        f"# Semi-supervised classification on {args.dataset}: test accuracy of q(y | x)",
        "",
        f"M2 (`--task semi_supervised`, classifier weight {args.classifier_weight}) for {args.epochs} epochs, against "
        "the same classifier trained on the labels alone for the same number of steps. Mean ± std over "
        f"{args.repeats} draws of the labelled images (seeds 0–{args.repeats - 1}). {minutes:.1f} min in all. "
        f"Command: `python benchmarks/semi_supervised.py {' '.join(args.argv)}`",
        "",
        "| labels | M2 | labels only | M2 − labels only | steps |",
        "|---:|---:|---:|---:|---:|",
    ]
    for count, row in results.items():
        lines.append(f"| {count} | {row['m2']:.4f} ± {row['m2_std']:.4f} | {row['baseline']:.4f} ± "
                     f"{row['baseline_std']:.4f} | {row['m2'] - row['baseline']:+.4f} | {row['steps']} |")
    lines += ["", "Epoch wall time, seconds, median (range) over the epochs after the first (which compiles):", "",
              "| task | epoch (s) | epochs timed |", "|---|---:|---:|"]
    for task, seconds in speed.items():
        lines.append(f"| {task} | {spread(seconds)} | {len(seconds)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--labeled", default="100,600,1000,3000", help="numbers of labels, comma-separated")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="draws of the labelled images per N (seeds 0, 1, …)")
    parser.add_argument("--classifier-weight", type=float, default=0.1)
    parser.add_argument("--timing-epochs", type=int, default=3, help="epochs of the classes task to time")
    parser.add_argument("--limit", type=int, help="use only the first N training images")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    args.argv = argv
    counts = [int(c) for c in args.labeled.split(",")]
    if args.epochs < 1 or args.repeats < 1 or args.timing_epochs < 2:
        parser.error("--epochs and --repeats must be positive, --timing-epochs at least 2")

    import tempfile

    import numpy as np

    from keras_cvae.atomic import atomic_write_text
    from keras_cvae.data import load_dataset
    from keras_cvae.evaluation.estimators import KerasBackend, classify
    from keras_cvae.training import train

    start = time.perf_counter()
    dataset = load_dataset(args.dataset, args.data_dir)
    x_test, y_test = dataset.x_test.astype("float32") / 255.0, dataset.y_test[:, 0].astype(int)
    scratch = Path(tempfile.mkdtemp(prefix="semi-supervised-"))
    results: dict[str, dict] = {}
    speed: dict[str, list[float]] = {"semi_supervised": [], "classes": []}
    for count in counts:
        m2, baseline, steps = [], [], 0
        for seed in range(args.repeats):
            print(f"== {count} labels, draw {seed}", flush=True)
            config = run_config(args, "semi_supervised", seed, scratch, count)
            timer = epoch_timer()
            model = train(config, dataset, scratch / f"run-{count}-{seed}", callbacks=[timer]).model
            speed["semi_supervised"] += timer.seconds[1:] or timer.seconds
            steps = int(model.optimizer.iterations)
            m2.append(float(np.mean(np.argmax(classify(KerasBackend(model), x_test), axis=1) == y_test)))
            baseline.append(labels_only_accuracy(model, config, dataset, steps, x_test, y_test))
            print(f"   M2 {m2[-1]:.4f}, labels only {baseline[-1]:.4f} ({steps} steps)", flush=True)
        results[str(count)] = {"m2": float(np.mean(m2)), "baseline": float(np.mean(baseline)),
                               "m2_std": float(np.std(m2)), "baseline_std": float(np.std(baseline)),
                               "m2_runs": m2, "baseline_runs": baseline, "steps": steps}
    for seed in range(args.repeats):
        print(f"== timing the classes task, seed {seed}", flush=True)
        timer = epoch_timer()
        train(run_config(args, "classes", seed, scratch), dataset, scratch / f"run-classes-{seed}", callbacks=[timer])
        speed["classes"] += timer.seconds[1:]

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "semi_supervised.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(output / "semi_supervised_speed.json", json.dumps(
        {task: {"epoch_seconds": seconds, "median": float(np.median(seconds))} for task, seconds in speed.items()},
        indent=2) + "\n")
    table = markdown(results, speed, args, (time.perf_counter() - start) / 60)
    atomic_write_text(output / "semi_supervised.md", table)
    print("\n" + table)
    print(f"wrote {output / 'semi_supervised.json'}, semi_supervised_speed.json and semi_supervised.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
