"""The pixel likelihoods: normalised, their means and samples consistent, their state saved."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_keras_round_trip
from keras_cvae import config
from keras_cvae.likelihoods import (
    INITIAL_LOGISTIC_SCALE,
    LIKELIHOODS,
    MIN_LOGISTIC_SCALE,
    Bernoulli,
    DiscretizedLogistic,
    Gaussian,
    get_likelihood,
)
from keras_cvae.models.cvae import CVAE

SHAPE = (1, 1, 1)


def test_the_registry_is_the_flag_choices():
    assert tuple(LIKELIHOODS) == config.LIKELIHOODS
    for name, kind in LIKELIHOODS.items():
        likelihood = get_likelihood(name, (4, 4, 3))
        assert type(likelihood) is kind and likelihood.parameters_per_channel >= 1
    with pytest.raises(ValueError, match=f"likelihood must be one of {', '.join(LIKELIHOODS)}"):
        get_likelihood("poisson", SHAPE)


def test_bernoulli_sums_to_one_over_both_values():
    logits = tf.constant(np.linspace(-6, 6, 7, dtype="float32").reshape(7, 1, 1, 1))
    p0 = Bernoulli(SHAPE).pixel_log_prob(tf.zeros_like(logits), logits)
    p1 = Bernoulli(SHAPE).pixel_log_prob(tf.ones_like(logits), logits)
    np.testing.assert_allclose(np.exp(p0) + np.exp(p1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.exp(p1), Bernoulli(SHAPE).mean(logits), rtol=1e-6)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_the_fused_log_prob_is_the_sum_of_the_pixel_log_probs(name):
    likelihood = get_likelihood(name, (5, 4, 3))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 2, (6, 5, 4, 3)).astype("float32") if name == "bernoulli" else \
        rng.integers(0, 256, (6, 5, 4, 3)).astype("float32") / 255.0
    outputs = tf.constant(rng.normal(0, 3, (6, 5, 4, 3 * likelihood.parameters_per_channel)).astype("float32"))
    expected = np.sum(likelihood.pixel_log_prob(images, outputs).numpy().astype("float64"), axis=(1, 2, 3))
    for fused in (False, True):
        np.testing.assert_allclose(likelihood.log_prob(images, outputs, fused=fused), expected, rtol=1e-5)
        compiled = tf.function(lambda x, o, fused=fused: likelihood.log_prob(x, o, fused=fused))
        np.testing.assert_allclose(compiled(images, outputs), expected, rtol=1e-5)


def test_gaussian_density_integrates_to_one():
    likelihood = Gaussian(SHAPE)
    likelihood.pixel_scale_raw.assign(np.full(SHAPE, -1.0, "float32"))
    grid = np.linspace(-3.0, 4.0, 20001, dtype="float32")
    outputs = tf.fill([len(grid), 1, 1, 1], 0.4)
    density = np.exp(likelihood.pixel_log_prob(tf.constant(grid.reshape(-1, 1, 1, 1)), outputs).numpy().ravel())
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(("loc_logit", "scale_raw"), [(0.3, -1.0), (-2.0, 0.5), (4.0, -4.0)])
def test_discretized_logistic_is_a_probability_mass_with_pixelcnn_bins(loc_logit, scale_raw):
    values = np.arange(256, dtype="float32").reshape(256, 1, 1, 1)
    outputs = np.concatenate([np.full_like(values, loc_logit), np.full_like(values, scale_raw)], axis=-1)
    log_p = DiscretizedLogistic(SHAPE).pixel_log_prob(values / 255.0, outputs).numpy().ravel().astype("float64")
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-4)
    # By hand: P(x) = F(x + ½) − F(x − ½), the end bins taking the tails.
    loc = 255.0 / (1.0 + np.exp(-loc_logit))
    scale = MIN_LOGISTIC_SCALE + INITIAL_LOGISTIC_SCALE * np.exp(scale_raw)
    inner = 0.5 * (1.0 + np.tanh((np.arange(255) + 0.5 - loc) / (2.0 * scale)))  # the logistic CDF at the bin edges
    expected = np.log(np.maximum(np.diff(np.concatenate([[0.0], inner, [1.0]])), 1e-300))
    finite = expected > -30
    np.testing.assert_allclose(log_p[finite], expected[finite], atol=2e-3)


def test_discretized_logistic_gradients_stay_finite_at_the_extremes():
    pixels = tf.constant([0.0, 1.0, 0.0, 128 / 255.0])[:, None, None, None]
    loc_logits = tf.Variable([[8.0], [-8.0], [0.0], [0.0]])
    scale_raw = tf.Variable([[-10.0], [-10.0], [6.0], [-10.0]])
    with tf.GradientTape() as tape:
        outputs = tf.concat([loc_logits, scale_raw], axis=-1)[:, None, None, :]
        total = tf.reduce_sum(DiscretizedLogistic(SHAPE).pixel_log_prob(pixels, outputs))
    assert np.isfinite(total.numpy())
    assert all(np.all(np.isfinite(g.numpy())) for g in tape.gradient(total, [loc_logits, scale_raw]))


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_samples_have_the_mean_image_and_the_pixel_range(name):
    likelihood = get_likelihood(name, (2, 2, 1))
    outputs = np.random.default_rng(0).normal(size=(1, 2, 2, likelihood.parameters_per_channel))
    if name == "discretized_logistic":
        outputs[..., 1] = -2.0  # a scale of 2 levels: the clipping at 0 and 255 leaves the mean alone
    outputs = tf.constant(outputs, tf.float32)
    repeated = tf.tile(outputs, [4000, 1, 1, 1])
    samples = likelihood.sample(repeated, seed=tf.constant([1, 2])).numpy()
    assert samples.shape == (4000, 2, 2, 1) and samples.min() >= 0.0 and samples.max() <= 1.0
    if name == "bernoulli":
        assert set(np.unique(samples)) <= {0.0, 1.0}
    if name == "discretized_logistic":
        np.testing.assert_allclose(samples * 255.0, np.round(samples * 255.0), atol=1e-3)
    # The Gaussian's draws are clipped to [0, 1], which moves their mean; the others' are unbiased.
    tolerance = 0.05 if name == "gaussian" else 0.03
    np.testing.assert_allclose(samples.mean(axis=0), likelihood.mean(outputs).numpy()[0], atol=tolerance)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_each_likelihood_survives_the_keras_round_trip(tmp_path, name):
    model = CVAE(latent_dim=3, hidden_units=(8,), likelihood=name, seed=0)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (16, 28, 28, 1)).astype("uint8"), rng.integers(0, 10, 16)
    if name == "gaussian":
        model.likelihood.pixel_scale_raw.assign(rng.normal(size=(28, 28, 1)).astype("float32"))
    z = rng.standard_normal((4, 3)).astype("float32")
    unit = images[:4].astype("float32") / 255.0

    def same(loaded, original):
        assert loaded.likelihood_name == name and type(loaded.likelihood) is LIKELIHOODS[name]
        np.testing.assert_allclose(loaded.log_likelihood(unit, labels[:4], z),
                                   original.log_likelihood(unit, labels[:4], z), rtol=1e-5)
        for saved, restored in zip(original.likelihood.weights, loaded.likelihood.weights, strict=True):
            np.testing.assert_array_equal(saved.numpy(), restored.numpy())

    assert_keras_round_trip(model, images, labels, tmp_path / f"{name}.keras", same)


def test_a_gaussian_model_saved_by_version_0_1_still_loads():
    """tests/data/cvae_0.1_gaussian.keras: keras_cvae 0.1 kept the σ weight on the model (set to
    0.7, then one training step); it comes back into the likelihood, optimizer state included."""
    import keras

    from conftest import REPO_ROOT

    model = keras.saving.load_model(REPO_ROOT / "tests" / "data" / "cvae_0.1_gaussian.keras", safe_mode=True)
    assert type(model.likelihood) is Gaussian and int(model.optimizer.iterations) == 1
    np.testing.assert_allclose(model.likelihood.pixel_scale_raw.numpy(), 0.699, atol=2e-3)
    assert float(model.kl_weight.numpy()) == 1.0
