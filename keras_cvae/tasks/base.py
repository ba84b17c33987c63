"""What a task is: the interface every task module implements, and the in-graph input checks
their serving signatures share.

A task owns everything that differs between kinds of model: building the model for a config and
a dataset, its sample-grid callback, its serving signatures and export assets, its evaluation
(metrics, figures, report) and its `generate` picture. Training, export, evaluation and the
command line ask the registry (`keras_cvae.tasks`) for the task and call these methods instead
of branching on it. What is declared per task elsewhere: its name and the settings it uses
(`config.TASKS`, `used_when`), its run dir's default name (`run_dir.default_name`), and the
client methods for its signatures (`serving_client`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_cvae.conditions import Condition
from keras_cvae.config import RunConfig
from keras_cvae.data import LoadedDataset, make_pipeline
from keras_cvae.errors import UsageError
from keras_cvae.evaluation.estimators import ACTIVE_UNIT_THRESHOLD
from keras_cvae.evaluation.report import Figures
from keras_cvae.models.base import VariationalModel
from keras_cvae.plotting import latent_usage_figure
from keras_cvae.run_dir import RunDir


@dataclass(frozen=True)
class Endpoint:
    """One serving signature: a function of tensors and the specs of its inputs."""

    function: Callable[..., dict[str, tf.Tensor]]
    input_signature: list[tf.TensorSpec]


@dataclass(frozen=True)
class EvaluationOptions:
    """What `evaluate.py` asks of any task's evaluation. `judge` False leaves out every metric
    of the reference classifier (conditional accuracy, FID, KID): the likelihoods alone."""

    dataset_name: str
    model_name: str
    iw_samples: int = 100
    seed: int = 0
    limit: int | None = None
    judge: bool = True


@dataclass(frozen=True)
class GenerateRequest:
    """What a `generate` picture shows (the fields are the `generate` command's flags).

    Args:
        label: the first categorical condition's category (name or index), or "all" for one row each.
        conditions: "NAME=VALUE" texts holding conditions at a category or a value.
        num: samples per row.
        seed: seed for the noise.
        style_from: a class model's test image index, whose z is drawn under every category.
        from_test: a completion model's number of test images to complete.
    """

    label: str = "all"
    conditions: tuple[str, ...] = ()
    num: int = 8
    seed: int = 0
    style_from: int | None = None
    from_test: int | None = None


class Task:
    """The interface of a task module (see the module docstring). `name` is the `--task` value
    and `model_class` the Keras model it trains."""

    name: str
    model_class: type[VariationalModel]

    def check(self, config: RunConfig, dataset: LoadedDataset) -> None:
        """A UsageError or DataError, before anything is written, for data this task cannot train on."""

    def build_model(self, config: RunConfig, dataset: LoadedDataset) -> VariationalModel:
        raise NotImplementedError

    def train_pipeline(self, images: np.ndarray, rows: np.ndarray, conditions: tuple[Condition, ...],
                       config: RunConfig, epoch: tf.Variable) -> tf.data.Dataset:
        """The training batches from the training split (see data.make_pipeline)."""
        return make_pipeline(images, rows, config.train.batch_size, shuffle=True, seed=config.train.seed, epoch=epoch,
                             binarize=config.data.dynamic_binarization)

    def validation_rows(self, rows: np.ndarray, conditions: tuple[Condition, ...], config: RunConfig) -> np.ndarray:
        """The validation split's condition rows as validation sees them: all of them here."""
        return rows

    def sample_callback(self, model: VariationalModel, config: RunConfig, dataset: LoadedDataset,
                        run_dir: RunDir, validation_images: np.ndarray) -> keras.callbacks.Callback:
        """The callback that draws `samples/epoch_NNN.png` after every epoch."""
        raise NotImplementedError

    def endpoints(self, model: VariationalModel) -> dict[str, Endpoint]:
        """The SavedModel's signatures, by name."""
        raise NotImplementedError

    def assets(self, model: VariationalModel) -> dict[str, str]:
        """Extra files for the export's assets/ (name → text), beside config.json."""
        return {}

    def evaluate(self, model: Any, dataset: LoadedDataset, output: Path, options: EvaluationOptions,
                 history: list[dict[str, float]] | None = None) -> dict[str, Any]:
        """Every metric on the test set; writes metrics.json, report.md and the figures to
        `output`. `model` is what `loading.load` returned (a Keras model or a SavedModelClient)."""
        raise NotImplementedError

    def needs_test_images(self, request: GenerateRequest) -> bool:
        """Whether `generate` for `request` draws on the dataset's test images."""
        raise NotImplementedError

    def summary(self, metrics: dict[str, Any]) -> str:
        """One line of the headline numbers, for the command line."""
        raise NotImplementedError

    def generate(self, model: Any, request: GenerateRequest, dataset: LoadedDataset | None):
        """The `generate` picture, as a matplotlib figure; a UsageError for a request field that
        does not apply to this task. `dataset` is needed only when `needs_test_images`."""
        raise NotImplementedError


def model_config(model: Any) -> dict[str, Any]:
    """The model's constructor arguments, from a Keras model or a SavedModelClient (what
    `loading.load` gives a task)."""
    return model.get_config() if isinstance(model, keras.Model) else model.config


def latent_usage_results(usage: dict[str, Any], figures: Figures) -> dict[str, Any]:
    """metrics.json's latent-usage keys (evaluation.estimators.latent_usage), its figure saved."""
    figures.save("latent_usage", latent_usage_figure(usage["kl_per_dim"], usage["activity"], ACTIVE_UNIT_THRESHOLD))
    results = {"active_units": usage["active_units"], "latent_activity": [float(v) for v in usage["activity"]]}
    if usage["kl_per_dim"] is not None:  # a prior that factorises over dimensions
        results["kl_per_dim"] = [float(v) for v in usage["kl_per_dim"]]
    return results


def check_image_shape(image_shape: tuple[int, ...], dataset: LoadedDataset) -> None:
    """A UsageError when the model's images and the dataset's test images differ in shape."""
    if tuple(dataset.x_test.shape[1:]) != tuple(image_shape):
        raise UsageError(
            f"the model takes {tuple(image_shape)} images but {dataset.source} has "
            f"{tuple(dataset.x_test.shape[1:])}; evaluate on the dataset the model was trained on")


# ------------------------------------------------------------------------------------------
# In-graph checks for serving signatures: a signature call does not enforce its declared
# shapes at run time, so wrong shapes, labels and batch mismatches fail here with messages.


def shape_check(tensor: tf.Tensor, name: str, item_shape: tuple[int, ...]) -> tf.Operation:
    """An assert that `tensor` is N × `item_shape`, its message naming the expected shape."""
    shape = "×".join(["N", *map(str, item_shape)])
    return tf.debugging.assert_equal(
        tf.shape(tensor)[1:], tf.constant(item_shape, tf.int32), message=f"{name} must have shape {shape}"
    )


def checked(tensor: tf.Tensor, name: str, item_shape: tuple[int, ...], batch_of: tf.Tensor | None = None,
            batch_name: str = "labels") -> tf.Tensor:
    """`tensor` after asserting its per-item shape (and, given `batch_of`, that its batch matches)."""
    checks = [shape_check(tensor, name, item_shape)]
    if batch_of is not None:
        checks.append(tf.debugging.assert_equal(
            tf.shape(tensor)[0], tf.shape(batch_of)[0], message=f"{name} and {batch_name} must have the same batch size"))
    with tf.control_dependencies(checks):
        return tf.identity(tensor)
