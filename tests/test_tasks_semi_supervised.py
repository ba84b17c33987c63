"""Task "semi_supervised": the choice of labels, the mixed batches, the refusal of bad --labeled,
and a run end to end (export with `classify`, evaluation with the class summed out)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from conftest import blob_dataset, blobs, project_lines, run_cli, write_idx_folder
from keras_cvae.config import RunConfig
from keras_cvae.data import make_mixed_pipeline
from keras_cvae.errors import DataError, UsageError
from keras_cvae.run_dir import RunDir
from keras_cvae.tasks import get_task
from keras_cvae.tasks.semi_supervised import labeled_per_batch, select_labeled

TASK = get_task("semi_supervised")


def semi_config(labeled: int, **data) -> RunConfig:
    config = RunConfig()
    config.data.task, config.data.labeled = "semi_supervised", labeled
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


def test_labels_are_balanced_across_classes_and_drawn_by_the_seed():
    rows = np.repeat(np.arange(4), 50).astype("float32")[:, None]
    chosen = select_labeled(rows, 10, ("a", "b", "c", "d"), seed=0)
    counts = np.bincount(rows[chosen, 0].astype(int), minlength=4)
    assert sorted(counts) == [2, 2, 3, 3] and len(set(chosen)) == 10
    np.testing.assert_array_equal(chosen, select_labeled(rows, 10, ("a", "b", "c", "d"), seed=0))
    assert not np.array_equal(chosen, select_labeled(rows, 10, ("a", "b", "c", "d"), seed=1))
    short = np.concatenate([rows[:150], rows[-5:]])  # class d has 5 images
    with pytest.raises(DataError, match="class 'd' has 5 training images, fewer than its share of 10"):
        select_labeled(short, 40, ("a", "b", "c", "d"), seed=0)


def test_labeled_per_batch_is_at_least_an_eighth_and_follows_the_data_share():
    assert labeled_per_batch(128, 100, 54000) == 16
    assert labeled_per_batch(128, 27000, 54000) == 64
    assert labeled_per_batch(128, 53999, 54000) == 127


def test_every_batch_mixes_labelled_and_unlabelled_images_in_the_stated_share():
    labeled_images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) + 200
    rows = (np.arange(10) % 3).astype("float32")[:, None]
    unlabeled = np.arange(45, dtype=np.uint8).reshape(45, 1, 1, 1)
    dataset = make_mixed_pipeline(labeled_images, rows, unlabeled, batch_size=8, labeled_per_batch=3, seed=0)
    epochs = [[(x.numpy(), y.numpy()) for x, y in dataset] for _ in range(2)]
    for batches in epochs:
        assert len(batches) == 9  # 45 unlabelled images, 5 a batch
        for images, conditions in batches:
            assert np.sum(conditions[:, 0] >= 0) == 3 and np.all(images[conditions[:, 0] >= 0] >= 200)
            np.testing.assert_array_equal(conditions[images[:, 0, 0, 0] < 200], -1)
        seen = np.concatenate([images[images < 200] for images, _ in batches])
        np.testing.assert_array_equal(np.sort(seen), np.arange(45))  # each unlabelled image once an epoch
        labelled = np.concatenate([images[images >= 200] for images, _ in batches]) - 200
        assert np.bincount(labelled, minlength=10).min() >= 2  # 27 draws: every label is used
        for images, conditions in batches:  # each labelled image keeps its own label
            keep = images[:, 0, 0, 0] >= 200
            np.testing.assert_array_equal(conditions[keep, 0], rows[images[keep, 0, 0, 0] - 200, 0])
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])  # a new order every epoch


@pytest.mark.parametrize(("labeled", "message"), [
    (2, "`labeled` 2 is fewer than the 3 classes; every class needs a label"),
    (271, "`labeled` 271 is more than the 270 training images"),
])
def test_bad_labeled_counts_are_refused(labeled, message):
    with pytest.raises(UsageError, match=message):
        TASK.check(semi_config(labeled), blob_dataset())


def test_validation_keeps_the_stated_number_of_labels_balanced_across_classes():
    rows = np.tile(np.arange(3), 20).astype("float32")[:, None]
    kept = TASK.validation_rows(rows, blob_dataset().conditions, semi_config(9, validation_labels=7))
    known = kept[:, 0] >= 0
    assert known.sum() == 7 and sorted(np.bincount(kept[known, 0].astype(int))) == [2, 2, 3]
    np.testing.assert_array_equal(kept[known], rows[known])
    assert TASK.validation_rows(rows, blob_dataset().conditions, semi_config(9)) is rows


@pytest.mark.parametrize(("count", "message"), [
    (2, "`validation_labels` 2 must be between the 3 classes and the 30 validation images"),
    (31, "`validation_labels` 31 must be between the 3 classes and the 30 validation images"),
])
def test_bad_validation_label_counts_are_refused(count, message):
    with pytest.raises(UsageError, match=message):
        TASK.check(semi_config(9, validation_labels=count), blob_dataset())


def test_the_cli_refuses_too_few_labels_in_one_line_and_writes_nothing(tmp_path):
    images, labels = blobs(40)
    folder = write_idx_folder(tmp_path / "idx", images[..., 0], labels, images[:10, ..., 0], labels[:10])
    result = run_cli("train.py", "--data-dir", str(folder), "--task", "semi_supervised", "--labeled", "5",
                     "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert project_lines(result.stderr) == [
        "train.py: error: --labeled 5 is fewer than the 10 classes; every class needs a label"]
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory):
    from keras_cvae.training import train

    root = tmp_path_factory.mktemp("semi")
    config = semi_config(9)
    config.model.latent_dim, config.model.hidden_units = 4, (32,)
    config.train.epochs, config.train.batch_size, config.train.export = 3, 32, str(root / "export")
    # The epoch with the best q(y|x) accuracy on 6 labelled validation images is the one kept.
    config.train.early_stopping, config.train.monitor, config.data.validation_labels = 3, "val_accuracy", 6
    config.model.classifier_average = 0.5  # q(y|x) outside training is the averaged classifier
    dataset = blob_dataset()
    return dataset, train(config, dataset, root / "run"), root


def test_a_run_exports_classify_and_evaluates_with_the_class_summed_out(blob_run):
    from keras_cvae.evaluation.estimators import (
        KerasBackend,
        class_log_likelihoods,
        iw_log_likelihood,
        marginal_elbo_terms,
        marginal_iw_log_likelihood,
    )
    from keras_cvae.serving_client import load_client
    from keras_cvae.tasks import EvaluationOptions

    dataset, result, root = blob_run
    assert {"accuracy", "val_accuracy"} <= set(result.history[-1])
    accuracies = [row["val_accuracy"] for row in result.history]
    np.testing.assert_allclose(np.multiply(accuracies, 6), np.round(np.multiply(accuracies, 6)), atol=1e-4)  # 6 labels
    best = 1 + int(np.argmax(accuracies))
    kept = keras.saving.load_model(RunDir(root / "run").checkpoint_path(best))
    x = dataset.x_test[:8].astype("float32") / 255.0
    np.testing.assert_allclose(result.model.classify(x), kept.classify(x), atol=1e-6)
    client = load_client(result.export_dir)
    x = dataset.x_test[:12].astype("float32") / 255.0
    probabilities = client.classify(x)
    assert probabilities.shape == (12, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities, result.model.classify(x), atol=1e-5)
    live = keras.ops.softmax(result.model.classifier(x)).numpy()
    assert np.abs(probabilities - live).max() > 1e-3  # the export classifies with the average, not the live weights

    # The importance-weighted bound on log p(x) is tighter than the marginal ELBO, and knowing the
    # class can gain at most ln K nats: log p(x) ≥ log p(y) + log p(x | y).
    backend = KerasBackend(result.model)
    elbo = marginal_elbo_terms(backend, x, np.random.default_rng(0))["elbo"]
    log_px = marginal_iw_log_likelihood(backend, x, 20, np.random.default_rng(1))
    assert log_px.mean() >= elbo.mean()
    log_px_given_y = iw_log_likelihood(backend, x, dataset.y_test[:12], 20, np.random.default_rng(2))
    assert log_px_given_y.mean() - log_px.mean() <= np.log(3) + 0.5
    # Column y of the per-class estimates is class y's: the same draws give iw_log_likelihood's
    # figure for that class, and log p(x) is their log-mean-exp.
    per_class = class_log_likelihoods(backend, x, 20, np.random.default_rng(1))
    np.testing.assert_allclose(np.logaddexp.reduce(per_class.astype("float64"), axis=1) - np.log(3),
                               log_px, rtol=1e-6)
    for label in range(3):
        first_draws = np.random.default_rng(1)
        for earlier in range(label):  # the classes before it use up the generator first
            iw_log_likelihood(backend, x, np.full((12, 1), earlier, np.float32), 20, first_draws)
        np.testing.assert_allclose(per_class[:, label],
                                   iw_log_likelihood(backend, x, np.full((12, 1), label, np.float32), 20, first_draws),
                                   rtol=1e-6)

    options = EvaluationOptions(dataset_name="blobs", model_name="export", iw_samples=2, limit=30)
    metrics = TASK.evaluate(client, dataset, root / "eval", options)
    assert metrics["task"] == "semi_supervised" and metrics["labeled"] == 9
    generative = metrics["generative_test_accuracy"] * 30  # argmax_y p(x | y) on 30 test images
    assert 0 <= generative <= 30 and generative == pytest.approx(round(generative))
    predicted = np.argmax(client.classify(dataset.x_test[:30].astype("float32") / 255.0), axis=1)
    assert metrics["test_accuracy"] == pytest.approx(np.mean(predicted == dataset.y_test[:30, 0]))
    assert metrics["test_nll_iw"] <= -metrics["test_elbo"] + 5.0  # K=2 on 30 images: a loose check
    assert (root / "eval" / "least_sure.png").is_file()
    report = (root / "eval" / "report.md").read_text()
    assert "q(y\\|x) accuracy on the test set (trained with 9 labels)" in report
    assert f"p(x\\|y) on the test set (K=2) | {metrics['generative_test_accuracy']:.4f} |" in report
    saved = json.loads((root / "eval" / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
