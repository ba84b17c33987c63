"""A numpy client of an exported SavedModel, with nothing but TensorFlow and numpy.

    from keras_cvae.serving_client import load_client
    client = load_client("saved_models/fashion_mnist-mlp/1")
    images = client.generate([0, 7], num=4, seed=1)    # [8, 28, 28, 1] float32 in [0, 1]
    images = client.generate({"labels": ["Bag", "Sandal"]})  # category names work too

This module imports neither keras nor tensorflow_probability, so it runs wherever TF Serving's
model would: it only calls the SavedModel's signatures. A class-conditional export answers
generate / encode / decode / reconstruct / log_likelihood / log_importance_weights /
sample_latent / elbo_terms / kl_per_dimension (a semi-supervised one also classify);
an image-completion export answers
complete / log_weights / baseline_log_likelihood.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_cvae.conditions import (
    CATEGORICAL,
    Condition,
    check_conditions,
    class_labels,
    class_names,
    rows_from_mapping,
)
from keras_cvae.run_dir import read_export_config, resolve_version_dir

# Conditions: a mapping {name: values} (category names or indices, numbers in the data's units;
# conditions left out are held at their first category or mean), rows [N, M], or, for a model
# with one condition, its values [N].
Conditions = Mapping[str, Any] | Sequence | np.ndarray | int


class SavedModelClient:
    """A loaded keras_cvae SavedModel: its signatures as numpy functions, and its config."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        config = read_export_config(self.path)  # fails fast, before TensorFlow is imported
        import tensorflow as tf

        self.task: str = config["task"]
        self.dataset: str | None = config.get("dataset")
        model_config = self.config = config["model"]
        self.latent_dim: int = int(model_config["latent_dim"])
        self.image_shape: tuple[int, ...] = tuple(model_config["image_shape"])
        self.conditions: tuple[Condition, ...] = tuple(Condition.from_dict(c) for c in model_config.get("conditions", []))
        if not self.conditions and model_config.get("class_names") and self.task == "classes":
            self.conditions = (class_labels(model_config["class_names"]),)  # exported before conditions existed
        self.class_names: list[str] = list(class_names(self.conditions))
        self._tf = tf
        self._signatures = tf.saved_model.load(str(self.path)).signatures

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, name: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        if name not in self._signatures:
            raise ValueError(f"{self.path} ({self.task} model) has no {name!r} signature")
        tensors = {key: self._tf.constant(value) for key, value in inputs.items()}
        return {key: value.numpy() for key, value in self._signatures[name](**tensors).items()}

    def rows(self, conditions: Conditions, count: int | None = None) -> np.ndarray:
        """`conditions` as checked rows [N, M] (see `Conditions`); a mapping gives `count` rows
        (default: as many as its longest list of values)."""
        if not self.conditions:
            raise ValueError(f"{self.path}: a {self.task} model takes no conditions")
        if isinstance(conditions, Mapping):
            sizes = [np.size(v) for v in conditions.values()]
            rows = rows_from_mapping(self.conditions, conditions, count or max(sizes, default=1))
        else:
            array = np.asarray(conditions)
            array = array.reshape(-1, 1) if array.ndim <= 1 else array
            if array.shape[1] != len(self.conditions):
                raise ValueError(f"conditions must be N×{len(self.conditions)} ({', '.join(c.name for c in self.conditions)}), "
                                 f"got shape {array.shape}")
            rows = rows_from_mapping(self.conditions, {c.name: array[:, i] for i, c in enumerate(self.conditions)},
                                     len(array))
        check_conditions(self.conditions, rows, str(self.path))
        return rows

    def _condition_inputs(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {c.name: rows[:, i].astype(np.int32 if c.kind == CATEGORICAL else np.float32)
                for i, c in enumerate(self.conditions)}

    def _images(self, images: np.ndarray) -> np.ndarray:
        array = np.asarray(images, dtype=np.float32)
        if array.ndim == len(self.image_shape):
            array = array[np.newaxis]
        if array.shape[1:] != self.image_shape:
            raise ValueError(f"images must be N×{'×'.join(map(str, self.image_shape))}, got {array.shape}")
        return array

    # -- class-conditional exports ------------------------------------------------------------

    def generate(self, conditions: Conditions, num: int = 1, seed: int | None = None) -> np.ndarray:
        """`num` images for each row of `conditions`, row-major: [rows·num, H, W, C] in [0, 1].

        With a seed the noise is drawn here (reproducible); without, inside the graph.
        """
        repeated = np.repeat(self.rows(conditions), num, axis=0)
        if seed is None:
            return self._call("serving_default", **self._condition_inputs(repeated))["images"]
        return self.decode(self.sample_latent(repeated, seed), repeated)

    def sample_latent(self, conditions: Conditions, seed: int) -> np.ndarray:
        """z ~ p(z | c), the model's prior, one per row of `conditions`, [N, latent_dim]; the same
        seed gives the same z. (An export written before the `sample_latent` signature has the
        prior N(0, I): its z are standard normal draws from `seed`.)"""
        rows = self.rows(conditions)
        if "sample_latent" not in self._signatures:
            return np.random.default_rng(seed).standard_normal((len(rows), self.latent_dim)).astype(np.float32)
        return self._call("sample_latent", seed=np.array([0, seed], np.int32), **self._condition_inputs(rows))["z"]

    def elbo_terms(self, images: np.ndarray, conditions: Conditions, eps: np.ndarray) -> dict[str, np.ndarray]:
        """The ELBO's terms per image, [N]: `reconstruction` −log p(x | z, c) at z = μ + σ·ε (ε [N, L])
        and `kl`, the model's KL to its prior. (An export written before the `elbo_terms`
        signature gives the one-sample estimate log q(z|x,c) − log p(z|c) at that z.)"""
        images, eps = self._images(images), np.asarray(eps, np.float32)
        inputs = self._condition_inputs(self.rows(conditions, len(images)))
        if "elbo_terms" in self._signatures:
            return self._call("elbo_terms", images=images, eps=eps, **inputs)
        z_mean, z_log_var = self.encode(images, conditions)
        reconstruction = -self.log_likelihood(images, conditions, z_mean + np.exp(0.5 * z_log_var) * eps)
        log_weight = self.log_importance_weights(images, conditions, eps[np.newaxis])[0]
        return {"reconstruction": reconstruction, "kl": -log_weight - reconstruction}

    def kl_per_dimension(self, images: np.ndarray, conditions: Conditions) -> np.ndarray | None:
        """KL(q(z_j | x, c) ‖ p(z_j | c)) per image and dimension, [N, L]; None for a prior that
        does not factorise over dimensions, or an export written before this signature."""
        if "kl_per_dimension" not in self._signatures:
            return None
        images = self._images(images)
        return self._call("kl_per_dimension", images=images,
                          **self._condition_inputs(self.rows(conditions, len(images))))["kl"]

    def decode(self, z: np.ndarray, conditions: Conditions) -> np.ndarray:
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.latent_dim)
        return self._call("decode", z=z, **self._condition_inputs(self.rows(conditions, len(z))))["images"]

    def encode(self, images: np.ndarray, conditions: Conditions) -> tuple[np.ndarray, np.ndarray]:
        """q(z | x, c)'s mean and log-variance, each [N, latent_dim]."""
        images = self._images(images)
        out = self._call("encode", images=images, **self._condition_inputs(self.rows(conditions, len(images))))
        return out["z_mean"], out["z_log_var"]

    def reconstruct(self, images: np.ndarray, conditions: Conditions) -> np.ndarray:
        images = self._images(images)
        return self._call("reconstruct", images=images,
                          **self._condition_inputs(self.rows(conditions, len(images))))["images"]

    def log_likelihood(self, images: np.ndarray, conditions: Conditions, z: np.ndarray) -> np.ndarray:
        """log p(x | z, c) per image, [N] (nats)."""
        images, z = self._images(images), np.asarray(z, dtype=np.float32)
        out = self._call("log_likelihood", images=images, z=z,
                         **self._condition_inputs(self.rows(conditions, len(images))))
        return out["log_likelihood"]

    def log_importance_weights(self, images: np.ndarray, conditions: Conditions, eps: np.ndarray) -> np.ndarray:
        """[K, N] log-weights of the importance-weighted bound for noise `eps` [K, N, latent_dim]."""
        images = self._images(images)
        return self._call("log_importance_weights", images=images, eps=np.asarray(eps, np.float32),
                          **self._condition_inputs(self.rows(conditions, len(images))))["log_weights"]

    def classify(self, images: np.ndarray) -> np.ndarray:
        """q(y | x) of a semi-supervised export: probabilities [N, K], in the vocabulary's order."""
        return self._call("classify", images=self._images(images))["probabilities"]

    # -- image-completion exports ---------------------------------------------------------------

    def complete(self, images: np.ndarray, eps: np.ndarray | None = None, baseline: bool = False) -> np.ndarray:
        """Completed images [N, H, W, C]: the visible pixels kept, the rest from one z ~ p(z | x, ŷ)
        (noise `eps` [N, latent_dim] if given, else drawn in the graph), or the baseline's ŷ."""
        images = self._images(images)
        if baseline:
            return self._call("complete_baseline", images=images)["images"]
        if eps is None:
            return self._call("complete", images=images)["images"]
        return self._call("complete_with_noise", images=images, eps=np.asarray(eps, np.float32))["images"]

    def log_weights(self, images: np.ndarray, num_samples: int) -> np.ndarray:
        """[K, N] importance log-weights for −log p(y | x) (see CompletionCVAE.log_weights)."""
        return self._call("log_weights", images=self._images(images),
                          num_samples=np.int32(num_samples))["log_weights"]

    def latent_moments(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """q(z | x, y, ŷ)'s and p(z | x, ŷ)'s means and log-variances (q_mean, q_log_var, p_mean,
        p_log_var), each [N, latent_dim]."""
        return self._call("latent_moments", images=self._images(images))

    def baseline_log_likelihood(self, images: np.ndarray) -> np.ndarray:
        """log p(y | ŷ(x)) of the deterministic baseline, [N] (nats over the missing pixels)."""
        return self._call("baseline_log_likelihood", images=self._images(images))["log_likelihood"]


def load_client(path: str | Path) -> SavedModelClient:
    """Load a SavedModel version dir, or the newest version under an export root."""
    return SavedModelClient(resolve_version_dir(path))
