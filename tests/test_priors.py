"""The priors: normalised, their KLs right, and every consumer going through them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from conftest import assert_keras_round_trip
from keras_cvae import config
from keras_cvae.models.cvae import CVAE
from keras_cvae.priors import (
    PRIORS,
    ConditionalGaussian,
    GaussianMixture,
    GaussianPrior,
    Prior,
    StandardNormal,
    VampPrior,
    get_prior,
)

tfd = tfp.distributions


def test_the_registry_is_the_flag_choices():
    assert tuple(PRIORS) == config.PRIORS
    with pytest.raises(ValueError, match=f"prior must be one of {', '.join(PRIORS)}, got 'flat'"):
        get_prior("flat", 2)


def toy_encoder(images, vectors):
    """A fixed encoder for pseudo-inputs: the mean follows the image's mean pixel and the condition."""
    brightness = tf.reduce_mean(images, axis=[1, 2, 3])[:, None]
    offset = tf.reduce_sum(vectors * tf.range(tf.shape(vectors)[1], dtype=tf.float32), axis=1, keepdims=True)
    mean = tf.concat([4.0 * brightness - 2.0 + offset, -brightness + 0.3 * offset], axis=1)
    return mean, tf.fill(tf.shape(mean), -1.0)


def toy_prior_network(vectors):
    """A fixed prior network: mean and log-variance move with the condition vector."""
    offset = tf.reduce_sum(vectors * tf.range(1, tf.shape(vectors)[1] + 1, dtype=tf.float32), axis=1, keepdims=True)
    mean = tf.concat([offset - 1.0, 0.5 * offset], axis=1)
    return mean, tf.concat([0.3 * offset - 0.5, 0.4 - 0.2 * offset], axis=1)


def prior_of(name: str, classes: int = 0) -> Prior:
    """A 2-D prior of `name`: mixtures with 6 components (per class, of `classes`), the VampPrior
    with random pseudo-inputs through the toy encoder, the conditional Gaussian through the toy
    prior network."""
    if name == "conditional":
        prior = ConditionalGaussian(2)
        prior.attach(toy_prior_network)
        return prior
    prior = get_prior(name, 2, components=6 * max(classes, 1), image_shape=(3, 3, 1), condition_width=classes + 1,
                      class_group=(1, classes) if classes else None)
    for weight in prior.weights:
        weight.assign(np.random.default_rng(3).normal(scale=0.3, size=weight.shape).astype("float32"))
    prior.attach(toy_encoder)
    return prior


def condition_vectors(count: int, classes: int, label: int = 0) -> tf.Tensor:
    vectors = np.zeros((count, classes + 1), np.float32)
    if classes:
        vectors[:, 1 + label] = 1.0
    return tf.constant(vectors)


@pytest.mark.parametrize("classes", [0, 3])
@pytest.mark.parametrize("name", [*PRIORS, "conditional"])
def test_log_prob_is_normalised_in_two_dimensions(name, classes):
    prior = prior_of(name, classes)
    axis = np.linspace(-12.0, 12.0, 601, dtype="float32")
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    for label in range(max(classes, 1)):
        log_p = prior.log_prob(tf.constant(grid), condition_vectors(len(grid), classes, label)).numpy()
        density = np.exp(log_p).reshape(601, 601)
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


def test_the_conditional_gaussian_is_its_networks_gaussian():
    """Draws have the network's moments for each condition; the closed-form KL matches the
    one-sample Monte Carlo default and sums its per-dimension KLs."""
    prior = prior_of("conditional")
    conditions = tf.constant(np.repeat(np.eye(3, dtype="float32"), 40_000, axis=0))
    mean, log_var = (t.numpy() for t in toy_prior_network(conditions))
    z = prior.sample(conditions, seed=tf.constant([4, 5])).numpy().reshape(3, 40_000, 2)
    np.testing.assert_allclose(z.mean(axis=1), mean[::40_000], atol=0.03)
    np.testing.assert_allclose(z.std(axis=1), np.exp(0.5 * log_var[::40_000]), rtol=0.02)
    posterior = tfd.MultivariateNormalDiag(tf.constant([[0.3, -0.2]] * 3), tf.constant([[0.6, 1.3]] * 3))
    few = tf.constant(np.eye(3, dtype="float32"))
    closed = prior.kl(posterior, None, few).numpy()
    estimates = Prior.kl(prior, posterior, posterior.sample(100_000, seed=6), few).numpy()
    assert np.all(np.abs(estimates.mean(axis=0) - closed) < 4 * estimates.std(axis=0) / np.sqrt(100_000))
    np.testing.assert_allclose(prior.kl_per_dimension(posterior, few).numpy().sum(axis=1), closed, rtol=1e-5)


def test_a_conditional_gaussian_without_its_network_says_so():
    with pytest.raises(ValueError, match="needs its prior network"):
        ConditionalGaussian(2).log_prob(tf.zeros([1, 2]), tf.zeros([1, 3]))


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


@pytest.mark.parametrize("name", ["mixture", "vamp"])
def test_a_mixture_mixes_its_own_class_components_with_weights_summing_to_one(name):
    prior = prior_of(name, classes=3)
    assert not prior.factorises and prior.num_components == 6 and prior.sets == 3
    z = tf.constant(np.random.default_rng(4).normal(size=(5, 2)).astype("float32"))
    means, scales = prior.component_moments()  # [3 classes, 6, 2]
    for label in range(3):
        mixture = prior.distribution(condition_vectors(5, 3, label))
        np.testing.assert_allclose(tf.reduce_sum(mixture.mixture_distribution.probs_parameter(), -1), 1.0, rtol=1e-6)
        # By hand: log (1/6) Σ_m N(z; μ_m, σ_m) over this class's components only.
        per_component = tfd.Independent(tfd.Normal(means[label], scales[label]), 1).log_prob(z[:, None, :])
        expected = tf.reduce_logsumexp(per_component, axis=1) - np.log(6.0)
        np.testing.assert_allclose(prior.log_prob(z, condition_vectors(5, 3, label)), expected, rtol=1e-5)
    assert not np.allclose(prior.log_prob(z, condition_vectors(5, 3, 0)), prior.log_prob(z, condition_vectors(5, 3, 2)))
    # Leading draws [K, N, L] against rows of mixed classes, as the importance weights ask: the
    # library's mixture, row by row.
    draws = tf.constant(np.random.default_rng(5).normal(scale=2.0, size=(4, 3, 2)).astype("float32"))
    mixed = tf.concat([condition_vectors(1, 3, label) for label in (2, 0, 1)], axis=0)
    np.testing.assert_allclose(prior.log_prob(draws, mixed), prior.distribution(mixed).log_prob(draws), rtol=1e-5)


def test_the_vamp_prior_is_its_encoder_at_the_pseudo_inputs():
    prior = prior_of("vamp", classes=3)
    means, _ = prior.component_moments()
    pseudo = tf.sigmoid(prior.pseudo_inputs)
    expected, _ = toy_encoder(pseudo, prior.pseudo_conditions())
    np.testing.assert_allclose(tf.reshape(means, [-1, 2]), expected, rtol=1e-6)
    # each pseudo-input carries its class's one-hot, 6 per class
    np.testing.assert_array_equal(np.argmax(prior.pseudo_conditions().numpy()[:, 1:], axis=1), np.repeat(np.arange(3), 6))
    with pytest.raises(ValueError, match="needs its model's encoder"):
        get_prior("vamp", 2).component_moments()


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_a_mixture_prior_model_round_trips_and_refuses_free_bits(tmp_path, prior):
    model = CVAE(latent_dim=3, hidden_units=(8,), prior=prior, prior_components=20, activation="gated", seed=0)
    assert isinstance(model.prior, (GaussianMixture, VampPrior)) and model.prior.sets == 10
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (16, 28, 28, 1)).astype("uint8"), rng.integers(0, 10, 16)
    z = rng.standard_normal((4, 3)).astype("float32")

    def same(loaded, original):
        assert loaded.prior_name == prior and loaded.prior_components == 20
        for saved, restored in zip(original.prior.weights, loaded.prior.weights, strict=True):
            np.testing.assert_array_equal(saved.numpy(), restored.numpy())
        np.testing.assert_allclose(loaded.log_prior(z, labels[:4]), original.log_prior(z, labels[:4]), rtol=1e-5)

    assert_keras_round_trip(model, images, labels, tmp_path / f"{prior}.keras", same)
    with pytest.raises(ValueError, match="free_bits needs a prior that factorises"):
        CVAE(latent_dim=3, hidden_units=(8,), prior=prior, free_bits=0.5)


def test_the_export_samples_the_vamp_prior(tmp_path):
    from keras_cvae.evaluation.estimators import KerasBackend
    from keras_cvae.export import export_saved_model
    from keras_cvae.serving_client import load_client

    model = CVAE(latent_dim=2, hidden_units=(8,), prior="vamp", prior_components=30, seed=0)
    for weight in model.prior.weights:  # pseudo-inputs far apart, so the mixture is not N(0, I)
        weight.assign(np.random.default_rng(5).normal(scale=3.0, size=weight.shape).astype("float32"))
    client = load_client(export_saved_model(model, tmp_path))
    assert "kl_per_dimension" not in client._signatures  # the VampPrior does not factorise
    rows = np.full((20_000, 1), 4)
    z = client.sample_latent(rows, seed=3)
    np.testing.assert_allclose(z, KerasBackend(model).sample_latent(rows, 3), atol=1e-6)
    # the prior's own moments for class 4: the mean and variance of its equally weighted mixture
    means, scales = (t.numpy()[4] for t in model.prior.component_moments())
    variance = (scales**2 + means**2).mean(axis=0) - means.mean(axis=0) ** 2
    np.testing.assert_allclose(z.mean(axis=0), means.mean(axis=0), atol=float(4 * np.sqrt(variance.max() / len(z))))
    np.testing.assert_allclose(z.var(axis=0), variance, rtol=0.05)
