"""The reference CNN that judges whether generated samples show their conditions: one classifier
head per categorical condition, one regressor head per continuous one.

It is trained once per dataset on the real training set and cached (weights plus its scores on
the real test set), so every evaluation of every model is scored by the same judge.

Half of its training images are Gaussian-blurred (σ from 0.3 to 1.5 px). A decoder's mean image is
smooth, and a judge that has seen only sharp images takes smoothness for a class
(benchmarks/results/reference_run.md). The accuracy metric should ask whether a sample shows its
class; sharpness is what the NLL measures.
The cached figures include the accuracy on blurred real test images (σ = 1), to show how far the
judge is from blur-blind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from keras_cvae.atomic import atomic_path, atomic_write_text
from keras_cvae.conditions import CATEGORICAL, Condition
from keras_cvae.data import LoadedDataset
from keras_cvae.data.folders import cache_dir

CLASSIFIER_EPOCHS = 10
CLASSIFIER_VERSION = 5  # part of the cache key: 4 = one head per condition; 5 = a named "features" layer
BLUR_SIGMA = 1.0  # for the blurred-test-accuracy figure
SMALLEST_MAP = 8  # pool until the feature map's shorter side is at most this
FEATURES_LAYER = "features"  # the penultimate layer: FID's and KID's feature space


def build_classifier(image_shape: tuple[int, ...], conditions: Sequence[Condition]) -> keras.Model:
    """Random blur (training only), 3×3 convolutions with pooling until the map is about 8×8, one
    more convolution (for 28×28: 32 and 64 filters pooled, then 128, as before), a dense layer,
    and one head per condition: logits for a categorical one, the standardised value for a
    continuous one (a regressor). Its accuracy on real test images is reported beside
    conditional accuracy for scale, not as a ceiling: a decoder's mean image can be more typical of
    its class than real images are, and score higher."""
    inputs = keras.Input(image_shape, name="images")
    h = layers.RandomGaussianBlur(
        factor=(0.5, 0.5), kernel_size=5, sigma=(0.3, 1.5), value_range=(0, 1), seed=0, name="train_blur"
    )(inputs)
    side, filters = min(image_shape[:2]), 32
    while side > SMALLEST_MAP:  # 28 → 14 → 7: the two pooled convolutions of the 28×28 judge
        h = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D(padding="same")(h)
        side, filters = -(-side // 2), min(filters * 2, 128)
    h = layers.Conv2D(128, 3, padding="same", activation="relu")(h)
    h = layers.Flatten()(h)
    h = layers.Dropout(0.3)(h)
    h = layers.Dense(128, activation="relu", name=FEATURES_LAYER)(h)
    outputs, losses, metrics = {}, {}, {}
    for condition in conditions:
        if condition.kind == CATEGORICAL:
            outputs[condition.name] = layers.Dense(len(condition.values), name=condition.name)(h)
            losses[condition.name] = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            metrics[condition.name] = ["accuracy"]
        else:
            outputs[condition.name] = layers.Dense(1, name=condition.name)(h)
            losses[condition.name] = keras.losses.MeanSquaredError()
    model = keras.Model(inputs, outputs, name="reference_classifier")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses, metrics=metrics)
    return model


def blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur of float images [N, H, W, C] (5×5 kernel)."""
    return np.asarray(keras.ops.image.gaussian_blur(images, kernel_size=(5, 5), sigma=(sigma, sigma)))


@dataclass
class ReferenceClassifier:
    """The judge: predicts every condition of an image. Its own scores on real test images are
    kept beside it: accuracy per categorical condition, mean absolute error (data units) per
    continuous one, and the first categorical condition's accuracy on blurred test images."""

    model: keras.Model
    conditions: tuple[Condition, ...]
    per_condition_test_accuracy: dict[str, float]
    test_error: dict[str, float]
    blurred_test_accuracy: float

    @property
    def test_accuracy(self) -> float:
        """The first categorical condition's accuracy on real test images (NaN without one)."""
        return next(iter(self.per_condition_test_accuracy.values()), float("nan"))

    def predict(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predicted conditions of float images in [0, 1], [N, H, W, C] → rows [N, M]: category
        indices, and values in the data's units."""
        outputs = self.model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
        columns = []
        for condition in self.conditions:
            out = np.asarray(outputs[condition.name])
            if condition.kind == CATEGORICAL:
                columns.append(np.argmax(out, axis=-1).astype(np.float32))
            else:
                columns.append(out[:, 0] * condition.std + condition.mean)
        return np.stack(columns, axis=1)

    def features(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """The penultimate layer's activations [N, 128] of float images in [0, 1] (FID, KID)."""
        if not hasattr(self, "_features"):
            self._features = keras.Model(self.model.inputs, self.model.get_layer(FEATURES_LAYER).output)
        return np.asarray(self._features.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0))

    def score(self, images: np.ndarray, rows: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
        """How well images show the conditions `rows` [N, M]: accuracy per categorical condition,
        mean absolute error per continuous one."""
        predicted = self.predict(images)
        accuracy, error = {}, {}
        for index, condition in enumerate(self.conditions):
            if condition.kind == CATEGORICAL:
                accuracy[condition.name] = float(np.mean(predicted[:, index] == rows[:, index]))
            else:
                error[condition.name] = float(np.mean(np.abs(predicted[:, index] - rows[:, index])))
        return accuracy, error

    def accuracy(self, images: np.ndarray, rows: np.ndarray) -> float:
        """The first categorical condition's accuracy on `images` with conditions `rows`."""
        return next(iter(self.score(images, rows)[0].values()), float("nan"))


def _fingerprint(dataset: LoadedDataset) -> str:
    digest = hashlib.sha256(json.dumps([c.to_dict() for c in dataset.conditions]).encode())
    for array in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]


def _targets(dataset_rows: np.ndarray, conditions: Sequence[Condition]) -> dict[str, np.ndarray]:
    return {c.name: dataset_rows[:, i].astype(np.int32) if c.kind == CATEGORICAL
            else (dataset_rows[:, i] - c.mean) / c.std for i, c in enumerate(conditions)}


def reference_classifier(
    dataset: LoadedDataset, name: str, epochs: int = CLASSIFIER_EPOCHS, directory: Path | None = None
) -> ReferenceClassifier:
    """The cached judge for `dataset`, training it first (minutes on 2 cores) if needed.

    The cache key includes a hash of the arrays and the conditions, so a different copy of the data
    never reuses a judge trained on another.
    """
    directory = directory or cache_dir()
    stem = directory / f"classifier-v{CLASSIFIER_VERSION}-{name.replace('/', '_')}-{_fingerprint(dataset)}-e{epochs}"
    weights, meta = stem.with_suffix(".keras"), stem.with_suffix(".json")
    conditions = tuple(dataset.conditions)
    if weights.is_file() and meta.is_file():
        model = keras.saving.load_model(weights, safe_mode=True)
        figures = json.loads(meta.read_text())
        return ReferenceClassifier(model, conditions, figures["per_condition_test_accuracy"], figures["test_error"],
                                   float(figures["blurred_test_accuracy"]))

    print(f"Training the reference classifier for {name} ({epochs} epochs, cached in {directory})", flush=True)
    keras.utils.set_random_seed(0)
    model = build_classifier(dataset.x_train.shape[1:], conditions)
    model.fit(
        dataset.x_train.astype(np.float32) / 255.0, _targets(dataset.y_train, conditions),
        batch_size=128, epochs=epochs, verbose=2,
    )
    classifier = ReferenceClassifier(model, conditions, {}, {}, float("nan"))
    x_test = dataset.x_test.astype(np.float32) / 255.0
    classifier.per_condition_test_accuracy, classifier.test_error = classifier.score(x_test, dataset.y_test)
    classifier.blurred_test_accuracy = classifier.accuracy(blur(x_test), dataset.y_test)
    with atomic_path(weights) as tmp:
        model.save(tmp)
    atomic_write_text(meta, json.dumps({
        "dataset": name, "epochs": epochs, "per_condition_test_accuracy": classifier.per_condition_test_accuracy,
        "test_error": classifier.test_error, "blurred_test_accuracy": classifier.blurred_test_accuracy,
        "blur_sigma": BLUR_SIGMA,
    }))
    return classifier
