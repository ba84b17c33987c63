"""A numpy client of an exported SavedModel, with nothing but TensorFlow and numpy.

    from keras_cvae.serving_client import load_client
    client = load_client("saved_models/fashion_mnist-mlp/1")
    images = client.generate([0, 7], num=4, seed=1)    # [8, 28, 28, 1] float32 in [0, 1]

This module imports neither keras nor tensorflow_probability, so it runs wherever TF Serving's
model would: it only calls the SavedModel's signatures. A class-conditional export answers
generate / encode / decode / reconstruct / log_likelihood; an image-completion export answers
complete / log_weights / baseline_log_likelihood.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_cvae.run_dir import read_export_config, resolve_version_dir


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
        self.class_names: list[str] = list(model_config.get("class_names") or [])
        self.num_classes: int = int(model_config.get("num_classes", len(self.class_names)))
        self._tf = tf
        self._signatures = tf.saved_model.load(str(self.path)).signatures

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, name: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        if name not in self._signatures:
            raise ValueError(f"{self.path} ({self.task} model) has no {name!r} signature")
        tensors = {key: self._tf.constant(value) for key, value in inputs.items()}
        return {key: value.numpy() for key, value in self._signatures[name](**tensors).items()}

    def _labels(self, labels: int | Sequence[int] | np.ndarray) -> np.ndarray:
        if not self.num_classes:
            raise ValueError(f"{self.path}: a {self.task} model has no classes, so no labels to give")
        array = np.atleast_1d(np.asarray(labels))
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"labels must be integers in [0, {self.num_classes}), got {labels!r}")
        if array.size and (array.min() < 0 or array.max() >= self.num_classes):
            bad = array[(array < 0) | (array >= self.num_classes)][0]
            raise ValueError(f"label {bad} is out of range: labels must be in [0, {self.num_classes})")
        return array.astype(np.int32)

    def _images(self, images: np.ndarray) -> np.ndarray:
        array = np.asarray(images, dtype=np.float32)
        if array.ndim == len(self.image_shape):
            array = array[np.newaxis]
        if array.shape[1:] != self.image_shape:
            raise ValueError(f"images must be N×{'×'.join(map(str, self.image_shape))}, got {array.shape}")
        return array

    # -- class-conditional exports ------------------------------------------------------------

    def generate(self, labels: int | Sequence[int], num: int = 1, seed: int | None = None) -> np.ndarray:
        """`num` images for each label, label-major: [len(labels)·num, H, W, C] in [0, 1].

        With a seed the noise is drawn here (reproducible); without, inside the graph.
        """
        repeated = np.repeat(self._labels(labels), num)
        if seed is None:
            return self._call("serving_default", labels=repeated)["images"]
        z = np.random.default_rng(seed).standard_normal((len(repeated), self.latent_dim)).astype(np.float32)
        return self.decode(z, repeated)

    def decode(self, z: np.ndarray, labels: int | Sequence[int]) -> np.ndarray:
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.latent_dim)
        return self._call("decode", z=z, labels=self._labels(labels))["images"]

    def encode(self, images: np.ndarray, labels: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """q(z | x, c)'s mean and log-variance, each [N, latent_dim]."""
        out = self._call("encode", images=self._images(images), labels=self._labels(labels))
        return out["z_mean"], out["z_log_var"]

    def reconstruct(self, images: np.ndarray, labels: int | Sequence[int]) -> np.ndarray:
        return self._call("reconstruct", images=self._images(images), labels=self._labels(labels))["images"]

    def log_likelihood(self, images: np.ndarray, labels: int | Sequence[int], z: np.ndarray) -> np.ndarray:
        """log p(x | z, c) per image, [N] (nats)."""
        z = np.asarray(z, dtype=np.float32)
        out = self._call("log_likelihood", images=self._images(images), labels=self._labels(labels), z=z)
        return out["log_likelihood"]

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

    def baseline_log_likelihood(self, images: np.ndarray) -> np.ndarray:
        """log p(y | ŷ(x)) of the deterministic baseline, [N] (nats over the missing pixels)."""
        return self._call("baseline_log_likelihood", images=self._images(images))["log_likelihood"]


def load_client(path: str | Path) -> SavedModelClient:
    """Load a SavedModel version dir, or the newest version under an export root."""
    return SavedModelClient(resolve_version_dir(path))
