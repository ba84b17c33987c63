"""Evaluation: estimator maths, conditional accuracy with known answers, and the evaluate CLI on a
small trained model (SavedModel and run dir give the same numbers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_cli
from keras_cvae.data import NPZ_KEYS, load_dataset
from keras_cvae.evaluation.classifier import reference_classifier
from keras_cvae.evaluation.estimators import (
    KerasBackend,
    elbo_terms,
    generate_samples,
    iw_log_likelihood,
    log_mean_exp,
    marginal_iw_log_likelihood,
    mean_pairwise_distance,
    sample_requests,
)
from keras_cvae.loading import load
from keras_cvae.run_dir import locate

# metrics.json keys of a class model, with their types (the contract in docs/evaluation.md).
CLASS_METRIC_TYPES = {
    "task": str, "likelihood": str, "binarized": bool, "test_elbo": float, "test_reconstruction": float,
    "test_kl": float, "test_nll_iw": float, "iw_samples": int, "num_test_images": int,
    "conditional_accuracy": float, "per_class_accuracy": dict, "per_condition_accuracy": dict,
    "classifier_test_accuracy": float, "fid": float, "kid": float, "fid_samples": int, "per_class_fid": dict,
    "active_units": int, "kl_per_dim": list,
}


def test_log_mean_exp_is_stable_for_very_negative_values():
    values = np.array([[-1e4], [-1e4 - 1.0]])
    expected = -1e4 + np.log((1.0 + np.exp(-1.0)) / 2.0)
    np.testing.assert_allclose(log_mean_exp(values, axis=0), [expected], rtol=1e-12)
    assert np.isfinite(log_mean_exp(np.full((100, 3), -5e4), axis=0)).all()
    np.testing.assert_allclose(log_mean_exp(np.log([[1.0, 2.0, 3.0]]), axis=1), [np.log(2.0)])


class LinearGaussian:
    """z ~ N(0, I₂), x | z ~ N(Wz + b, σ²I₄) with W's columns orthogonal, so that the exact
    posterior is a diagonal Gaussian and log p(x) has a closed form. Behind the ClassModel
    interface (in TensorFlow ops, as models.base.log_importance_weights needs), its encoder
    returns that exact posterior."""

    latent_dim = 2

    def __init__(self) -> None:
        self.w = np.array([[1.5, 0.0], [0.0, -0.8], [0.0, 0.0], [0.0, 0.0]], np.float32)
        self.b = np.array([0.3, -0.2, 0.1, 0.5], np.float32)
        self.sigma = 0.7

    def encode(self, images, labels):
        x = tf.reshape(tf.cast(images, tf.float32), [tf.shape(images)[0], -1])
        precision = 1.0 + np.sum(self.w**2, axis=0) / self.sigma**2  # diagonal, as WᵀW is
        mean = ((x - self.b) @ self.w / self.sigma**2) / precision
        return mean, tf.broadcast_to(tf.constant(-np.log(precision), tf.float32), tf.shape(mean))

    def log_likelihood(self, images, labels, z):
        x = tf.reshape(tf.cast(images, tf.float32), [tf.shape(images)[0], -1])
        residual = x - (z @ self.w.T + self.b)
        return -0.5 * tf.reduce_sum(residual**2 / self.sigma**2 + np.log(2 * np.pi * self.sigma**2), axis=1)

    def log_prior(self, z, labels):
        """Through the prior component, as the CVAE's: N(0, I) over 2 dimensions."""
        from keras_cvae.priors import StandardNormal

        return StandardNormal(2).log_prob(z, tf.zeros([tf.shape(z)[-2], 0]))

    def log_importance_weights(self, images, labels, eps):
        from keras_cvae.models.base import log_importance_weights

        return log_importance_weights(self, images, labels, eps).numpy()

    def log_evidence(self, images) -> np.ndarray:
        x = images.reshape(len(images), -1) - self.b
        covariance = self.w @ self.w.T + self.sigma**2 * np.eye(4)
        _, log_det = np.linalg.slogdet(covariance)
        quadratic = np.einsum("ni,ij,nj->n", x, np.linalg.inv(covariance), x)
        return -0.5 * (quadratic + log_det + 4 * np.log(2 * np.pi))


@pytest.mark.parametrize("num_samples", [1, 5, 200])
def test_iw_estimate_is_exact_when_the_proposal_is_the_exact_posterior(num_samples):
    """Every importance weight p(x, z)/q(z | x) equals p(x) when q is the exact posterior, so the
    estimate is log p(x) for every K and every draw: a closed-form check of the estimator."""
    model = LinearGaussian()
    images = np.random.default_rng(1).normal(size=(7, 2, 2, 1)).astype(np.float32)
    estimate = iw_log_likelihood(model, images, np.zeros(7, np.int32), num_samples, np.random.default_rng(0))
    np.testing.assert_allclose(estimate, model.log_evidence(images), rtol=1e-5, atol=1e-4)


def test_iw_estimate_with_log_prior_and_log_posterior_swapped_is_not_exact(monkeypatch):
    """The check above must catch log-weights that swap log p(z) and log q(z | x)."""
    from keras_cvae.models import base

    model = LinearGaussian()
    images = np.random.default_rng(1).normal(size=(7, 2, 2, 1)).astype(np.float32)
    from keras_cvae.priors import StandardNormal

    posterior = base.gaussian_posterior(*model.encode(images, None))
    monkeypatch.setattr(base, "gaussian_posterior", lambda mean, log_var: StandardNormal(2).distribution(tf.zeros([7, 0])))
    monkeypatch.setattr(model, "log_prior", lambda z, labels: posterior.log_prob(z))
    estimate = iw_log_likelihood(model, images, np.zeros(7, np.int32), 5, np.random.default_rng(0))
    assert np.max(np.abs(estimate - model.log_evidence(images))) > 0.1


def test_cvae_log_weights_match_one_draw_at_a_time_and_any_batching(monkeypatch):
    """The batched log-weights (images and conditions tiled K times in one graph) equal
    log p(x | z_k, c) + log p(z_k | c) − log q(z_k | x, c) computed draw by draw, and the IW
    estimate does not depend on how many decoder rows a call takes."""
    from keras_cvae.evaluation import estimators
    from keras_cvae.models.cvae import CVAE

    model = CVAE(latent_dim=3, hidden_units=(16,), seed=0)
    rng = np.random.default_rng(2)
    images = (rng.random((5, 28, 28, 1)) < 0.3).astype(np.float32)
    labels = rng.integers(0, 10, 5).astype(np.int32)
    eps = rng.standard_normal((7, 5, 3)).astype(np.float32)
    batched = model.log_importance_weights(images, labels, eps).numpy()
    z_mean, z_log_var = model.encode(images, labels)
    posterior = model.posterior(z_mean, z_log_var)
    for k in range(7):
        z = z_mean + posterior.stddev() * eps[k]
        one = model.log_likelihood(images, labels, z) + model.log_prior(z, labels) - posterior.log_prob(z)
        np.testing.assert_allclose(batched[k], one.numpy(), rtol=1e-5)
    backend = KerasBackend(model)
    estimates = []
    for rows in (7, 14, 10_000):  # one image per call, two, all
        monkeypatch.setattr(estimators, "ROWS_PER_CALL", rows)
        estimates.append(iw_log_likelihood(backend, images, labels, 7, np.random.default_rng(3)))
    np.testing.assert_allclose(estimates[0], estimates[1], rtol=1e-6)
    np.testing.assert_allclose(estimates[0], estimates[2], rtol=1e-6)


def test_the_log_weights_of_a_saved_model_are_what_its_writer_computed(tmp_path):
    """A Bernoulli CVAE and its log-weights on fixed noise, written by the implementation before
    the fused likelihood: the in-process path (fused) and the export's signature (unfused) must
    both give them again, to float tolerance."""
    from pathlib import Path

    import keras

    from keras_cvae.export import export_saved_model
    from keras_cvae.serving_client import load_client

    data = Path(__file__).parent / "data"
    model = keras.saving.load_model(data / "cvae_bernoulli_iw.keras", safe_mode=True)
    saved = np.load(data / "cvae_bernoulli_iw_outputs.npz")
    images, labels, eps = saved["images"], saved["labels"], saved["eps"]
    in_process = KerasBackend(model).log_importance_weights(images, labels, eps)
    exported = load_client(export_saved_model(model, tmp_path / "export")).log_importance_weights(images, labels, eps)
    for log_weights in (in_process, exported):
        np.testing.assert_allclose(log_weights, saved["log_weights"], rtol=2e-6, atol=2e-3)


def test_mean_pairwise_distance():
    images = np.zeros((3, 2, 2, 1))
    images[1, 0, 0, 0] = 3.0
    images[2, 0, 0, 0] = 4.0  # distances 3, 4, 1
    assert mean_pairwise_distance(images) == pytest.approx(8.0 / 3.0)


@pytest.fixture(scope="module")
def small_fashion(tmp_path_factory, fashion_dir):
    """6,000 training and 500 test Fashion-MNIST images as a Keras-style .npz."""
    full = load_dataset("fashion_mnist", fashion_dir)
    folder = tmp_path_factory.mktemp("small_fashion")
    arrays = (full.x_train[:6000, ..., 0], full.y_train[:6000, 0].astype(np.uint8), full.x_test[:500, ..., 0],
              full.y_test[:500, 0].astype(np.uint8))
    np.savez(folder / "fashion_small.npz", **dict(zip(NPZ_KEYS, arrays)))
    return folder / "fashion_small.npz"


@pytest.fixture(scope="module")
def small_classifier(small_fashion):
    """The judge `evaluate.py --dataset fashion_mnist --data-dir <small_fashion>` uses: trained here
    once into the tests' cache, then loaded by every evaluation in this module."""
    dataset = load_dataset("fashion_mnist", small_fashion)
    return dataset, reference_classifier(dataset, "fashion_mnist")


class LabelBlindBackend:
    """A 'decoder' that ignores its label: it returns real test images of random classes."""

    latent_dim = 2

    def __init__(self, images):
        self.images = images

    def sample_latent(self, rows, seed):
        return np.zeros((len(rows), self.latent_dim), np.float32)

    def decode(self, z, rows):
        picks = np.random.default_rng(0).integers(0, len(self.images), len(rows))
        return self.images[picks]


class PerfectBackend(LabelBlindBackend):
    """A 'decoder' that returns a real test image of exactly the class asked for, each test image once."""

    def __init__(self, images, labels):
        self.images = images
        self.unused = {c: iter(np.flatnonzero(labels == c)) for c in range(10)}

    def decode(self, z, rows):
        return self.images[[next(self.unused[int(c)]) for c in rows[:, 0]]]


@pytest.mark.slow
def test_conditional_accuracy_known_answers(small_classifier):
    dataset, classifier = small_classifier
    x_test = dataset.x_test.astype(np.float32) / 255.0
    assert classifier.test_accuracy > 0.7
    assert 0.5 < classifier.blurred_test_accuracy <= 1.0
    # Its training blur is off at inference: the same images always get the same classes.
    np.testing.assert_array_equal(classifier.predict(x_test[:64]), classifier.predict(x_test[:64]))
    rng = np.random.default_rng(0)
    requests = sample_requests(dataset.conditions, dataset.y_test, 100, rng)
    blind = classifier.score(generate_samples(LabelBlindBackend(x_test), requests, rng), requests)[0]["labels"]
    assert 0.05 < blind < 0.15
    labels = dataset.y_test[:, 0]
    requests = sample_requests(dataset.conditions, dataset.y_test, int(min(np.bincount(labels.astype(int)))), rng)
    perfect = classifier.score(generate_samples(PerfectBackend(x_test, labels), requests, rng), requests)[0]["labels"]
    assert perfect == pytest.approx(classifier.test_accuracy, abs=0.03)


@pytest.fixture(scope="module")
def trained(small_fashion, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    result = run_cli(
        "train.py", "--dataset", "fashion_mnist", "--data-dir", str(small_fashion), "--epochs", "3",
        "--run-dir", str(root / "run"), "--export", str(root / "export"), "--latent-dim", "8",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.mark.slow
def test_iw_bounds_against_the_elbo(trained, small_fashion):
    backend = KerasBackend(load(locate(trained / "run")))
    dataset = load_dataset("fashion_mnist", small_fashion)
    x, y = dataset.x_test[:300].astype(np.float32) / 255.0, dataset.y_test[:300]
    elbo = elbo_terms(backend, x, y, np.random.default_rng(1))["elbo"]
    k1 = iw_log_likelihood(backend, x, y, 1, np.random.default_rng(2))
    stderr = np.sqrt(elbo.var(ddof=1) / len(x) + k1.var(ddof=1) / len(x))
    assert abs(k1.mean() - elbo.mean()) < 3 * stderr  # K=1 is an unbiased ELBO estimate
    k50 = iw_log_likelihood(backend, x, y, 50, np.random.default_rng(3))
    assert -k50.mean() <= -elbo.mean()  # the IW bound is tighter: NLL_IW ≤ −ELBO


@pytest.mark.slow
def test_knowing_the_class_gains_at_most_ln_k_nats(trained, small_fashion):
    """log p(x | y) − log Σ_y' p(y') p(x | y') = ln K + log p(y | x) ≤ ln K for the uniform p(y): the
    CVAE's conditional NLL can be at most ln 10 = 2.30 nats below its own NLL with the class summed
    out. A larger gap means an evaluation bug (benchmarks/quality.py compares with this bound)."""
    backend = KerasBackend(load(locate(trained / "run")))
    dataset = load_dataset("fashion_mnist", small_fashion)
    x, y = dataset.x_test[:200].astype(np.float32) / 255.0, dataset.y_test[:200]
    conditional = iw_log_likelihood(backend, x, y, 20, np.random.default_rng(4))
    marginal = marginal_iw_log_likelihood(backend, x, 20, np.random.default_rng(5))
    gain = conditional - marginal
    stderr = np.sqrt(gain.var(ddof=1) / len(x))
    assert 0.0 < gain.mean() <= np.log(10) + 3 * stderr  # and the 3-epoch model does use its class


@pytest.mark.slow
def test_evaluate_cli_savedmodel_and_run_dir_agree(trained, small_fashion, small_classifier, tmp_path):
    common = ["--dataset", "fashion_mnist", "--data-dir", str(small_fashion), "--iw-samples", "20",
              "--limit", "200", "--seed", "5"]
    by_export = run_cli("evaluate.py", "--model", str(trained / "export" / "1"), *common, "--output", str(tmp_path / "a"))
    assert by_export.returncode == 0, by_export.stderr[-3000:]
    # The plan comes first, naming K and the judge's cache file (warm here: small_classifier).
    plan = next(line for line in by_export.stdout.splitlines() if line.startswith("Evaluation plan: "))
    assert "K=20 draws each" in plan and "the judge, loaded from " in plan and ".keras" in plan
    assert by_export.stdout.index("Evaluation plan: ") < by_export.stdout.index("importance-weighted")
    by_run = run_cli("evaluate.py", "--model", str(trained / "run"), *common, "--output", str(tmp_path / "b"))
    assert by_run.returncode == 0, by_run.stderr[-3000:]
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())

    for key, kind in CLASS_METRIC_TYPES.items():
        assert isinstance(a[key], kind), key
    assert (a["task"], a["likelihood"], a["binarized"]) == ("classes", "bernoulli", False)
    assert a["num_test_images"] == 200 and a["iw_samples"] == 20
    assert len(a["per_class_accuracy"]) == 10
    assert a["test_nll_iw"] < -a["test_elbo"]
    for key in ("test_elbo", "test_reconstruction", "test_kl", "test_nll_iw", "fid", "kid"):
        assert a[key] == pytest.approx(b[key], rel=1e-4), key
    assert a["fid_samples"] == 200 and a["fid"] > 0 and len(a["per_class_fid"]) == 10
    assert len(a["kl_per_dim"]) == 8 and 0 < a["active_units"] <= 8
    assert a["test_kl"] == pytest.approx(sum(a["kl_per_dim"]), rel=1e-4)  # one KL, two ways

    report = (tmp_path / "a" / "report.md").read_text()
    for figure in ("samples", "reconstructions", "latent_space", "interpolation", "style_transfer", "latent_usage"):
        assert (tmp_path / "a" / f"{figure}.png").is_file()
        assert f"![{figure}]({figure}.png)" in report
    assert (tmp_path / "b" / "elbo_curve.png").is_file()  # a run dir brings its history


@pytest.mark.slow
def test_likelihood_only_evaluation_never_asks_for_the_judge(trained, small_fashion, tmp_path, monkeypatch, capsys):
    from keras_cvae.tasks import EvaluationOptions, classes, get_task

    def no_judge(*args, **kwargs):
        raise AssertionError("the reference classifier was asked for")

    monkeypatch.setattr(classes, "judge_at", no_judge)
    monkeypatch.setattr(classes, "judge_cache_path", no_judge)
    options = EvaluationOptions(dataset_name="fashion_mnist", model_name="run", iw_samples=3, limit=60, judge=False)
    metrics = get_task("classes").evaluate(load(locate(trained / "run")), load_dataset("fashion_mnist", small_fashion),
                                           tmp_path, options)
    assert {"test_elbo", "test_nll_iw", "active_units"} <= set(metrics)
    assert not {"fid", "kid", "conditional_accuracy", "per_class_accuracy"} & set(metrics)
    assert "FID" not in (tmp_path / "report.md").read_text()
    assert "(3) no judge (likelihoods only)" in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_cli_compare(trained, small_fashion, small_classifier, tmp_path):
    result = run_cli(
        "evaluate.py", "--model", str(trained / "run"), "--compare", str(trained / "export"),
        "--data-dir", str(small_fashion), "--iw-samples", "2", "--limit", "50", "--output", str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "comparison.md").read_text()
    assert "| test_elbo |" in table and "| conditional_accuracy |" in table and str(trained / "export" / "1") in table
    assert (tmp_path / "compared" / "metrics.json").is_file()


def test_evaluate_cli_bad_model_path(tmp_path):
    result = run_cli("evaluate.py", "--model", str(tmp_path), "--dataset", "fashion_mnist")
    assert result.returncode == 2
    assert "is neither a SavedModel version dir (saved_model.pb), a run dir (model.keras) nor a checkpoint" in result.stderr


@pytest.mark.slow
def test_a_gated_vamp_prior_run_trains_evaluates_and_generates(small_fashion, small_classifier, tmp_path):
    run, export = tmp_path / "run", tmp_path / "export"
    trained = run_cli("train.py", "--dataset", "fashion_mnist", "--data-dir", str(small_fashion), "--epochs", "1",
                      "--limit", "1000", "--prior", "vamp", "--activation", "gated", "--hidden-units", "300,300",
                      "--latent-dim", "40", "--run-dir", str(run), "--export", str(export))
    assert trained.returncode == 0, trained.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())["model"]
    assert (config["prior"], config["activation"], config["latent_dim"]) == ("vamp", "gated", 40)
    evaluated = run_cli("evaluate.py", "--model", str(export / "1"), "--data-dir", str(small_fashion),
                        "--iw-samples", "5", "--limit", "100", "--output", str(tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["test_nll_iw"] < -metrics["test_elbo"] + 5 and "kl_per_dim" not in metrics  # no per-dimension KL
    assert 0 <= metrics["conditional_accuracy"] <= 1 and metrics["fid"] > 0
    generated = run_cli("-m", "keras_cvae", "generate", "--model", str(export), "--out", str(tmp_path / "grid.png"))
    assert generated.returncode == 0 and (tmp_path / "grid.png").stat().st_size > 0, generated.stderr[-3000:]


def test_the_judge_cache_follows_the_judges_definition(small_fashion, tmp_path, monkeypatch):
    """Same data and definition: the same cache file in every process. A changed recipe or a
    changed network (here: one more pooled convolution) is a different file, and is not cached."""
    import dataclasses

    from keras_cvae.evaluation import classifier

    dataset = load_dataset("fashion_mnist", small_fashion)
    stem = classifier.judge_cache_path(dataset, "fashion_mnist", tmp_path)
    assert stem == classifier.judge_cache_path(dataset, "fashion_mnist", tmp_path)
    (tmp_path / f"{stem.name}.keras").write_bytes(b"")
    (tmp_path / f"{stem.name}.json").write_text("{}")
    assert classifier.is_judge_cached(stem)
    other_recipe = classifier.judge_cache_path(dataset, "fashion_mnist", tmp_path,
                                               dataclasses.replace(classifier.RECIPE, dropout=0.2))
    monkeypatch.setattr(classifier, "SMALLEST_MAP", 4)
    other_network = classifier.judge_cache_path(dataset, "fashion_mnist", tmp_path)
    assert len({stem, other_recipe, other_network}) == 3
    assert not classifier.is_judge_cached(other_recipe) and not classifier.is_judge_cached(other_network)


@pytest.mark.parametrize(("images", "epochs"), [(60_000, 6), (6_000, 13), (3_089, 24), (10, 300)])
def test_a_small_training_set_gets_the_judges_minimum_steps(images, epochs):
    """6 epochs, or as many as 300 steps of 256 images take (ceil(3089 / 256) = 13 per epoch)."""
    from keras_cvae.evaluation.classifier import RECIPE

    assert RECIPE.epochs_for(images) == epochs
