"""Inference from an exported SavedModel, with nothing but TensorFlow and numpy.

    from keras_cvae.inference import load_generator
    generator = load_generator("saved_models/fashion_mnist-mlp/1")
    images = generator.generate([0, 7], num=4, seed=1)    # [8, 28, 28, 1] float32 in [0, 1]

This module imports neither keras nor tensorflow_probability, so it runs wherever TF Serving's
model would: it only calls the SavedModel's signatures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_cvae.config import ConfigError

CONFIG_ASSET = "config.json"
CLASS_NAMES_ASSET = "class_names.txt"


def is_saved_model_dir(path: str | Path) -> bool:
    return (Path(path) / "saved_model.pb").is_file()


def resolve_version_dir(path: str | Path) -> Path:
    """`path` itself if it is a SavedModel, else its newest integer version subdirectory."""
    path = Path(path)
    if is_saved_model_dir(path):
        return path
    if path.is_dir():
        versions = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and is_saved_model_dir(p))
        if versions:
            return path / str(versions[-1])
    raise FileNotFoundError(f"{path} is not a SavedModel version dir (no saved_model.pb) nor an export root")


def read_export_config(path: str | Path) -> dict:
    """The `assets/config.json` of a SavedModel version dir: {"model": {...}, "dataset": ...}."""
    config_path = Path(path) / "assets" / CONFIG_ASSET
    if not is_saved_model_dir(path) or not config_path.is_file():
        raise FileNotFoundError(f"{path} is not a keras_cvae SavedModel version dir (no assets/{CONFIG_ASSET})")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {config_path}: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ConfigError(f"{config_path} is not a keras_cvae export config (no \"model\" section)")
    return config


def read_class_export_config(path: str | Path) -> dict:
    """`read_export_config` for a class-conditional export; a ConfigError for any other model
    (an image-completion export has no classes to generate or evaluate by)."""
    config = read_export_config(path)
    if "num_classes" not in config["model"]:
        raise ConfigError(
            f"{path} holds an image-completion model, and this command needs a class-conditional one "
            f"(train.py --task classes); measure completion with benchmarks/quadrants.py"
        )
    return config


class SavedModelGenerator:
    """A loaded CVAE SavedModel: generate, encode, decode and reconstruct as numpy arrays."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        config = read_class_export_config(self.path)  # fails fast, before TensorFlow is imported
        import tensorflow as tf

        model_config = config["model"]
        self.dataset: str | None = config.get("dataset")
        self.class_names: list[str] = list(model_config["class_names"])
        self.num_classes: int = int(model_config["num_classes"])
        self.latent_dim: int = int(model_config["latent_dim"])
        self.image_shape: tuple[int, ...] = tuple(model_config["image_shape"])
        self.conditional: bool = bool(model_config["conditional"])
        self.likelihood: str = model_config["likelihood"]
        self._tf = tf
        self._loaded = tf.saved_model.load(str(self.path))
        self._signatures = self._loaded.signatures

    def _labels(self, labels: int | Sequence[int] | np.ndarray) -> np.ndarray:
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

    def _call(self, name: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        tensors = {key: self._tf.constant(value) for key, value in inputs.items()}
        return {key: value.numpy() for key, value in self._signatures[name](**tensors).items()}

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


def restyle(model, images: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Each image's posterior mean z decoded under every label, [N, num_classes, H, W, C].

    The "same z, another class" picture: `model` is anything with encode, decode and
    num_classes (a SavedModelGenerator, or evaluation's KerasBackend).
    """
    z_mean, _ = model.encode(images, labels)
    every = np.arange(model.num_classes, dtype=np.int32)
    decoded = model.decode(np.repeat(z_mean, len(every), axis=0), np.tile(every, len(z_mean)))
    return decoded.reshape(len(z_mean), len(every), *decoded.shape[1:])


def load_generator(path: str | Path) -> SavedModelGenerator:
    """Load a SavedModel version dir, or the newest version under an export root."""
    return SavedModelGenerator(resolve_version_dir(path))
