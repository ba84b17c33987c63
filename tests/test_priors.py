"""The priors: normalised, their KLs right, and every consumer going through them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from conftest import assert_keras_round_trip
from keras_cvae import config
from keras_cvae.models.cvae import CVAE
from keras_cvae.priors import PRIORS, GaussianPrior, Prior, StandardNormal, get_prior

tfd = tfp.distributions


def test_the_registry_is_the_flag_choices():
    assert tuple(PRIORS) == config.PRIORS
    with pytest.raises(ValueError, match="prior must be one of standard, got 'flat'"):
        get_prior("flat", 2)


@pytest.mark.parametrize("name", list(PRIORS))
def test_log_prob_is_normalised_in_two_dimensions(name):
    prior = get_prior(name, 2)
    axis = np.linspace(-7.0, 7.0, 401, dtype="float32")
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    density = np.exp(prior.log_prob(tf.constant(grid), tf.zeros([len(grid), 0])).numpy()).reshape(401, 401)
    assert np.trapezoid(np.trapezoid(density, axis), axis) == pytest.approx(1.0, abs=1e-3)


def test_the_monte_carlo_kl_is_unbiased_against_the_closed_form():
    prior = StandardNormal(3)
    mean, scale = np.array([[1.5, -0.5, 0.2]], "float32"), np.array([[0.4, 1.8, 1.0]], "float32")
    posterior = tfd.MultivariateNormalDiag(mean, scale)
    closed = prior.kl(posterior, None, tf.zeros([1, 0])).numpy()[0]
    z = posterior.sample(200_000, seed=3)  # [S, 1, 3]
    estimates = Prior.kl(prior, posterior, z, tf.zeros([1, 0])).numpy()[:, 0]  # the interface's default
    stderr = estimates.std() / np.sqrt(len(estimates))
    assert abs(estimates.mean() - closed) < 4 * stderr and stderr < 0.01
    per_dim = prior.kl_per_dimension(posterior, tf.zeros([1, 0])).numpy()
    assert per_dim.sum() == pytest.approx(closed, rel=1e-5)


def test_samples_follow_the_prior_and_repeat_for_a_seed():
    prior = StandardNormal(4)
    conditions = tf.zeros([50_000, 0])
    z = prior.sample(conditions, seed=tf.constant([1, 2])).numpy()
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=0.02)
    np.testing.assert_array_equal(z, prior.sample(conditions, seed=tf.constant([1, 2])).numpy())
    assert isinstance(prior, GaussianPrior) and prior.factorises


class Shifted(GaussianPrior):
    """A prior N(2, 0.5²) per dimension: where a consumer assumed N(0, I), its numbers would move."""

    def moments(self, conditions):
        mean = tf.fill(tf.stack([tf.shape(conditions)[0], self.latent_dim]), 2.0)
        return mean, 0.5 * tf.ones_like(mean)


def test_every_consumer_goes_through_the_model_prior():
    model = CVAE(latent_dim=2, hidden_units=(8,), seed=0)
    images = np.random.default_rng(0).random((5, 28, 28, 1)).astype("float32")
    labels = np.arange(5)
    eps = np.random.default_rng(1).standard_normal((3, 5, 2)).astype("float32")
    before = {"iw": model.log_importance_weights(images, labels, eps).numpy(),
              "kl": model.elbo_terms(images, labels, eps[0])["kl"].numpy(),
              "loss": model.compute_terms(images, labels)["kl_loss"].numpy()}
    model.prior = Shifted(2)
    z = model.sample_latent(tf.constant(labels), tf.constant([0, 7])).numpy()
    assert abs(z.mean() - 2.0) < 1.0  # drawn from the shifted prior
    after = {"iw": model.log_importance_weights(images, labels, eps).numpy(),
             "kl": model.elbo_terms(images, labels, eps[0])["kl"].numpy(),
             "loss": model.compute_terms(images, labels)["kl_loss"].numpy()}
    for key in before:
        assert not np.allclose(before[key], after[key]), key


def test_the_prior_survives_the_keras_round_trip(tmp_path):
    model = CVAE(latent_dim=3, hidden_units=(8,), seed=0)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (16, 28, 28, 1)).astype("uint8"), rng.integers(0, 10, 16)

    def same(loaded, original):
        assert loaded.prior_name == "standard" and type(loaded.prior) is StandardNormal
        seed = tf.constant([0, 5])
        np.testing.assert_array_equal(loaded.sample_latent(tf.constant(labels[:4]), seed),
                                      original.sample_latent(tf.constant(labels[:4]), seed))

    assert_keras_round_trip(model, images, labels, tmp_path / "prior.keras", same)
