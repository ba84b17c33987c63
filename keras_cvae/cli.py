"""Command line: `train`, `export`, `generate` and `evaluate`.

Every command validates its input before importing TensorFlow, and answers bad input with one
line on stderr and exit status 2 (`--debug` shows the traceback instead). Flags left out keep
their dataclass defaults, or on `--resume` the values saved in the run's config.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from keras_cvae.config import (
    ARCHITECTURES,
    LIKELIHOODS,
    OBJECTIVES,
    QUADRANT_COUNTS,
    STRATEGIES,
    TASKS,
    ConfigError,
    RunConfig,
)
from keras_cvae.data import DATASETS, DataError, load_dataset
from keras_cvae.distribute import has_backup, is_chief
from keras_cvae.errors import NonFiniteLossError, UsageError

EXIT_USAGE = 2
EXIT_TRAINING_FAILED = 3


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of dumping the usage text."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_USAGE)


def _hidden_units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 400 or 512,256, got {text!r}") from None
    return units


def _writable_dir(path: Path, what: str) -> None:
    """Create `path` if needed and prove it writable, before any long work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A uniquely named probe: workers of one multi-worker run check the same dir at once.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test-"):
            pass
    except OSError as err:
        raise UsageError(f"{what} {path} is not writable ({err.strerror or err})") from None


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    """Run `command`, turning the project's own input errors into one line and exit status 2."""
    _quiet_tensorflow()
    try:
        return command(args)
    except (UsageError, ConfigError, DataError, FileNotFoundError) as err:
        if getattr(args, "debug", False):
            raise
        message = str(err).replace("\n", " ")
        sys.stderr.write(f"{prog}: error: {message}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; files already written are intact\n")
        return 130
    except NonFiniteLossError as err:
        if getattr(args, "debug", False):
            raise
        sys.stderr.write(f"{prog}: error: {err}\n")
        return EXIT_TRAINING_FAILED


# ------------------------------------------------------------------------------------------
# train

# flag dest → (config section, field)
TRAIN_FLAGS = {
    "dataset": ("data", "dataset"),
    "data_dir": ("data", "data_dir"),
    "limit": ("data", "limit"),
    "validation_fraction": ("data", "validation_fraction"),
    "arch": ("model", "arch"),
    "hidden_units": ("model", "hidden_units"),
    "latent_dim": ("model", "latent_dim"),
    "likelihood": ("model", "likelihood"),
    "beta": ("model", "beta"),
    "task": ("data", "task"),
    "quadrants": ("data", "quadrants"),
    "objective": ("model", "objective"),
    "alpha": ("model", "alpha"),
    "conditional": ("model", "conditional"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "learning_rate": ("train", "learning_rate"),
    "seed": ("train", "seed"),
    "kl_warmup": ("train", "kl_warmup"),
    "run_dir": ("train", "run_dir"),
    "export": ("train", "export"),
    "tensorboard": ("train", "tensorboard"),
    "jit_compile": ("train", "jit_compile"),
    "steps_per_execution": ("train", "steps_per_execution"),
    "mixed_precision": ("train", "mixed_precision"),
    "strategy": ("train", "strategy"),
}
# What may change when a run is resumed; everything else must match the saved config.
RESUMABLE_FIELDS = {
    "epochs", "export", "tensorboard", "run_dir", "data_dir", "jit_compile", "steps_per_execution", "mixed_precision",
    "strategy",
}


def train_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Train a conditional VAE. Example: python train.py --dataset fashion_mnist --epochs 10",
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    add("--dataset", choices=sorted(DATASETS), help="dataset (default mnist)")
    add("--data-dir", help="folder of the four IDX files (.gz or raw) or a Keras-style .npz; the only source tried")
    add("--limit", type=int, help="use only the first N training images")
    add("--validation-fraction", type=float, help="share of the training set held out for validation (default 0.1)")
    add("--arch", choices=ARCHITECTURES, help="network architecture (default mlp)")
    add("--hidden-units", type=_hidden_units, help="dense layer sizes, e.g. 400 or 512,512 (default mlp 400, conv 128)")
    add("--latent-dim", type=int, help="size of z (default 20)")
    add("--likelihood", choices=LIKELIHOODS, help="pixel likelihood (default bernoulli)")
    add("--beta", type=float, help="weight of the KL term (default 1.0)")
    add("--no-conditional", dest="conditional", action="store_false", help="train a plain VAE (no condition)")
    add("--task", choices=TASKS, help="classes: p(image | class) (default); quadrants: complete an image from part of it")
    add("--quadrants", type=int, choices=QUADRANT_COUNTS, help="visible quadrants for --task quadrants (default 1)")
    add("--model", dest="objective", choices=OBJECTIVES,
        help="for --task quadrants: baseline, cvae (default), gsnn or hybrid (Sohn et al. 2015)")
    add("--alpha", type=float, help="hybrid objective: α·CVAE + (1−α)·GSNN (default 0.5)")
    add("--epochs", type=int, help="total number of epochs, also with --resume (default 100)")
    add("--batch-size", type=int, help="batch size (default 128)")
    add("--learning-rate", type=float, help="Adam learning rate (default 1e-3)")
    add("--seed", type=int, help="random seed (default 0)")
    add("--kl-warmup", type=int, help="raise the KL weight linearly over this many epochs (default 0: off)")
    add("--run-dir", help="where the run's files go (default runs/<dataset>-<arch>)")
    add("--export", help="SavedModel export root (default saved_models/<dataset>-<arch>)")
    add("--tensorboard", action="store_true", help="log scalars and sample grids for TensorBoard")
    add("--jit", dest="jit_compile", action="store_true", help="XLA-compile the train step (default: on a GPU, and on a CPU for --arch mlp in float32)")
    add("--no-jit", dest="jit_compile", action="store_false", help="do not XLA-compile the train step")
    add("--steps-per-execution", type=int,
        help="train steps per compiled call (default 32); callbacks see every Nth batch")
    add("--mixed-precision", action="store_true",
        help="compute in bfloat16 on CPU, float16 on GPU (losses and KL stay float32)")
    add("--strategy", choices=STRATEGIES,
        help="auto (default: mirrored on >1 GPU), one_device, mirrored, multi_worker (TF_CONFIG); "
             "--batch-size is the global batch")
    add("--resume", action="store_true", default=False, help="continue the run in --run-dir")
    add("--debug", action="store_true", default=False, help="show tracebacks")
    return parser


def _apply(config: RunConfig, given: dict[str, Any]) -> None:
    for dest, value in given.items():
        section, field = TRAIN_FLAGS[dest]
        setattr(getattr(config, section), field, value)


def resolve_train_config(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """The run's config (defaults < saved config on --resume < command line) and its run dir."""
    given = {dest: value for dest, value in vars(args).items() if dest in TRAIN_FLAGS}
    if "hidden_units" in given:
        given["hidden_units"] = tuple(given["hidden_units"])
    probe = RunConfig()
    _apply(probe, given)
    default_name = probe.run_name()
    run_dir = Path(probe.train.run_dir or Path("runs") / default_name)

    saved_config = run_dir / "config.json"
    # A multi-worker run restarted after a failure continues from its BackupAndRestore backup.
    restarted = probe.train.strategy == "multi_worker" and has_backup(run_dir)
    if (args.resume or restarted) and saved_config.exists():
        config = RunConfig.load(saved_config)
        for dest, value in given.items():
            section, field = TRAIN_FLAGS[dest]
            saved = getattr(getattr(config, section), field)
            if field not in RESUMABLE_FIELDS and saved != value:
                flag = "--" + dest.replace("_", "-")
                raise UsageError(
                    f"{run_dir} was trained with {field}={saved!r}; --resume cannot change it to {value!r} "
                    f"(drop {flag} or use a new --run-dir)"
                )
        _apply(config, given)
    else:
        config = probe
        # Only the chief writes the run dir, so only the chief needs it empty.
        if not args.resume and is_chief() and run_dir.exists() and any(run_dir.iterdir()):
            raise UsageError(
                f"run dir {run_dir} is not empty; pass --resume to continue it, or choose another --run-dir"
            )
    config.train.run_dir = str(run_dir)
    config.train.export = config.train.export or str(Path("saved_models") / default_name)
    config.validate()
    config.refuse_unused({TRAIN_FLAGS[dest][1] for dest in given})
    return config, run_dir


def _train(args: argparse.Namespace) -> int:
    config, run_dir = resolve_train_config(args)
    _writable_dir(run_dir, "run dir")
    dataset = load_dataset(config.data.dataset, config.data.data_dir)
    chief = is_chief()
    if chief:
        config.save(run_dir / "config.json")

    from keras_cvae.training import train

    print(f"Training on {config.data.dataset} from {dataset.source} into {run_dir}", flush=True)
    result = train(config, dataset, run_dir, resume=args.resume)
    if not chief:
        print("Done (worker): the chief writes the run dir and the export", flush=True)
        return 0
    last = result.history[-1] if result.history else {}
    val_elbo = last.get("val_elbo", float("nan"))
    from keras_cvae.export import export_saved_model

    version_dir = export_saved_model(result.model, config.train.export, dataset=config.data.dataset)
    print(
        f"Done: {len(result.history)} epochs, final validation ELBO {val_elbo:.2f} nats/image; "
        f"run dir {run_dir} (history.csv, samples/, elbo_curve.png, model.keras); SavedModel {version_dir}",
        flush=True,
    )
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    parser = train_parser()
    args = parser.parse_args(argv)
    return run_command(_train, args, parser.prog)


# ------------------------------------------------------------------------------------------
# export


def _export(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.is_file():
        raise UsageError(f"{run_dir} holds no model.keras; train it first (python train.py --run-dir {run_dir})")
    config = RunConfig.load(run_dir / "config.json") if (run_dir / "config.json").is_file() else RunConfig()
    export_root = Path(args.export or config.train.export or Path("saved_models") / run_dir.name)
    if args.version is not None and (export_root / str(args.version)).exists():
        raise UsageError(f"{export_root / str(args.version)} already exists; choose another --version")
    _writable_dir(export_root, "export dir")
    from keras_cvae.export import export_saved_model
    from keras_cvae.training import load_checkpoint

    version_dir = export_saved_model(
        load_checkpoint(model_path), export_root, version=args.version, dataset=config.data.dataset
    )
    print(f"Exported {model_path} to {version_dir}")
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="keras_cvae export", description="Export a trained run as a SavedModel.")
    parser.add_argument("--run-dir", required=True, help="a run directory holding model.keras")
    parser.add_argument("--export", help="export root (default: the run's --export)")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    return run_command(_export, args, parser.prog)


# ------------------------------------------------------------------------------------------
# generate


def _generate(args: argparse.Namespace) -> int:
    from keras_cvae.inference import read_class_export_config, resolve_version_dir

    version_dir = resolve_version_dir(args.model)
    model_config = read_class_export_config(version_dir)["model"]
    num_classes, class_names = model_config["num_classes"], model_config["class_names"]
    if args.label == "all":
        labels = list(range(num_classes))
    else:
        try:
            labels = [int(args.label)]
        except ValueError:
            raise UsageError(f"--label must be an integer or 'all', got {args.label!r}") from None
        if not 0 <= labels[0] < num_classes:
            raise UsageError(f"--label {labels[0]} is out of range: labels must be in [0, {num_classes})")
    if args.num < 1:
        raise UsageError(f"--num must be at least 1, got {args.num}")
    out = Path(args.out)
    _writable_dir(out.parent if str(out.parent) else Path("."), "output dir")
    style_image = _style_source(args, version_dir) if args.style_from is not None else None

    import numpy as np

    from keras_cvae.inference import SavedModelGenerator, restyle
    from keras_cvae.plotting import sample_grid_figure, save_figure

    generator = SavedModelGenerator(version_dir)
    if style_image is not None:
        image, label = style_image
        grid = np.concatenate([image[np.newaxis, np.newaxis], restyle(generator, image[np.newaxis], [label])], axis=1)
        figure = sample_grid_figure(
            grid, [f"test #{args.style_from}"], title="same z, every label",
            column_labels=[f"input ({class_names[label]})", *class_names],
        )
    else:
        # The same noise in each column, so rows differ by label only.
        z = np.random.default_rng(args.seed).standard_normal((args.num, generator.latent_dim)).astype("float32")
        images = generator.decode(np.tile(z, (len(labels), 1)), np.repeat(labels, args.num))
        grid = images.reshape(len(labels), args.num, *images.shape[1:])
        figure = sample_grid_figure(grid, [class_names[i] for i in labels], title=f"samples, seed {args.seed}")
    save_figure(figure, out)
    print(f"Wrote {out}")
    return 0


def _style_source(args: argparse.Namespace, version_dir: Path):
    """Test image number `--style-from` of the model's dataset (uint8 → float in [0, 1]) and its label."""
    from keras_cvae.inference import read_export_config

    dataset_name = args.dataset or read_export_config(version_dir).get("dataset")
    if dataset_name is None:
        raise UsageError("--style-from needs --dataset: the export does not name its dataset")
    dataset = load_dataset(dataset_name, args.data_dir)
    if not 0 <= args.style_from < len(dataset.x_test):
        raise UsageError(f"--style-from must be in [0, {len(dataset.x_test)}), got {args.style_from}")
    return dataset.x_test[args.style_from].astype("float32") / 255.0, int(dataset.y_test[args.style_from])


def generate_main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="keras_cvae generate",
        description="Draw a grid of samples from an exported SavedModel. "
        "Example: python -m keras_cvae generate --model saved_models/fashion_mnist-mlp/1 --label all --out grid.png",
    )
    parser.add_argument("--model", required=True, help="SavedModel version dir, or an export root (newest version)")
    parser.add_argument("--label", default="all", help="a class index, or 'all' for one row per class")
    parser.add_argument("--num", type=int, default=8, help="samples per label (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--out", default="samples.png", help="output PNG (default samples.png)")
    parser.add_argument("--style-from", type=int, help="re-render test image INDEX's z under every label")
    parser.add_argument("--dataset", choices=sorted(DATASETS), help="dataset for --style-from (default: the export's)")
    parser.add_argument("--data-dir", help="data folder for --style-from")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    return run_command(_generate, args, parser.prog)


# ------------------------------------------------------------------------------------------
# evaluate


def _model_location(path_text: str) -> tuple[Path, str | None, Path]:
    """(model path, its dataset if recorded, default output dir) — validated without TensorFlow."""
    from keras_cvae.inference import read_class_export_config, resolve_version_dir

    path = Path(path_text)
    if (path / "model.keras").is_file():
        config = RunConfig.load(path / "config.json") if (path / "config.json").is_file() else None
        if config is not None and config.data.task != "classes":
            raise UsageError(
                f"{path} holds an image-completion model, and evaluate.py needs a class-conditional one; "
                f"measure completion with benchmarks/quadrants.py"
            )
        return path, config.data.dataset if config else None, path / "evaluation"
    try:
        version_dir = resolve_version_dir(path)
    except FileNotFoundError:
        raise UsageError(
            f"--model {path} is neither a SavedModel version dir (saved_model.pb) nor a run dir (model.keras)"
        ) from None
    dataset = read_class_export_config(version_dir).get("dataset")
    return version_dir, dataset, version_dir.with_name(f"{version_dir.name}-evaluation")


def _evaluate(args: argparse.Namespace) -> int:
    if args.iw_samples < 1:
        raise UsageError(f"--iw-samples must be at least 1, got {args.iw_samples}")
    if args.limit is not None and args.limit < 2:
        raise UsageError(f"--limit must be at least 2, got {args.limit}")
    models = [_model_location(args.model)]
    if args.compare:
        models.append(_model_location(args.compare))
    dataset_name = args.dataset or models[0][1]
    if dataset_name is None:
        raise UsageError("the model does not record its dataset; pass --dataset")
    output = Path(args.output) if args.output else models[0][2]
    _writable_dir(output, "output dir")
    dataset = load_dataset(dataset_name, args.data_dir)

    from keras_cvae.classifier import reference_classifier
    from keras_cvae.evaluation import evaluate, load_model_for_evaluation

    classifier = reference_classifier(dataset, dataset_name)
    results = []
    for index, (path, _, _) in enumerate(models):
        out = output if index == 0 else output / "compared"
        print(f"Evaluating {path} on {dataset_name} ({dataset.source})", flush=True)
        metrics = evaluate(load_model_for_evaluation(path), dataset, classifier, out,
                           iw_samples=args.iw_samples, seed=args.seed, limit=args.limit)
        results.append(metrics)
        print(
            f"{path}: test ELBO {metrics['test_elbo']:.2f}, IW-NLL (K={args.iw_samples}) {metrics['test_nll_iw']:.2f}, "
            f"conditional accuracy {metrics['conditional_accuracy']:.3f} "
            f"(classifier on real test images {metrics['classifier_test_accuracy']:.3f}); wrote {out}/metrics.json",
            flush=True,
        )
    if len(results) == 2:
        from keras_cvae.atomic import atomic_write_text

        table = comparison_table(results)
        print(table)
        atomic_write_text(output / "comparison.md", table + "\n")
    return 0


COMPARED = (
    ("test ELBO", "test_elbo", ".2f"), ("reconstruction", "test_reconstruction", ".2f"),
    ("KL", "test_kl", ".2f"), ("IW-NLL", "test_nll_iw", ".2f"),
    ("conditional accuracy", "conditional_accuracy", ".3f"), ("sample diversity", "sample_diversity", ".2f"),
)


def comparison_table(results: Sequence[dict]) -> str:
    """Two models' metrics side by side, as a Markdown table."""
    lines = [f"| metric | {results[0]['model']} | {results[1]['model']} |", "|---|---:|---:|"]
    for title, key, fmt in COMPARED:
        lines.append(f"| {title} | {results[0][key]:{fmt}} | {results[1][key]:{fmt}} |")
    return "\n".join(lines)


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="evaluate.py",
        description="Evaluate a trained CVAE on the test set: metrics.json, figures, report.md. "
        "Example: python evaluate.py --model saved_models/fashion_mnist-mlp/1 --dataset fashion_mnist",
    )
    parser.add_argument("--model", required=True, help="a SavedModel version dir (or export root), or a run dir")
    parser.add_argument("--dataset", choices=sorted(DATASETS), help="dataset (default: the one the model records)")
    parser.add_argument("--data-dir", help="folder of the IDX files or .npz (the only source tried)")
    parser.add_argument("--iw-samples", type=int, default=100, help="K for the importance-weighted NLL (default 100)")
    parser.add_argument("--output", help="output dir (default: <run dir>/evaluation or <version dir>-evaluation)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every noise draw (default 0)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N test images")
    parser.add_argument("--compare", help="a second model, evaluated on the same images and seeds")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    return run_command(_evaluate, args, parser.prog)


# ------------------------------------------------------------------------------------------
# python -m keras_cvae <command>

COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "train": train_main,
    "export": export_main,
    "generate": generate_main,
    "evaluate": evaluate_main,
}


def dispatch(argv: Sequence[str] | None = None) -> int:
    """`python -m keras_cvae COMMAND ...`: route to the command's own parser."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write(
            f"keras_cvae: error: expected a command, one of: {', '.join(COMMANDS)} "
            f"(python -m keras_cvae COMMAND --help)\n"
        )
        return EXIT_USAGE
    return COMMANDS[argv[0]](argv[1:])
