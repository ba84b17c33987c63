"""Task "classes": p(x | c) with a one-hot class condition and the prior N(0, I) (a plain VAE with
`--no-conditional`). Its model is `CVAE`; its sample grids have one row per class and one fixed
noise per column; its export answers generate / encode / decode / reconstruct / log_likelihood;
its evaluation reports the ELBO, the importance-weighted NLL and the reference classifier's
verdict on samples."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_cvae.config import RunConfig
from keras_cvae.data import LoadedDataset
from keras_cvae.errors import UsageError
from keras_cvae.evaluation.classifier import reference_classifier
from keras_cvae.evaluation.estimators import (
    ClassModel,
    KerasBackend,
    conditional_accuracy,
    elbo_terms,
    generate_per_class,
    iw_log_likelihood,
    mean_pairwise_distance,
    pca_2d,
)
from keras_cvae.evaluation.report import Figures, standard_error, write_evaluation
from keras_cvae.models.cvae import CVAE
from keras_cvae.plotting import (
    elbo_curve_figure,
    latent_scatter_figure,
    sample_grid_figure,
    save_figure,
    tile,
)
from keras_cvae.run_dir import RunDir
from keras_cvae.tasks.base import (
    Endpoint,
    EvaluationOptions,
    Task,
    check_image_shape,
    checked,
    checked_labels,
)

CLASS_NAMES_ASSET = "class_names.txt"


class SampleGrid(keras.callbacks.Callback):
    """Writes `samples/epoch_NNN.png` each epoch: one row per class, one fixed noise per column.

    The noise is drawn once from `seed`, so the same column shows the same z all run long and
    the pictures show how the decoder changes, not how the noise does.
    """

    def __init__(self, run_dir: RunDir, class_names: list[str], latent_dim: int, num_columns: int = 8,
                 seed: int = 0, tensorboard_dir: Path | None = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.class_names = list(class_names)
        rng = np.random.default_rng(seed)
        self.noise = rng.standard_normal((len(class_names), num_columns, latent_dim)).astype("float32")
        self.tensorboard_dir = tensorboard_dir
        self._writer = None

    def grid(self) -> np.ndarray:
        """Decoded samples [classes, columns, H, W, C]. A conditional model reuses each column's
        noise across rows; a plain VAE gets fresh noise for every cell (its rows carry no class)."""
        rows, cols, latent_dim = self.noise.shape
        noise = self.noise if not self.model.conditional else np.broadcast_to(self.noise[:1], self.noise.shape)
        labels = np.repeat(np.arange(rows, dtype="int32"), cols)
        images = np.asarray(self.model.generate(labels, z=noise.reshape(rows * cols, latent_dim)))
        return images.reshape(rows, cols, *images.shape[1:])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        images = self.grid()
        labels = self.class_names if self.model.conditional else ["sample"] * len(self.class_names)
        save_figure(sample_grid_figure(images, labels, title=f"epoch {epoch + 1}"), self.run_dir.samples_path(epoch + 1))
        if self.tensorboard_dir is not None:
            self._log_to_tensorboard(images, epoch + 1)

    def _log_to_tensorboard(self, images: np.ndarray, step: int) -> None:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(Path(self.tensorboard_dir) / "samples"))
        mosaic = tile(images)
        mosaic = mosaic[np.newaxis, ..., np.newaxis] if mosaic.ndim == 2 else mosaic[np.newaxis]
        with self._writer.as_default():
            tf.summary.image("samples", mosaic, step=step)
        self._writer.flush()


def restyle(model: ClassModel, images: np.ndarray, labels) -> np.ndarray:
    """Each image's posterior mean z decoded under every label, [N, num_classes, H, W, C]: the
    "same z, another class" picture."""
    z_mean, _ = model.encode(images, labels)
    every = np.arange(model.num_classes, dtype=np.int32)
    decoded = model.decode(np.repeat(z_mean, len(every), axis=0), np.tile(every, len(z_mean)))
    return decoded.reshape(len(z_mean), len(every), *decoded.shape[1:])


def as_class_model(model: Any) -> ClassModel:
    """What `run_dir`'s loading gave (an in-memory CVAE or a SavedModelClient) as a ClassModel."""
    return KerasBackend(model) if isinstance(model, CVAE) else model


class ClassesTask(Task):
    name = "classes"
    model_class = CVAE

    def build_model(self, config: RunConfig, dataset: LoadedDataset) -> CVAE:
        m = config.model
        return CVAE(
            image_shape=dataset.x_train.shape[1:],
            num_classes=len(dataset.class_names),
            latent_dim=m.latent_dim,
            arch=m.arch,
            hidden_units=m.resolved_hidden_units(),
            likelihood=m.likelihood,
            beta=m.beta,
            conditional=m.conditional,
            class_names=dataset.class_names,
            seed=config.train.seed,
        )

    def sample_callback(self, model, config, dataset, run_dir, validation_images):
        tensorboard_dir = run_dir.tensorboard_dir if config.train.tensorboard else None
        return SampleGrid(run_dir, dataset.class_names, model.latent_dim, seed=config.train.seed,
                          tensorboard_dir=tensorboard_dir)

    # -- serving ------------------------------------------------------------------------------

    def endpoints(self, model: CVAE) -> dict[str, Endpoint]:
        image_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="images")
        labels_spec = tf.TensorSpec([None], tf.int32, name="labels")
        z_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")
        k, image_shape, z_shape = model.num_classes, model.image_shape, (model.latent_dim,)

        def serving_default(labels):
            labels = checked_labels(labels, k)
            z = tf.random.normal([tf.shape(labels)[0], model.latent_dim])
            return {"images": model.decode(z, labels)}

        def decode(z, labels):
            labels = checked_labels(labels, k)
            return {"images": model.decode(checked(z, "z", z_shape, labels), labels)}

        def encode(images, labels):
            labels = checked_labels(labels, k)
            z_mean, z_log_var = model.encode(checked(images, "images", image_shape, labels), labels)
            return {"z_mean": z_mean, "z_log_var": z_log_var}

        def reconstruct(images, labels):
            labels = checked_labels(labels, k)
            return {"images": model((checked(images, "images", image_shape, labels), labels))}

        def log_likelihood(images, labels, z):
            labels = checked_labels(labels, k)
            images = checked(images, "images", image_shape, labels)
            return {"log_likelihood": model.log_likelihood(images, labels, checked(z, "z", z_shape, labels))}

        return {
            "serving_default": Endpoint(serving_default, [labels_spec]),
            "decode": Endpoint(decode, [z_spec, labels_spec]),
            "encode": Endpoint(encode, [image_spec, labels_spec]),
            "reconstruct": Endpoint(reconstruct, [image_spec, labels_spec]),
            "log_likelihood": Endpoint(log_likelihood, [image_spec, labels_spec, z_spec]),
        }

    def assets(self, model: CVAE) -> dict[str, str]:
        return {CLASS_NAMES_ASSET: "\n".join(model.class_names) + "\n"}

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, model: Any, dataset: LoadedDataset, output: Path, options: EvaluationOptions,
                 history: list[dict[str, float]] | None = None, samples_per_class: int = 100) -> dict[str, Any]:
        backend = as_class_model(model)
        check_image_shape(backend.image_shape, dataset)
        classifier = reference_classifier(dataset, options.dataset_name)
        x_test = dataset.x_test[:options.limit].astype(np.float32) / 255.0
        y_test = dataset.y_test[:options.limit]
        rng = np.random.default_rng(options.seed)

        terms = elbo_terms(backend, x_test, y_test, rng)
        log_px = iw_log_likelihood(backend, x_test, y_test, options.iw_samples, rng)
        samples = generate_per_class(backend, samples_per_class, rng)
        accuracy, per_class = conditional_accuracy(samples, classifier)
        sample_div = [mean_pairwise_distance(samples[c]) for c in range(backend.num_classes)]
        real_div = [
            mean_pairwise_distance(x_test[y_test == c][:samples_per_class]) if np.sum(y_test == c) > 1 else float("nan")
            for c in range(backend.num_classes)
        ]
        names = list(backend.class_names)
        metrics = {
            "task": self.name,
            "likelihood": model.likelihood if isinstance(model, CVAE) else model.config["likelihood"],
            "binarized": False,
            "test_elbo": float(terms["elbo"].mean()),
            "test_reconstruction": float(terms["reconstruction"].mean()),
            "test_kl": float(terms["kl"].mean()),
            "test_nll_iw": float(-log_px.mean()),
            "iw_samples": int(options.iw_samples),
            "num_test_images": int(len(x_test)),
            "conditional_accuracy": accuracy,
            "per_class_accuracy": dict(zip(names, per_class)),
            "classifier_test_accuracy": float(classifier.test_accuracy),
            "classifier_blurred_test_accuracy": float(classifier.blurred_test_accuracy),
            "test_elbo_stderr": standard_error(terms["elbo"]),
            "test_nll_iw_stderr": standard_error(log_px),
            "sample_diversity": float(np.mean(sample_div)),
            "real_diversity": float(np.nanmean(real_div)),
            "per_class_sample_diversity": dict(zip(names, sample_div)),
            "per_class_real_diversity": dict(zip(names, real_div)),
            "seed": int(options.seed),
            "dataset": dataset.source,
        }
        output.mkdir(parents=True, exist_ok=True)
        figures = Figures(output)
        self._figures(figures, backend, x_test, y_test, samples, rng, history)
        write_evaluation(output, metrics, self._report(metrics, options), figures)
        return metrics

    def summary(self, metrics: dict[str, Any]) -> str:
        return (f"test ELBO {metrics['test_elbo']:.2f}, IW-NLL (K={metrics['iw_samples']}) {metrics['test_nll_iw']:.2f}, "
                f"conditional accuracy {metrics['conditional_accuracy']:.3f} "
                f"(classifier on real test images {metrics['classifier_test_accuracy']:.3f})")

    @staticmethod
    def _figures(figures: Figures, backend: ClassModel, x_test, y_test, samples, rng, history) -> None:
        names = backend.class_names
        figures.save("samples", sample_grid_figure(samples[:, :10], names, title="samples (rows: label asked for)"))

        # One test image of each class: real above, reconstruction (decoded posterior mean) below.
        firsts = np.array([np.flatnonzero(y_test == c)[0] for c in range(backend.num_classes) if np.any(y_test == c)])
        z_mean, _ = backend.encode(x_test[firsts], y_test[firsts])
        recon = backend.decode(z_mean, y_test[firsts])
        figures.save("reconstructions", sample_grid_figure(np.stack([x_test[firsts], recon]), ["real", "reconstructed"],
                                                           title="reconstructions"))

        subset = slice(0, min(len(x_test), 5000))
        z_mean, _ = backend.encode(x_test[subset], y_test[subset])
        axes_label = "z" if backend.latent_dim <= 2 else "principal component"
        figures.save("latent_space", latent_scatter_figure(pca_2d(z_mean), y_test[subset], names, axes_label))

        if backend.latent_dim == 2:
            # Grid over the prior's quantiles (−1.5σ … 1.5σ), for the first four classes.
            steps = np.linspace(-1.5, 1.5, 10, dtype=np.float32)
            grid = np.stack(np.meshgrid(steps, steps[::-1]), axis=-1).reshape(-1, 2)
            panels = [backend.decode(grid, np.full(len(grid), c, np.int32)) for c in range(min(4, backend.num_classes))]
            rows = [np.concatenate([p.reshape(10, 10, *p.shape[1:])[r] for p in panels]) for r in range(10)]
            figures.save("manifold", sample_grid_figure(np.stack(rows), [""] * 10,
                                                        title=f"2-D manifold for {', '.join(names[:4])}"))

        # Interpolation between two fixed z, decoded under every label.
        z_pair = rng.standard_normal((2, backend.latent_dim)).astype(np.float32)
        weights = np.linspace(0.0, 1.0, 10, dtype=np.float32)[:, None]
        path = (1 - weights) * z_pair[0] + weights * z_pair[1]
        labels = np.repeat(np.arange(backend.num_classes, dtype=np.int32), len(path))
        images = backend.decode(np.tile(path, (backend.num_classes, 1)), labels)
        figures.save("interpolation", sample_grid_figure(
            images.reshape(backend.num_classes, len(path), *images.shape[1:]), names,
            title="interpolation between two z, per label"))

        # Style transfer: each class's first test image, its z decoded under every label.
        rows = np.concatenate([x_test[firsts][:, None], restyle(backend, x_test[firsts], y_test[firsts])], axis=1)
        figures.save("style_transfer", sample_grid_figure(rows, [names[y_test[i]] for i in firsts],
                                                          title="same z, every label", column_labels=["input", *names]))
        if history:
            figures.save("elbo_curve", elbo_curve_figure(history))

    @staticmethod
    def _report(m: dict[str, Any], options: EvaluationOptions) -> list[str]:
        lines = [
            f"# Evaluation of `{options.model_name}`",
            "",
            f"Test set: {m['num_test_images']} images from {m['dataset']}; seed {m['seed']}. Nats per image.",
            "",
            "| metric | value |",
            "|---|---:|",
            f"| test ELBO | {m['test_elbo']:.2f} ± {m['test_elbo_stderr']:.2f} |",
            f"| reconstruction (−log p(x\\|z,c)) | {m['test_reconstruction']:.2f} |",
            f"| KL(q ‖ p) | {m['test_kl']:.2f} |",
            f"| importance-weighted NLL, K={m['iw_samples']} | {m['test_nll_iw']:.2f} ± {m['test_nll_iw_stderr']:.2f} |",
            f"| conditional accuracy of samples | {m['conditional_accuracy']:.3f} |",
            f"| reference classifier on real test images | {m['classifier_test_accuracy']:.3f} |",
            f"| reference classifier on blurred real test images (σ = 1 px) | {m['classifier_blurred_test_accuracy']:.3f} |",
            f"| sample diversity (mean pairwise L2, per class) | {m['sample_diversity']:.2f} |",
            f"| real-image diversity (same measure) | {m['real_diversity']:.2f} |",
            "",
            "| class | conditional accuracy | sample diversity | real diversity |",
            "|---|---:|---:|---:|",
        ]
        for name, accuracy in m["per_class_accuracy"].items():
            lines.append(f"| {name} | {accuracy:.3f} | {m['per_class_sample_diversity'][name]:.2f} "
                         f"| {m['per_class_real_diversity'][name]:.2f} |")
        return lines

    # -- generate -----------------------------------------------------------------------------

    def needs_test_images(self, args: argparse.Namespace) -> bool:
        return args.style_from is not None

    def generate(self, model: Any, args: argparse.Namespace, dataset: LoadedDataset | None):
        if args.from_test is not None:
            raise UsageError("--from-test is for image-completion models; use --label or --style-from")
        backend = as_class_model(model)
        names = list(backend.class_names)
        if args.style_from is not None:
            if not 0 <= args.style_from < len(dataset.x_test):
                raise UsageError(f"--style-from must be in [0, {len(dataset.x_test)}), got {args.style_from}")
            image = dataset.x_test[args.style_from].astype("float32") / 255.0
            label = int(dataset.y_test[args.style_from])
            grid = np.concatenate([image[np.newaxis, np.newaxis], restyle(backend, image[np.newaxis], [label])], axis=1)
            return sample_grid_figure(grid, [f"test #{args.style_from}"], title="same z, every label",
                                      column_labels=[f"input ({names[label]})", *names])
        labels = self._labels(args.label, backend.num_classes)
        # The same noise in each column, so rows differ by label only.
        z = np.random.default_rng(args.seed).standard_normal((args.num, backend.latent_dim)).astype("float32")
        images = backend.decode(np.tile(z, (len(labels), 1)), np.repeat(labels, args.num).astype(np.int32))
        grid = images.reshape(len(labels), args.num, *images.shape[1:])
        return sample_grid_figure(grid, [names[i] for i in labels], title=f"samples, seed {args.seed}")

    @staticmethod
    def _labels(text: str, num_classes: int) -> list[int]:
        if text == "all":
            return list(range(num_classes))
        try:
            label = int(text)
        except ValueError:
            raise UsageError(f"--label must be an integer or 'all', got {text!r}") from None
        if not 0 <= label < num_classes:
            raise UsageError(f"--label {label} is out of range: labels must be in [0, {num_classes})")
        return [label]
