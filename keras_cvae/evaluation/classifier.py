"""The reference CNN that judges whether generated samples show their conditions: one classifier
head per categorical condition, one regressor head per continuous one.

It is trained once per dataset on the real training set and cached (weights plus its scores on
the real test set), so every evaluation of every model is scored by the same judge.

Half of its training images are Gaussian-blurred (σ from 0.3 to 1.5 px, `JudgeRecipe`). A decoder's mean image is
smooth, and a judge that has seen only sharp images takes smoothness for a class
(benchmarks/results/reference_run.md). The accuracy metric should ask whether a sample shows its
class; sharpness is what the NLL measures.
The cached figures include the accuracy on blurred real test images (σ = 1), to show how far the
judge is from blur-blind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from keras_cvae.atomic import atomic_path, atomic_write_text
from keras_cvae.conditions import CATEGORICAL, Condition
from keras_cvae.data import LoadedDataset
from keras_cvae.data.folders import cache_dir

FEATURES_LAYER = "features"  # the penultimate layer: FID's and KID's feature space
BLUR_SIGMA = 1.0  # for the blurred-test-accuracy figure
SMALLEST_MAP = 8  # pool until the feature map's shorter side is at most this


@dataclass(frozen=True)
class JudgeRecipe:
    """How the judge is built and trained. Its fields and the built network's config are part of
    the cache key, so a changed definition never loads a judge cached under another.

    6 epochs of a 16-32-64-filter network at batch 256, Adam with its learning rate decayed to 0 on
    a cosine, reach the accuracy of 10 epochs of twice the filters at a constant rate, in about a
    sixth of the work (benchmarks/results/evaluate_speed/evaluate_speed.md). A small training set gets at least
    `min_steps` steps.
    """

    version: int = 6  # bumped when what the judge means changes beyond its config (data, heads)
    first_filters: int = 16
    max_filters: int = 64
    epochs: int = 6
    min_steps: int = 300
    batch_size: int = 256
    learning_rate: float = 3e-3
    blur_share: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    dropout: float = 0.3
    feature_units: int = 128

    def epochs_for(self, train_images: int) -> int:
        """The epochs for a training set of this size: `epochs`, or more to reach `min_steps`."""
        steps_per_epoch = max(1, -(-train_images // self.batch_size))
        return max(self.epochs, -(-self.min_steps // steps_per_epoch))


RECIPE = JudgeRecipe()


def build_classifier(image_shape: tuple[int, ...], conditions: Sequence[Condition],
                     recipe: JudgeRecipe = RECIPE) -> keras.Model:
    """Random blur (training only), 3×3 convolutions with pooling until the map is about 8×8, one
    more convolution (for 28×28: 16 and 32 filters pooled, then 64), a dense layer, and one head
    per condition: logits for a categorical one, the standardised value for a continuous one (a
    regressor). Every layer is named, so its config, part of the cache key, is the same in every
    process. Its accuracy on real test images is reported beside conditional accuracy for scale,
    not as a ceiling: a decoder's mean image can be more typical of its class than real images
    are, and score higher."""
    inputs = keras.Input(image_shape, name="images")
    h = layers.RandomGaussianBlur(factor=(recipe.blur_share, recipe.blur_share), kernel_size=5,
                                  sigma=recipe.blur_sigma, value_range=(0, 1), seed=0, name="train_blur")(inputs)
    side, filters, index = min(image_shape[:2]), recipe.first_filters, 0
    while side > SMALLEST_MAP:  # 28 → 14 → 7: two pooled convolutions for 28×28
        h = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv_{index}")(h)
        h = layers.MaxPooling2D(padding="same", name=f"pool_{index}")(h)
        side, filters, index = -(-side // 2), min(filters * 2, recipe.max_filters), index + 1
    h = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv_{index}")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dropout(recipe.dropout, name="dropout")(h)
    h = layers.Dense(recipe.feature_units, activation="relu", name=FEATURES_LAYER)(h)
    outputs = {}
    for condition in conditions:
        width = len(condition.values) if condition.kind == CATEGORICAL else 1
        outputs[condition.name] = layers.Dense(width, name=condition.name)(h)
    return keras.Model(inputs, outputs, name="reference_classifier")


def compile_classifier(model: keras.Model, conditions: Sequence[Condition], total_steps: int,
                       recipe: JudgeRecipe = RECIPE) -> None:
    """Adam with the recipe's rate decayed to 0 over `total_steps` on a cosine; cross-entropy
    per categorical head, squared error per continuous one."""
    losses = {c.name: keras.losses.SparseCategoricalCrossentropy(from_logits=True) if c.kind == CATEGORICAL
              else keras.losses.MeanSquaredError() for c in conditions}
    metrics = {c.name: ["accuracy"] for c in conditions if c.kind == CATEGORICAL}
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, total_steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=losses, metrics=metrics)


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


def _definition(dataset: LoadedDataset, recipe: JudgeRecipe) -> str:
    """A hash of what the judge is: the recipe and the config of the network it builds."""
    network = build_classifier(dataset.x_train.shape[1:], dataset.conditions, recipe).get_config()
    text = json.dumps({"recipe": dataclasses.asdict(recipe), "network": network}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def judge_cache_path(dataset: LoadedDataset, name: str, directory: Path | None = None,
                     recipe: JudgeRecipe = RECIPE) -> Path:
    """Where the judge for `dataset` is cached (without suffix: .keras holds the network, .json
    its scores). The name holds hashes of the data and of the judge's definition, so another
    copy of the data, or a changed judge, never loads a judge trained for something else."""
    directory = directory or cache_dir()
    return directory / (f"classifier-v{recipe.version}-{name.replace('/', '_')}-{_fingerprint(dataset)}-"
                        f"{_definition(dataset, recipe)}")


def is_judge_cached(stem: Path) -> bool:
    return stem.with_suffix(".keras").is_file() and stem.with_suffix(".json").is_file()


def _targets(dataset_rows: np.ndarray, conditions: Sequence[Condition]) -> dict[str, np.ndarray]:
    return {c.name: dataset_rows[:, i].astype(np.int32) if c.kind == CATEGORICAL
            else ((dataset_rows[:, i] - c.mean) / c.std).astype(np.float32) for i, c in enumerate(conditions)}


def _training_data(dataset: LoadedDataset, recipe: JudgeRecipe) -> tf.data.Dataset:
    """The training set as a cached, shuffled, prefetched pipeline of uint8 images made float
    per batch."""
    targets = _targets(dataset.y_train, dataset.conditions)
    data = tf.data.Dataset.from_tensor_slices((dataset.x_train, targets)).cache()
    data = data.shuffle(len(dataset.x_train), seed=0, reshuffle_each_iteration=True).batch(recipe.batch_size)
    return data.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE) \
        .prefetch(tf.data.AUTOTUNE)


def reference_classifier(dataset: LoadedDataset, name: str, directory: Path | None = None,
                         recipe: JudgeRecipe = RECIPE) -> ReferenceClassifier:
    """The cached judge for `dataset` (`judge_cache_path`), training it first if needed (about
    a minute for Fashion-MNIST's 60,000 images on 2 CPU cores)."""
    return judge_at(judge_cache_path(dataset, name, directory, recipe), dataset, name, recipe)


def judge_at(stem: Path, dataset: LoadedDataset, name: str, recipe: JudgeRecipe = RECIPE) -> ReferenceClassifier:
    """`reference_classifier` for a cache path already made by `judge_cache_path` (which hashes
    the data): loaded from `stem` if cached, else trained and cached there."""
    weights, meta = stem.with_suffix(".keras"), stem.with_suffix(".json")
    conditions = tuple(dataset.conditions)
    if is_judge_cached(stem):
        model = keras.saving.load_model(weights, safe_mode=True)
        figures = json.loads(meta.read_text())
        return ReferenceClassifier(model, conditions, figures["per_condition_test_accuracy"], figures["test_error"],
                                   float(figures["blurred_test_accuracy"]))

    epochs = recipe.epochs_for(len(dataset.x_train))
    print(f"Training the reference classifier for {name} ({epochs} epochs; cached as {weights})", flush=True)
    keras.utils.set_random_seed(0)
    model = build_classifier(dataset.x_train.shape[1:], conditions, recipe)
    steps_per_epoch = -(-len(dataset.x_train) // recipe.batch_size)
    compile_classifier(model, conditions, epochs * steps_per_epoch, recipe)
    start = time.perf_counter()
    model.fit(_training_data(dataset, recipe), epochs=epochs, verbose=2)
    train_seconds = time.perf_counter() - start
    classifier = ReferenceClassifier(model, conditions, {}, {}, float("nan"))
    x_test = dataset.x_test.astype(np.float32) / 255.0
    classifier.per_condition_test_accuracy, classifier.test_error = classifier.score(x_test, dataset.y_test)
    classifier.blurred_test_accuracy = classifier.accuracy(blur(x_test), dataset.y_test)
    with atomic_path(weights) as tmp:
        model.save(tmp)
    atomic_write_text(meta, json.dumps({
        "dataset": name, "epochs": epochs, "recipe": dataclasses.asdict(recipe), "train_seconds": train_seconds,
        "per_condition_test_accuracy": classifier.per_condition_test_accuracy,
        "test_error": classifier.test_error, "blurred_test_accuracy": classifier.blurred_test_accuracy,
        "blur_sigma": BLUR_SIGMA,
    }))
    return classifier
