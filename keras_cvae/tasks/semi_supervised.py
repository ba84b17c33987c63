"""Task "semi_supervised": the class-conditional model learnt from `--labeled` labels, the class
latent for every other training image (Kingma et al. 2014, M2; the model: models.semi_supervised).

It is the `classes` task with three differences: training batches mix labelled and unlabelled
images (`labeled_per_batch`), the export adds `classify` (images → q(y | x)), and evaluation's
ELBO and importance-weighted NLL bound log p(x) with the class summed out, beside q(y | x)'s test
accuracy and a figure of the test images it is least sure about. Sample grids, the other
signatures and `generate` are the classes task's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from keras_cvae.conditions import CATEGORICAL, Condition
from keras_cvae.config import RunConfig
from keras_cvae.data import LoadedDataset, make_mixed_pipeline, make_pipeline, split_training_set
from keras_cvae.errors import DataError, UsageError
from keras_cvae.evaluation.estimators import (
    ClassModel,
    class_log_likelihoods,
    classify,
    generative_accuracy,
    marginal_elbo_terms,
    marginal_log_likelihood,
)
from keras_cvae.evaluation.report import Figures
from keras_cvae.models.semi_supervised import SemiSupervisedCVAE
from keras_cvae.plotting import captioned_images_figure
from keras_cvae.tasks.base import Endpoint, EvaluationOptions, checked, model_config
from keras_cvae.tasks.classes import ClassesTask

# The least share of each training batch that is labelled (more when labels are commoner than
# this in the training set): enough labelled images per step for a steady classification term.
LEAST_LABELED_SHARE = 1 / 8
LEAST_SURE_SHOWN = 16


def select_labeled(rows: np.ndarray, count: int, class_names: tuple[str, ...], seed: int) -> np.ndarray:
    """Sorted indices of the `count` training images that keep their label: count // K of each
    class, one more for count % K classes drawn at random, every choice drawn by `seed`."""
    labels = np.asarray(rows).reshape(len(rows), -1)[:, 0].astype(int)
    rng = np.random.default_rng(seed)
    num_classes = len(class_names)
    per_class = np.full(num_classes, count // num_classes)
    per_class[rng.choice(num_classes, count % num_classes, replace=False)] += 1
    chosen = []
    for label, wanted in enumerate(per_class):
        pool = np.flatnonzero(labels == label)
        if len(pool) < wanted:
            raise DataError(f"`labeled` {count}: class {class_names[label]!r} has {len(pool)} training images, "
                            f"fewer than its share of {wanted}; lower `labeled`")
        chosen.append(rng.choice(pool, wanted, replace=False))
    return np.sort(np.concatenate(chosen))


def labeled_per_batch(batch_size: int, num_labeled: int, num_train: int) -> int:
    """How many of a batch's images are labelled: the training set's share of labels, but at least
    LEAST_LABELED_SHARE of the batch, and at least one image of each kind."""
    share = max(LEAST_LABELED_SHARE, num_labeled / num_train)
    return min(batch_size - 1, max(1, int(np.ceil(batch_size * share))))


def training_split(config: RunConfig, dataset: LoadedDataset) -> tuple[np.ndarray, np.ndarray]:
    """The training images and rows that training uses: after `limit` and the validation hold-out."""
    return split_training_set(dataset.x_train, dataset.y_train, config.data)[0]


class SemiSupervisedTask(ClassesTask):
    name = "semi_supervised"
    model_class = SemiSupervisedCVAE

    def check(self, config: RunConfig, dataset: LoadedDataset) -> None:
        conditions = dataset.conditions
        if len(conditions) != 1 or conditions[0].kind != CATEGORICAL:
            raise UsageError(f"`task` semi_supervised needs one categorical condition (the class); {dataset.source} has "
                             f"{', '.join(c.name for c in conditions) or 'none'}: pick one with `conditions` NAME")
        num_classes, labeled = len(conditions[0].values), config.data.labeled
        (_, y_train), (_, y_val) = split_training_set(dataset.x_train, dataset.y_train, config.data)
        num_train = len(y_train)
        if labeled < num_classes:
            raise UsageError(f"`labeled` {labeled} is fewer than the {num_classes} classes; every class needs a label")
        if labeled > num_train:
            raise UsageError(f"`labeled` {labeled} is more than the {num_train} training images "
                             "(after `limit` and the validation hold-out)")
        select_labeled(y_train, labeled, conditions[0].values, config.train.seed)
        wanted = config.data.validation_labels
        if wanted is not None:
            if not num_classes <= wanted <= len(y_val):
                raise UsageError(f"`validation_labels` {wanted} must be between the {num_classes} classes and the "
                                 f"{len(y_val)} validation images")
            select_labeled(y_val, wanted, conditions[0].values, config.train.seed + 1)

    def build_model(self, config: RunConfig, dataset: LoadedDataset) -> SemiSupervisedCVAE:
        return SemiSupervisedCVAE(**self.model_arguments(config, dataset), num_labeled=config.data.labeled,
                                  num_train=len(training_split(config, dataset)[0]),
                                  classifier_weight=config.model.classifier_weight,
                                  classifier_step=config.model.classifier_step,
                                  classifier_average=config.model.classifier_average)

    def train_pipeline(self, images: np.ndarray, rows: np.ndarray, conditions: tuple[Condition, ...],
                       config: RunConfig, epoch: tf.Variable) -> tf.data.Dataset:
        """Batches of unlabelled images (rows −1) and, in the stated share, labelled ones."""
        tc = config.train
        labeled = np.zeros(len(images), bool)
        labeled[select_labeled(rows, config.data.labeled, conditions[0].values, tc.seed)] = True
        if labeled.all():
            return make_pipeline(images, rows, tc.batch_size, shuffle=True, seed=tc.seed, epoch=epoch,
                                 binarize=config.data.dynamic_binarization)
        return make_mixed_pipeline(images[labeled], rows[labeled], images[~labeled], tc.batch_size,
                                   labeled_per_batch(tc.batch_size, int(labeled.sum()), len(images)),
                                   seed=tc.seed, epoch=epoch, binarize=config.data.dynamic_binarization)

    def validation_rows(self, rows: np.ndarray, conditions: tuple[Condition, ...], config: RunConfig) -> np.ndarray:
        """With `validation_labels` N, only N held-out images (balanced across classes, chosen by
        `seed`) keep their label, so that `val_accuracy` and a model chosen by it use N labels;
        validation's ELBO sums every label out either way."""
        count = config.data.validation_labels
        if count is None:
            return rows
        kept = np.full(len(rows), -1.0, np.float32).reshape(-1, 1)
        chosen = select_labeled(rows, count, conditions[0].values, config.train.seed + 1)
        kept[chosen] = np.asarray(rows, np.float32).reshape(len(rows), -1)[chosen, :1]
        return kept

    # -- serving ------------------------------------------------------------------------------

    def endpoints(self, model: SemiSupervisedCVAE) -> dict[str, Endpoint]:
        """The classes task's signatures, and `classify`: images → probabilities [N, K]."""

        def classify_images(images):
            return {"probabilities": model.classify(checked(images, "images", model.image_shape))}

        image_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="images")
        return {**super().endpoints(model), "classify": Endpoint(classify_images, [image_spec])}

    # -- evaluation ---------------------------------------------------------------------------

    @staticmethod
    def _likelihoods(backend, x_test, y_test, iw_samples, rng):
        """Bounds on log p(x), the class summed out: exactly over y for the IW estimate, under
        q(y | x) for the ELBO (the test labels are not used); and `generative_test_accuracy`,
        how often the generative model's own class posterior p(y | x) ∝ p(x | y), from the same
        estimates, picks the true class: q(y | x) learns from the unlabelled images by following it."""
        terms = marginal_elbo_terms(backend, x_test, rng)
        per_class = class_log_likelihoods(backend, x_test, iw_samples, rng)
        return (terms, marginal_log_likelihood(per_class),
                {"generative_test_accuracy": generative_accuracy(per_class, y_test[:, 0])})

    def _own_metrics(self, model: Any, backend: ClassModel, x_test: np.ndarray, y_test: np.ndarray,
                     figures: Figures) -> dict[str, Any]:
        """q(y | x)'s test accuracy (overall and per class), the number of labels it was trained
        with, and the figure of the test images it is least sure about."""
        names = backend.conditions[0].values
        probabilities = classify(backend, x_test)
        truth = y_test[:, 0].astype(int)
        correct = np.argmax(probabilities, axis=1) == truth
        entropy = -np.sum(probabilities * np.log(np.maximum(probabilities, 1e-12)), axis=1)
        unsure = np.argsort(-entropy)[:LEAST_SURE_SHOWN]
        captions = []
        for index in unsure:
            first, second = np.argsort(-probabilities[index])[:2]
            captions.append(f"is {names[truth[index]]}\n{names[first]} {probabilities[index, first]:.2f}, "
                            f"{names[second]} {probabilities[index, second]:.2f}")
        figures.save("least_sure", captioned_images_figure(
            x_test[unsure], captions, title="test images q(y|x) is least sure about (highest entropy)"))
        return {
            "test_accuracy": float(correct.mean()),
            "per_class_test_accuracy": {name: float(correct[truth == c].mean()) for c, name in enumerate(names)
                                        if np.any(truth == c)},
            "labeled": int(model_config(model)["num_labeled"]),
        }

    def _report(self, m: dict[str, Any], options: EvaluationOptions) -> list[str]:
        lines = super()._report(m, options)
        table_end = lines.index("|---|---:|") + 1
        lines[table_end:table_end] = [
            f"| q(y\\|x) accuracy on the test set (trained with {m['labeled']} labels) | {m['test_accuracy']:.4f} |",
            f"| the generative model's own p(y\\|x) ∝ p(x\\|y) on the test set (K={m['iw_samples']}) | "
            f"{m['generative_test_accuracy']:.4f} |",
        ]
        lines[2:2] = ["ELBO and NLL bound log p(x), the class summed out: the ELBO under q(y|x), the "
                      "importance-weighted NLL exactly over y with K samples of z per class.", ""]
        return lines

    def summary(self, metrics: dict[str, Any]) -> str:
        return (f"q(y|x) test accuracy {metrics['test_accuracy']:.4f} from {metrics['labeled']} labels, "
                + super().summary(metrics))
