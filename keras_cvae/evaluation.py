"""Evaluation of a trained CVAE on the test set: numbers (metrics.json), figures, report.md.

The model is reached only through encode / decode / log_likelihood, which a SavedModel's
signatures and an in-memory CVAE both provide, so the two give the same numbers for the same
seed. All noise comes from one numpy generator seeded by `seed`.

Metrics, in nats per image:
  test_elbo      mean over test images of log p(x|z,c) − KL(q(z|x,c) ‖ p(z)), one z ~ q per image
  test_nll_iw    −mean log p(x|c), estimated as log (1/K) Σ_k p(x|z_k,c) p(z_k) / q(z_k|x,c),
                 z_k ~ q (Burda et al. 2016): a tighter bound than the ELBO, ≥ it in expectation.
                 Cost: K decoder passes per image (K=100 on 10k images = 1M decoder passes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_cvae.atomic import atomic_write_text
from keras_cvae.callbacks import read_history
from keras_cvae.classifier import ReferenceClassifier
from keras_cvae.data import DataError, LoadedDataset
from keras_cvae.inference import SavedModelGenerator, resolve_version_dir, restyle
from keras_cvae.models.base import gaussian_posterior, standard_normal_prior
from keras_cvae.models.completion import StructuredCVAE
from keras_cvae.models.cvae import CVAE
from keras_cvae.plotting import (
    elbo_curve_figure,
    latent_scatter_figure,
    sample_grid_figure,
    save_figure,
)

METRIC_KEYS = (
    "test_elbo", "test_reconstruction", "test_kl", "test_nll_iw", "iw_samples", "conditional_accuracy",
    "per_class_accuracy", "classifier_test_accuracy", "num_test_images",
)
ROWS_PER_CALL = 8192  # decoder rows per call in the IW loop: bounded memory at any K


class Backend(Protocol):
    """What evaluation needs of a model; SavedModelGenerator and KerasBackend both provide it."""

    class_names: Sequence[str]
    num_classes: int
    latent_dim: int
    image_shape: tuple[int, ...]

    def encode(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def decode(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray: ...
    def log_likelihood(self, images: np.ndarray, labels: np.ndarray, z: np.ndarray) -> np.ndarray: ...


class KerasBackend:
    """An in-memory CVAE behind the Backend interface (numpy in, numpy out, compiled calls)."""

    def __init__(self, model: CVAE) -> None:
        self.model = model
        self.class_names = list(model.class_names)
        self.num_classes = model.num_classes
        self.latent_dim = model.latent_dim
        self.image_shape = model.image_shape
        self._encode = tf.function(model.encode, reduce_retracing=True)
        self._decode = tf.function(model.decode, reduce_retracing=True)
        self._log_likelihood = tf.function(model.log_likelihood, reduce_retracing=True)

    def encode(self, images, labels):
        z_mean, z_log_var = self._encode(tf.constant(images, tf.float32), tf.constant(labels, tf.int32))
        return z_mean.numpy(), z_log_var.numpy()

    def decode(self, z, labels):
        return self._decode(tf.constant(z, tf.float32), tf.constant(labels, tf.int32)).numpy()

    def log_likelihood(self, images, labels, z):
        return self._log_likelihood(
            tf.constant(images, tf.float32), tf.constant(labels, tf.int32), tf.constant(z, tf.float32)
        ).numpy()


@dataclass
class LoadedModel:
    backend: Backend
    kind: str  # "savedmodel" or "run"
    path: Path
    history_path: Path | None


def load_model_for_evaluation(path: str | Path) -> LoadedModel:
    """A SavedModel version dir (or export root) → its signatures; a run dir → its model.keras."""
    path = Path(path)
    if (path / "model.keras").is_file():
        model = keras.saving.load_model(path / "model.keras", safe_mode=True)
        if isinstance(model, StructuredCVAE):
            raise DataError(
                f"{path} holds an image-completion model ({model.objective}, {model.quadrants} quadrant(s)); "
                f"evaluate.py measures class-conditional models, benchmarks/quadrants.py measures completion"
            )
        return LoadedModel(KerasBackend(model), "run", path, path / "history.csv")
    version_dir = resolve_version_dir(path)
    return LoadedModel(SavedModelGenerator(version_dir), "savedmodel", version_dir, None)


# ------------------------------------------------------------------------------------------
# Estimators


def log_mean_exp(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """log(mean(exp(values))) along `axis`, stable for very negative values (subtracts the max)."""
    values = np.asarray(values, np.float64)
    peak = np.max(values, axis=axis, keepdims=True)
    return np.squeeze(peak, axis) + np.log(np.mean(np.exp(values - peak), axis=axis))


def _kl_to_prior(z_mean: np.ndarray, z_log_var: np.ndarray) -> np.ndarray:
    posterior = gaussian_posterior(tf.constant(z_mean), tf.constant(z_log_var))
    prior = standard_normal_prior(z_mean.shape[0], z_mean.shape[1])
    return tfp.distributions.kl_divergence(posterior, prior).numpy()


def _batches(num: int, size: int, title: str) -> list[slice]:
    print(title, flush=True)
    return [slice(start, min(start + size, num)) for start in range(0, num, size)]


def elbo_terms(
    backend: Backend, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, batch_size: int = 1000
) -> dict[str, np.ndarray]:
    """Per-image reconstruction (−log p(x|z,c), one z ~ q), KL (closed form) and ELBO."""
    reconstruction, kl = [], []
    progress = keras.utils.Progbar(len(images), unit_name="image")
    for part in _batches(len(images), batch_size, "ELBO"):
        z_mean, z_log_var = backend.encode(images[part], labels[part])
        eps = rng.standard_normal(z_mean.shape).astype(np.float32)
        z = z_mean + np.exp(0.5 * z_log_var) * eps
        reconstruction.append(-backend.log_likelihood(images[part], labels[part], z))
        kl.append(_kl_to_prior(z_mean, z_log_var))
        progress.add(part.stop - part.start)
    reconstruction, kl = np.concatenate(reconstruction), np.concatenate(kl)
    return {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)}


def iw_log_likelihood(
    backend: Backend, images: np.ndarray, labels: np.ndarray, num_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Per-image importance-weighted estimate of log p(x | c) with `num_samples` draws from q."""
    per_call = max(1, ROWS_PER_CALL // num_samples)
    estimates = []
    progress = keras.utils.Progbar(len(images), unit_name="image")
    for part in _batches(len(images), per_call, f"importance-weighted log-likelihood, K={num_samples}"):
        x, y = images[part], labels[part]
        n = len(x)
        z_mean, z_log_var = backend.encode(x, y)
        posterior = gaussian_posterior(tf.constant(z_mean), tf.constant(z_log_var))
        eps = rng.standard_normal((num_samples, n, backend.latent_dim)).astype(np.float32)
        z = z_mean[None] + np.exp(0.5 * z_log_var)[None] * eps  # [K, n, L]
        log_q = posterior.log_prob(z).numpy()  # broadcasts over K: [K, n]
        log_prior = standard_normal_prior(n, backend.latent_dim).log_prob(z).numpy()
        log_px = backend.log_likelihood(
            np.tile(x, (num_samples, 1, 1, 1)), np.tile(y, num_samples), z.reshape(-1, backend.latent_dim)
        ).reshape(num_samples, n)
        estimates.append(log_mean_exp(log_px + log_prior - log_q, axis=0))
        progress.add(n)
    return np.concatenate(estimates)


def conditional_nll(model, images: np.ndarray, num_samples: int) -> np.ndarray:
    """Per-image −log p(y | x) of a StructuredCVAE, nats summed over the missing pixels.

    Importance sampling with the recognition network as proposal:
    −log (1/K) Σ_k p(y|x,z_k) p(z_k|x,ŷ) / q(z_k|x,y,ŷ), z_k ~ q, through the stable
    log-mean-exp. A baseline model has no z: its figure is its own Bernoulli NLL.
    """
    per_call = max(1, ROWS_PER_CALL // num_samples)
    estimates = []
    progress = keras.utils.Progbar(len(images), unit_name="image")
    for part in _batches(len(images), per_call, f"conditional log-likelihood, K={num_samples}"):
        log_weights = model.log_weights(images[part], num_samples).numpy()
        estimates.append(-log_mean_exp(log_weights, axis=0))
        progress.add(part.stop - part.start)
    return np.concatenate(estimates)


def generate_per_class(backend: Backend, num_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`num_per_class` samples of every class, [classes, num, H, W, C], z ~ N(0, I) from `rng`."""
    labels = np.repeat(np.arange(backend.num_classes, dtype=np.int32), num_per_class)
    z = rng.standard_normal((len(labels), backend.latent_dim)).astype(np.float32)
    images = backend.decode(z, labels)
    return images.reshape(backend.num_classes, num_per_class, *images.shape[1:])


def conditional_accuracy(samples: np.ndarray, classifier: ReferenceClassifier) -> tuple[float, list[float]]:
    """How often the reference classifier sees the asked-for class in samples [classes, num, ...]."""
    num_classes, num = samples.shape[:2]
    predicted = classifier.predict(samples.reshape(num_classes * num, *samples.shape[2:]))
    hits = (predicted.reshape(num_classes, num) == np.arange(num_classes)[:, None])
    return float(hits.mean()), [float(v) for v in hits.mean(axis=1)]


def mean_pairwise_distance(images: np.ndarray) -> float:
    """Mean Euclidean distance between all pairs of images (pixels in [0, 1])."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    squared = np.sum(flat**2, axis=1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2.0 * flat @ flat.T, 0.0)
    n = len(flat)
    return float(np.sqrt(d2)[np.triu_indices(n, k=1)].mean())


def pca_2d(points: np.ndarray) -> np.ndarray:
    """Project onto the two leading principal components (the points themselves when 2-D)."""
    if points.shape[1] <= 2:
        return points
    centred = points - points.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


# ------------------------------------------------------------------------------------------
# Figures


def _figures(
    backend: Backend, x_test: np.ndarray, y_test: np.ndarray, samples: np.ndarray,
    rng: np.random.Generator, output: Path, history_path: Path | None,
) -> dict[str, str]:
    names = backend.class_names
    figures = {}

    def save(name: str, figure) -> None:
        save_figure(figure, output / f"{name}.png")
        figures[name] = f"{name}.png"

    save("samples", sample_grid_figure(samples[:, :10], names, title="samples (rows: label asked for)"))

    # One test image of each class: real above, reconstruction (decoded posterior mean) below.
    firsts = np.array([np.flatnonzero(y_test == c)[0] for c in range(backend.num_classes) if np.any(y_test == c)])
    z_mean, _ = backend.encode(x_test[firsts], y_test[firsts])
    recon = backend.decode(z_mean, y_test[firsts])
    save("reconstructions", sample_grid_figure(np.stack([x_test[firsts], recon]), ["real", "reconstructed"],
                                               title="reconstructions"))

    subset = slice(0, min(len(x_test), 5000))
    z_mean, _ = backend.encode(x_test[subset], y_test[subset])
    axes_label = "z" if backend.latent_dim <= 2 else "principal component"
    save("latent_space", latent_scatter_figure(pca_2d(z_mean), y_test[subset], names, axes_label))

    if backend.latent_dim == 2:
        # Grid over the prior's quantiles (−1.5σ … 1.5σ), for the first four classes.
        steps = np.linspace(-1.5, 1.5, 10, dtype=np.float32)
        grid = np.stack(np.meshgrid(steps, steps[::-1]), axis=-1).reshape(-1, 2)
        panels = [backend.decode(grid, np.full(len(grid), c, np.int32)) for c in range(min(4, backend.num_classes))]
        rows = [np.concatenate([p.reshape(10, 10, *p.shape[1:])[r] for p in panels]) for r in range(10)]
        save("manifold", sample_grid_figure(np.stack(rows), [""] * 10,
                                            title=f"2-D manifold for {', '.join(names[:4])}"))

    # Interpolation between two fixed z, decoded under every label.
    z_pair = rng.standard_normal((2, backend.latent_dim)).astype(np.float32)
    weights = np.linspace(0.0, 1.0, 10, dtype=np.float32)[:, None]
    path = (1 - weights) * z_pair[0] + weights * z_pair[1]
    labels = np.repeat(np.arange(backend.num_classes, dtype=np.int32), len(path))
    images = backend.decode(np.tile(path, (backend.num_classes, 1)), labels)
    save("interpolation", sample_grid_figure(images.reshape(backend.num_classes, len(path), *images.shape[1:]),
                                             names, title="interpolation between two z, per label"))

    # Style transfer: each class's first test image, its z decoded under every label.
    rows = np.concatenate([x_test[firsts][:, None], restyle(backend, x_test[firsts], y_test[firsts])], axis=1)
    save("style_transfer", sample_grid_figure(rows, [names[y_test[i]] for i in firsts],
                                              title="same z, every label", column_labels=["input", *names]))

    if history_path is not None and history_path.is_file():
        save("elbo_curve", elbo_curve_figure(read_history(history_path)))
    return figures


# ------------------------------------------------------------------------------------------
# The whole evaluation


def evaluate(
    loaded: LoadedModel, dataset: LoadedDataset, classifier: ReferenceClassifier, output: Path,
    iw_samples: int = 100, seed: int = 0, limit: int | None = None, samples_per_class: int = 100,
) -> dict:
    """Compute every metric on the test set, write metrics.json, the figures and report.md."""
    backend = loaded.backend
    if tuple(dataset.x_test.shape[1:]) != tuple(backend.image_shape):
        raise DataError(
            f"the model takes {tuple(backend.image_shape)} images but {dataset.source} has "
            f"{tuple(dataset.x_test.shape[1:])}; evaluate on the dataset the model was trained on"
        )
    x_test = dataset.x_test[:limit].astype(np.float32) / 255.0
    y_test = dataset.y_test[:limit]
    rng = np.random.default_rng(seed)

    terms = elbo_terms(backend, x_test, y_test, rng)
    log_px = iw_log_likelihood(backend, x_test, y_test, iw_samples, rng)
    samples = generate_per_class(backend, samples_per_class, rng)
    accuracy, per_class = conditional_accuracy(samples, classifier)
    sample_div = [mean_pairwise_distance(samples[c]) for c in range(backend.num_classes)]
    real_div = [
        mean_pairwise_distance(x_test[y_test == c][:samples_per_class]) if np.sum(y_test == c) > 1 else float("nan")
        for c in range(backend.num_classes)
    ]
    names = list(backend.class_names)
    stderr = lambda values: float(np.std(values, ddof=1) / np.sqrt(len(values)))  # noqa: E731
    metrics = {
        "test_elbo": float(terms["elbo"].mean()),
        "test_reconstruction": float(terms["reconstruction"].mean()),
        "test_kl": float(terms["kl"].mean()),
        "test_nll_iw": float(-log_px.mean()),
        "iw_samples": int(iw_samples),
        "conditional_accuracy": accuracy,
        "per_class_accuracy": dict(zip(names, per_class)),
        "classifier_test_accuracy": float(classifier.test_accuracy),
        "classifier_blurred_test_accuracy": float(classifier.blurred_test_accuracy),
        "num_test_images": int(len(x_test)),
        "test_elbo_stderr": stderr(terms["elbo"]),
        "test_nll_iw_stderr": stderr(log_px),
        "sample_diversity": float(np.mean(sample_div)),
        "real_diversity": float(np.nanmean(real_div)),
        "per_class_sample_diversity": dict(zip(names, sample_div)),
        "per_class_real_diversity": dict(zip(names, real_div)),
        "seed": int(seed),
        "model": str(loaded.path),
        "model_kind": loaded.kind,
        "dataset": dataset.source,
    }
    output.mkdir(parents=True, exist_ok=True)
    figures = _figures(backend, x_test, y_test, samples, rng, output, loaded.history_path)
    atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(output / "report.md", render_report(metrics, figures))
    return metrics


def render_report(metrics: dict, figures: dict[str, str]) -> str:
    """report.md: the numbers in tables, then every figure embedded."""
    m = metrics
    lines = [
        f"# Evaluation of `{m['model']}`",
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
        lines.append(
            f"| {name} | {accuracy:.3f} | {m['per_class_sample_diversity'][name]:.2f} "
            f"| {m['per_class_real_diversity'][name]:.2f} |"
        )
    lines.append("")
    for name, file in figures.items():
        lines += [f"## {name.replace('_', ' ')}", "", f"![{name}]({file})", ""]
    return "\n".join(lines)
