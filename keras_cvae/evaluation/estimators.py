"""Estimators for evaluation on the test set, shared by the tasks that use them.

A class-conditional model is reached only through encode / decode / log_likelihood, which a
SavedModel's signatures and an in-memory CVAE (`KerasBackend`) both provide, so the two give the
same numbers for the same seed. All noise comes from one numpy generator.

  ELBO      mean over test images of log p(x|z,c) − KL(q(z|x,c) ‖ p(z)), one z ~ q per image
  IW NLL    −mean log p(x|c), estimated as log (1/K) Σ_k p(x|z_k,c) p(z_k) / q(z_k|x,c),
            z_k ~ q (Burda et al. 2016): a tighter bound than the ELBO, ≥ it in expectation.
            Cost: K decoder passes per image, in one graph call per few images.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_cvae.conditions import Condition, first_categorical
from keras_cvae.models.cvae import CVAE
from keras_cvae.models.semi_supervised import marginal_bound

ROWS_PER_CALL = 32768  # decoder rows per call in the IW loops: at K = 5,000 six images a call, about 100 MB a tensor
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: a unit is active when Cov_x(E_q[z_u]) exceeds this


class ClassModel(Protocol):
    """What evaluation needs of a conditional model; SavedModelClient and KerasBackend both
    provide it. `labels` are condition rows [N, M] (see keras_cvae.conditions)."""

    conditions: tuple[Condition, ...]
    latent_dim: int
    image_shape: tuple[int, ...]

    def encode(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def decode(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray: ...
    def log_likelihood(self, images: np.ndarray, labels: np.ndarray, z: np.ndarray) -> np.ndarray: ...
    def log_importance_weights(self, images: np.ndarray, labels: np.ndarray, eps: np.ndarray) -> np.ndarray: ...
    def elbo_terms(self, images: np.ndarray, labels: np.ndarray, eps: np.ndarray) -> dict[str, np.ndarray]: ...
    def kl_per_dimension(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray | None: ...
    def sample_latent(self, labels: np.ndarray, seed: int) -> np.ndarray: ...


class LabelModel(ClassModel, Protocol):
    """A semi-supervised model: a ClassModel that also infers the class, q(y | x)."""

    def classify(self, images: np.ndarray) -> np.ndarray: ...


class KerasBackend:
    """An in-memory CVAE behind the ClassModel interface (numpy in, numpy out, compiled calls)."""

    def __init__(self, model: CVAE) -> None:
        self.model = model
        self.conditions = model.conditions
        self.latent_dim = model.latent_dim
        self.image_shape = model.image_shape
        self._encode = tf.function(model.encode, reduce_retracing=True)
        self._decode = tf.function(model.decode, reduce_retracing=True)
        self._log_likelihood = tf.function(model.log_likelihood, reduce_retracing=True)
        # The matrix products stay with oneDNN (XLA's are slower on a CPU); the likelihood's sum
        # over K·N decoder outputs is fused by XLA where the likelihood has that form.
        self._log_weights = tf.function(functools.partial(model.log_importance_weights, fused=True),
                                        reduce_retracing=True)
        self._elbo_terms = tf.function(model.elbo_terms, reduce_retracing=True)
        self._kl_per_dimension = tf.function(model.kl_per_dimension, reduce_retracing=True)
        self._sample_latent = tf.function(model.sample_latent, reduce_retracing=True)
        if hasattr(model, "classify"):
            self._classify = tf.function(model.classify, reduce_retracing=True)

    @staticmethod
    def _rows(labels) -> tf.Tensor:
        rows = np.asarray(labels, np.float32)
        return tf.constant(rows.reshape(len(rows), -1))

    def encode(self, images, labels):
        z_mean, z_log_var = self._encode(tf.constant(images, tf.float32), self._rows(labels))
        return z_mean.numpy(), z_log_var.numpy()

    def decode(self, z, labels):
        return self._decode(tf.constant(z, tf.float32), self._rows(labels)).numpy()

    def log_likelihood(self, images, labels, z):
        return self._log_likelihood(tf.constant(images, tf.float32), self._rows(labels), tf.constant(z, tf.float32)).numpy()

    def log_importance_weights(self, images, labels, eps):
        return self._log_weights(tf.constant(images, tf.float32), self._rows(labels), tf.constant(eps, tf.float32)).numpy()

    def elbo_terms(self, images, labels, eps):
        terms = self._elbo_terms(tf.constant(images, tf.float32), self._rows(labels), tf.constant(eps, tf.float32))
        return {name: value.numpy() for name, value in terms.items()}

    def kl_per_dimension(self, images, labels):
        if not self.model.prior.factorises:
            return None
        return self._kl_per_dimension(tf.constant(images, tf.float32), self._rows(labels)).numpy()

    def sample_latent(self, labels, seed):
        return self._sample_latent(self._rows(labels), tf.constant([0, seed], tf.int32)).numpy()

    def classify(self, images):
        return self._classify(tf.constant(images, tf.float32)).numpy()


# ------------------------------------------------------------------------------------------
# Estimators


def log_mean_exp(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """log(mean(exp(values))) along `axis`, stable for very negative values (subtracts the max)."""
    values = np.asarray(values, np.float64)
    peak = np.max(values, axis=axis, keepdims=True)
    return np.squeeze(peak, axis) + np.log(np.mean(np.exp(values - peak), axis=axis))


def _batches(num: int, size: int, title: str) -> list[slice]:
    print(title, flush=True)
    return [slice(start, min(start + size, num)) for start in range(0, num, size)]


def elbo_terms(
    backend: ClassModel, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, batch_size: int = 1000
) -> dict[str, np.ndarray]:
    """Per-image reconstruction (−log p(x|z,c), one z ~ q), KL (the model's: closed form where
    its prior has one) and ELBO."""
    reconstruction, kl = [], []
    progress = keras.utils.Progbar(len(images), unit_name="image")
    for part in _batches(len(images), batch_size, "ELBO"):
        eps = rng.standard_normal((part.stop - part.start, backend.latent_dim)).astype(np.float32)
        terms = backend.elbo_terms(images[part], labels[part], eps)
        reconstruction.append(terms["reconstruction"])
        kl.append(terms["kl"])
        progress.add(part.stop - part.start)
    reconstruction, kl = np.concatenate(reconstruction), np.concatenate(kl)
    return {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)}


def iw_log_likelihood(
    backend: ClassModel, images: np.ndarray, labels: np.ndarray, num_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Per-image importance-weighted estimate of log p(x | c) with `num_samples` draws from q: the
    log-mean-exp of the backend's compiled log-weights (models.base.log_importance_weights) for
    noise drawn here, image after image: an image's draws do not depend on how many images
    a call takes."""
    per_call = max(1, ROWS_PER_CALL // num_samples)
    estimates = []
    progress = keras.utils.Progbar(len(images), unit_name="image")
    for part in _batches(len(images), per_call, f"importance-weighted log-likelihood, K={num_samples}"):
        x, y = images[part], labels[part]
        eps = rng.standard_normal((len(x), num_samples, backend.latent_dim), dtype=np.float32).transpose(1, 0, 2)
        estimates.append(log_mean_exp(backend.log_importance_weights(x, y, eps), axis=0))
        progress.add(len(x))
    return np.concatenate(estimates)


def classify(backend: LabelModel, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """q(y | x) of every image, [N, K], in batches."""
    return np.concatenate([backend.classify(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def _every_class(num_images: int, num_classes: int) -> list[np.ndarray]:
    """For each class, rows [N, 1] giving every image that class."""
    return [np.full((num_images, 1), c, np.float32) for c in range(num_classes)]


def marginal_elbo_terms(backend: LabelModel, images: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image bound on log p(x) of a semi-supervised model, the class summed out under q(y | x):
    U(x) = Σ_y q(y|x) L(x, y) + H(q(y|x)) (models.semi_supervised.marginal_bound), each L(x, y)
    with one z. `reconstruction` is Σ_y q(y|x)·(−log p(x|y,z)); `kl` the rest of −U (the KL of z
    and of y)."""
    probabilities = classify(backend, images)
    num_classes = probabilities.shape[1]
    per_class = [elbo_terms(backend, images, rows, rng) for rows in _every_class(len(images), num_classes)]
    log_prior = -np.log(num_classes)  # p(y) uniform
    elbo = np.stack([terms["elbo"] for terms in per_class], axis=1) + log_prior
    label_posterior = tfp.distributions.Categorical(probs=tf.constant(probabilities, tf.float32))
    bound = marginal_bound(label_posterior, tf.constant(elbo, tf.float32)).numpy()
    reconstruction = np.sum(probabilities * np.stack([t["reconstruction"] for t in per_class], axis=1), axis=1)
    return {"reconstruction": reconstruction, "kl": -bound - reconstruction, "elbo": bound}


def class_log_likelihoods(backend: LabelModel, images: np.ndarray, num_samples: int,
                          rng: np.random.Generator) -> np.ndarray:
    """Per image and class, [N, K]: log p(x | y) for a semi-supervised model, each by `num_samples`
    importance samples from q(z | x, y). With the uniform p(y), their argmax over y is the generative
    model's own class posterior's choice, argmax_y p(y | x)."""
    num_classes = len(backend.conditions[0].values)
    return np.stack([iw_log_likelihood(backend, images, rows, num_samples, rng)
                     for rows in _every_class(len(images), num_classes)], axis=1)


def generative_accuracy(class_log_likelihood: np.ndarray, classes: np.ndarray) -> float:
    """How often argmax_y p(x | y), from `class_log_likelihoods` [N, K], is the true class [N]:
    the accuracy of the generative model's own p(y | x) under the uniform p(y)."""
    return float(np.mean(np.argmax(class_log_likelihood, axis=1) == np.asarray(classes).astype(int)))


def marginal_log_likelihood(class_log_likelihood: np.ndarray) -> np.ndarray:
    """log p(x) = log Σ_y p(y) p(x | y), [N], from `class_log_likelihoods` [N, K] and the uniform p(y)."""
    return log_mean_exp(class_log_likelihood, axis=1)


def marginal_iw_log_likelihood(backend: LabelModel, images: np.ndarray, num_samples: int,
                               rng: np.random.Generator) -> np.ndarray:
    """Per-image estimate of log p(x) = log Σ_y p(y) p(x | y) for a semi-supervised model: the sum
    over classes exact, each p(x | y) by `num_samples` importance samples from q(z | x, y) (an
    unbiased estimate of p(x), so a bound in expectation, ≥ the marginal ELBO's)."""
    return marginal_log_likelihood(class_log_likelihoods(backend, images, num_samples, rng))


def conditional_nll(model, images: np.ndarray, num_samples: int) -> np.ndarray:
    """Per-image −log p(y | x) of a completion model (anything with `log_weights(images, K)`:
    a CompletionCVAE or a SavedModelClient of one), nats summed over the missing pixels.

    Importance sampling with the recognition network as proposal:
    −log (1/K) Σ_k p(y|x,z_k) p(z_k|x,ŷ) / q(z_k|x,y,ŷ), z_k ~ q, through the stable
    log-mean-exp. A baseline model has no z: its figure is its own Bernoulli NLL.
    """
    per_call = max(1, ROWS_PER_CALL // num_samples)
    estimates = []
    progress = keras.utils.Progbar(len(images), unit_name="image")
    for part in _batches(len(images), per_call, f"conditional log-likelihood, K={num_samples}"):
        log_weights = np.asarray(model.log_weights(images[part], num_samples))
        estimates.append(-log_mean_exp(log_weights, axis=0))
        progress.add(part.stop - part.start)
    return np.concatenate(estimates)


def posterior_moments(backend: ClassModel, images: np.ndarray, rows: np.ndarray,
                      batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """q(z | x, c)'s mean and log-variance for every image, each [N, L]."""
    parts = [backend.encode(images[i:i + batch_size], rows[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def kl_per_dimension(backend: ClassModel, images: np.ndarray, rows: np.ndarray,
                     batch_size: int = 1000) -> np.ndarray | None:
    """The model's KL(q(z_j | x, c) ‖ p(z_j | c)) of each dimension for every image, [N, L]; None
    where its prior does not factorise over dimensions."""
    parts = [backend.kl_per_dimension(images[i:i + batch_size], rows[i:i + batch_size])
             for i in range(0, len(images), batch_size)]
    return None if any(part is None for part in parts) else np.concatenate(parts)


def latent_usage(q_mean: np.ndarray, kl_per_dim: np.ndarray | None) -> dict:
    """How much each latent dimension is used, from the posterior means over the test images
    [N, L] and the per-dimension KL [N, L] (None where the prior does not factorise):
    `activity`, the variance over images of E_q[z_u] (Burda et al. 2016), `active_units`, how many
    exceed ACTIVE_UNIT_THRESHOLD, and `kl_per_dim`, the mean KL in nats (or None)."""
    activity = np.var(q_mean, axis=0)
    return {"activity": activity, "active_units": int(np.sum(activity > ACTIVE_UNIT_THRESHOLD)),
            "kl_per_dim": None if kl_per_dim is None else kl_per_dim.mean(axis=0)}


def sample_requests(conditions: Sequence[Condition], test_rows: np.ndarray, per_class: int,
                    rng: np.random.Generator) -> np.ndarray:
    """The conditions to sample at, [K·per_class, M], grouped by category of the first categorical
    condition: each group takes the rows of random test images of its category (their other
    conditions as they are, so the requests follow the data's joint distribution). Without a
    categorical condition: 10·per_class random test rows."""
    first = first_categorical(conditions)
    if first is None:
        return test_rows[rng.integers(len(test_rows), size=10 * per_class)]
    groups = []
    for category in range(len(conditions[first].values)):
        pool = test_rows[test_rows[:, first] == category]
        pool = pool if len(pool) else test_rows
        chosen = pool[rng.integers(len(pool), size=per_class)].copy()
        chosen[:, first] = category
        groups.append(chosen)
    return np.concatenate(groups)


def generate_samples(backend: ClassModel, rows: np.ndarray, rng: np.random.Generator, batch_size: int = 1000) -> np.ndarray:
    """One sample per condition row, z ~ p(z | c) (the model's prior, seeded from `rng`), [N, H, W, C]."""
    parts = []
    for i in range(0, len(rows), batch_size):
        z = backend.sample_latent(rows[i:i + batch_size], int(rng.integers(2**31 - 1)))
        parts.append(backend.decode(z, rows[i:i + batch_size]))
    return np.concatenate(parts)


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
