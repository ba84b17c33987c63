"""The reference CNN classifier that judges whether generated samples show their label.

It is trained once per dataset on the real training set and cached (weights plus its accuracy on
the real test set), so every evaluation of every model is scored by the same judge.

Half of its training images are Gaussian-blurred (σ from 0.3 to 1.5 px). A decoder's mean image is
smooth, and a judge that has seen only sharp images takes smoothness for a class (README,
Results). The accuracy metric should ask whether a sample shows its class; sharpness is what the
NLL measures.
The cached figures include the accuracy on blurred real test images (σ = 1), to show how far the
judge is from blur-blind.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from keras_cvae.atomic import atomic_path, atomic_write_text
from keras_cvae.data import LoadedDataset

CACHE_ENV = "KERAS_CVAE_CACHE"
CLASSIFIER_EPOCHS = 10
CLASSIFIER_VERSION = 2  # part of the cache key: 2 = trained with blur augmentation
BLUR_SIGMA = 1.0  # for the blurred-test-accuracy figure


def cache_dir() -> Path:
    """$KERAS_CVAE_CACHE, else ~/.cache/keras_cvae."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "keras_cvae")


def build_classifier(image_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Random blur (training only), three 3×3 convolutions (pooling after the first two) and a
    dense head. Its accuracy on real test images is reported beside conditional accuracy for
    scale, not as a ceiling: a decoder's mean image can be more typical of its class than real
    images are, and score higher."""
    inputs = keras.Input(image_shape, name="images")
    h = layers.RandomGaussianBlur(
        factor=(0.5, 0.5), kernel_size=5, sigma=(0.3, 1.5), value_range=(0, 1), seed=0, name="train_blur"
    )(inputs)
    for filters in (32, 64):
        h = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(h)
    h = layers.Conv2D(128, 3, padding="same", activation="relu")(h)
    h = layers.Flatten()(h)
    h = layers.Dropout(0.3)(h)
    h = layers.Dense(128, activation="relu")(h)
    outputs = layers.Dense(num_classes, name="logits")(h)
    model = keras.Model(inputs, outputs, name="reference_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur of float images [N, H, W, C] (5×5 kernel)."""
    return np.asarray(keras.ops.image.gaussian_blur(images, kernel_size=(5, 5), sigma=(sigma, sigma)))


@dataclass
class ReferenceClassifier:
    model: keras.Model
    test_accuracy: float
    blurred_test_accuracy: float

    def predict(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predicted class of float images in [0, 1], [N, H, W, C]."""
        logits = self.model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
        return np.argmax(logits, axis=-1)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.predict(images) == np.asarray(labels)))


def _fingerprint(dataset: LoadedDataset) -> str:
    digest = hashlib.sha256()
    for array in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]


def reference_classifier(
    dataset: LoadedDataset, name: str, epochs: int = CLASSIFIER_EPOCHS, directory: Path | None = None
) -> ReferenceClassifier:
    """The cached classifier for `dataset`, training it first (about 3 minutes on 2 cores) if needed.

    The cache key includes a hash of the arrays, so a different copy of the data never reuses a
    classifier trained on another.
    """
    directory = directory or cache_dir()
    stem = directory / f"classifier-v{CLASSIFIER_VERSION}-{name}-{_fingerprint(dataset)}-e{epochs}"
    weights, meta = stem.with_suffix(".keras"), stem.with_suffix(".json")
    if weights.is_file() and meta.is_file():
        model = keras.saving.load_model(weights, safe_mode=True)
        figures = json.loads(meta.read_text())
        return ReferenceClassifier(model, float(figures["test_accuracy"]), float(figures["blurred_test_accuracy"]))

    print(f"Training the reference classifier for {name} ({epochs} epochs, cached in {directory})", flush=True)
    keras.utils.set_random_seed(0)
    model = build_classifier(dataset.x_train.shape[1:], len(dataset.class_names))
    model.fit(
        dataset.x_train.astype(np.float32) / 255.0, dataset.y_train,
        batch_size=128, epochs=epochs, verbose=2,
    )
    classifier = ReferenceClassifier(model, 0.0, 0.0)
    x_test = dataset.x_test.astype(np.float32) / 255.0
    classifier.test_accuracy = classifier.accuracy(x_test, dataset.y_test)
    classifier.blurred_test_accuracy = classifier.accuracy(blur(x_test), dataset.y_test)
    with atomic_path(weights) as tmp:
        model.save(tmp)
    atomic_write_text(meta, json.dumps({
        "dataset": name, "epochs": epochs, "test_accuracy": classifier.test_accuracy,
        "blurred_test_accuracy": classifier.blurred_test_accuracy, "blur_sigma": BLUR_SIGMA,
    }))
    return classifier
