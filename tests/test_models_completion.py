"""The structured-output CVAE: masking, the KL between its two networks, the NCLL estimator,
serialization, the `complete` export, the command line, and a short training run."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from conftest import assert_keras_round_trip
from keras_cvae.evaluation.estimators import conditional_nll
from keras_cvae.models.completion import CompletionCVAE
from keras_cvae.models.quadrants import MASK_VALUE, masked_input, visible_mask


def small(objective: str = "cvae", quadrants: int = 1, **kwargs) -> CompletionCVAE:
    return CompletionCVAE(quadrants=quadrants, objective=objective, latent_dim=3, hidden_units=(16,), seed=0, **kwargs)


def images(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28, 1)).astype("float32")


# ------------------------------------------------------------------------------------------
# Masking


@pytest.mark.parametrize(
    ("quadrants", "visible_corners"),
    [(1, {"bottom_left"}), (2, {"bottom_left", "top_left"}), (3, {"bottom_left", "top_left", "top_right"})],
)
def test_masking_shows_the_right_quadrants(quadrants, visible_corners):
    mask = visible_mask((28, 28, 1), quadrants)[..., 0]
    corners = {"top_left": mask[:14, :14], "top_right": mask[:14, 14:],
               "bottom_left": mask[14:, :14], "bottom_right": mask[14:, 14:]}
    for name, block in corners.items():
        assert np.all(block == (1.0 if name in visible_corners else 0.0)), name
    x = masked_input(images(2), visible_mask((28, 28, 1), quadrants))
    assert np.sum(x[0] == MASK_VALUE) == 196 * (4 - quadrants)  # the missing pixels: y
    np.testing.assert_array_equal(x[0][mask == 1], images(2)[0][mask == 1])  # the visible ones: x
    with pytest.raises(ValueError, match="quadrants must be one of"):
        visible_mask((28, 28, 1), 4)


def test_model_masks_its_input_and_completion_keeps_visible_pixels():
    model = small(quadrants=2)
    batch = images(4)
    x = model.condition(batch).numpy()
    np.testing.assert_array_equal(model.condition(x).numpy(), x)  # masking twice changes nothing
    completed = model.complete(x, seed=1).numpy()
    visible = model.visible.astype(bool)
    np.testing.assert_allclose(completed[:, visible], batch[:, visible], atol=1e-7)
    assert completed.min() >= 0 and completed.max() <= 1


# ------------------------------------------------------------------------------------------
# The objective


def test_kl_between_prior_and_recognition_networks_equals_closed_form():
    model = small(quadrants=1)
    batch = images()
    x = model.condition(batch)
    y_hat = tf.sigmoid(model.baseline_logits(x))
    q, p = model.posterior(batch, x, y_hat), model.prior.distribution(model.prior_conditions(x, y_hat))
    mq, sq, mp, sp = (t.numpy().astype(np.float64) for t in (q.mean(), q.stddev(), p.mean(), p.stddev()))
    closed = np.sum(np.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5, axis=1)
    model.seed_generator = keras.random.SeedGenerator(0)
    terms = model.compute_terms(batch, None)
    np.testing.assert_allclose(terms["kl_loss"].numpy(), closed, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(terms["elbo"], -(terms["reconstruction_loss"] + terms["kl_loss"]), rtol=1e-6)


def test_terms_per_objective():
    batch = images()
    base = small("baseline").compute_terms(batch, None)
    np.testing.assert_array_equal(base["kl_loss"], 0.0)
    np.testing.assert_allclose(base["loss"], base["reconstruction_loss"])
    # Missing pixels only: 3 of 4 quadrants, each pixel's Bernoulli NLL is between 0 and ~log 2 + |logit|.
    assert np.all(base["reconstruction_loss"] > 0)
    for objective in ("cvae", "gsnn", "hybrid"):
        terms = small(objective).compute_terms(batch, None, training=True)
        assert all(t.shape == (6,) and np.all(np.isfinite(t)) for t in terms.values())


@pytest.mark.parametrize(("objective", "alpha", "beta"), [("cvae", 0.5, 2.0), ("gsnn", 0.5, 1.0), ("hybrid", 0.3, 1.5)])
def test_each_objective_matches_a_hand_computation(objective, alpha, beta):
    """The loss from the model's own networks, with the noise drawn by hand: the CVAE term
    decodes z ~ q (the first draw), the GSNN term z ~ p(z | x, ŷ) (the second), hybrid weights
    them α and 1 − α, β weights the KL, and the jointly trained baseline's NLL is added."""
    model = small(objective, alpha=alpha, beta=beta)
    batch = tf.constant(images())
    model.seed_generator.state.assign([7, 0])
    terms = model.compute_terms(batch, None)

    x = model.condition(batch)
    baseline_logits = model.baseline_logits(x)
    baseline_nll = -model.missing_log_likelihood(batch, baseline_logits)
    y_hat = tf.sigmoid(baseline_logits)
    prior, posterior = model.prior.distribution(model.prior_conditions(x, y_hat)), model.posterior(batch, x, y_hat)
    first, second = (tf.random.stateless_normal([6, 3], seed=[7, draw], alg="philox") for draw in (0, 1))
    z_q = posterior.mean() + posterior.stddev() * first
    z_p = prior.mean() + prior.stddev() * second
    reconstruction = -model.missing_log_likelihood(batch, model.generation_logits(z_q, x))
    gsnn = -model.missing_log_likelihood(batch, model.generation_logits(z_p, x))
    kl = tfp.distributions.kl_divergence(posterior, prior)
    cvae = reconstruction + beta * kl
    expected = {"cvae": cvae, "gsnn": gsnn, "hybrid": alpha * cvae + (1 - alpha) * gsnn}[objective] + baseline_nll

    np.testing.assert_allclose(terms["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(terms["reconstruction_loss"], reconstruction, rtol=1e-5)
    np.testing.assert_allclose(terms["elbo"], -(reconstruction + kl), rtol=1e-5)


def test_baseline_gets_gradients_only_from_its_own_loss():
    """ŷ enters the prior and recognition networks through a stop-gradient."""
    model = small("hybrid")
    with tf.GradientTape(persistent=True) as tape:
        terms = model.compute_terms(images(), None, training=True)
        cvae_part = tf.reduce_sum(terms["reconstruction_loss"] + terms["kl_loss"])
        total = tf.reduce_sum(terms["loss"])
    assert all(g is None for g in tape.gradient(cvae_part, model.baseline.trainable_weights))
    assert all(g is not None for g in tape.gradient(total, model.baseline.trainable_weights))


# ------------------------------------------------------------------------------------------
# The NCLL estimator


class FixedWeights:
    """Stands in for a model: log-weights near −1e4, where a naive exp() underflows to 0."""

    def log_weights(self, batch, num_samples):
        offsets = np.log(np.arange(1, num_samples + 1, dtype=np.float64))[:, None]
        return tf.constant(-1.0e4 + offsets + np.zeros((1, len(batch))))


def test_ncll_estimator_is_stable_for_very_negative_log_weights():
    nll = conditional_nll(FixedWeights(), images(5), num_samples=50)
    expected = 1.0e4 - np.log(np.mean(np.arange(1, 51)))
    np.testing.assert_allclose(nll, expected, rtol=1e-12)


def test_ncll_baseline_is_its_own_nll_and_iw_bound_beats_elbo():
    batch = images(8)
    base = small("baseline")
    np.testing.assert_allclose(
        conditional_nll(base, batch, 10), base.compute_terms(batch, None)["reconstruction_loss"], rtol=1e-5
    )
    model = small("cvae")
    ncll = conditional_nll(model, batch, 200)
    neg_elbo = np.mean([-model.compute_terms(batch, None)["elbo"].numpy() for _ in range(20)], axis=0)
    assert np.mean(ncll) <= np.mean(neg_elbo)  # log p ≥ the IW bound ≥ the ELBO, in expectation


def z_free_model(prior_mean: float, posterior_mean: float) -> CompletionCVAE:
    """A cvae whose prior and recognition networks output constant unit Gaussians, N(prior_mean)
    and N(posterior_mean), and whose generation network ignores z: log p(y | x) is then exact,
    the generation network's log-likelihood at any z."""
    model = small("cvae")
    for network, mean in ((model.prior_network, prior_mean), (model.recognition_network, posterior_mean)):
        for layer_name, bias in (("z_mean", mean), ("z_log_var", 0.0)):
            layer = network.get_layer(layer_name)
            layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))
            layer.bias.assign(np.full(layer.bias.shape, bias, "float32"))
    first = model.generation_network.get_layer("hidden_0")
    kernel = first.kernel.numpy()
    kernel[: model.latent_dim] = 0.0  # the rows that multiply z
    first.kernel.assign(kernel)
    return model


def exact_log_likelihood(model: CompletionCVAE, batch: np.ndarray) -> np.ndarray:
    x = model.condition(batch)
    return model.missing_log_likelihood(batch, model.generation_logits(tf.zeros([len(batch), model.latent_dim]), x)).numpy()


@pytest.mark.parametrize("num_samples", [1, 7])
def test_ncll_is_exact_when_the_proposal_is_the_exact_posterior(num_samples):
    """z carries nothing, so the exact posterior is the prior; with q = p every importance
    weight is p(y | x), whatever K."""
    model, batch = z_free_model(0.4, 0.4), images(5)
    np.testing.assert_allclose(conditional_nll(model, batch, num_samples), -exact_log_likelihood(model, batch),
                               rtol=1e-5)


def test_ncll_weights_are_prior_over_proposal_not_the_reverse():
    """With q ≠ p and z carrying nothing, the weights are p(y|x)·p(z)/q(z), whose mean over
    z ~ q is p(y|x): the estimate converges to log p(y|x). Swapping log p(z) and log q(z) would
    give log p(y|x) + log E_q[q/p] = log p(y|x) + 3·0.7² ≈ +1.5 nats instead."""
    model, batch = z_free_model(0.0, 0.7), images(4)
    estimate = -conditional_nll(model, batch, 4000)
    np.testing.assert_allclose(estimate, exact_log_likelihood(model, batch), atol=0.25)


# ------------------------------------------------------------------------------------------
# Serialization and export


@pytest.mark.parametrize("objective", ["baseline", "hybrid"])
def test_config_and_keras_file_round_trip(objective, tmp_path):
    eps = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")

    def same_completions(loaded, model):
        np.testing.assert_allclose(loaded.complete(images(4), eps=eps), model.complete(images(4), eps=eps), atol=1e-6)

    model = small(objective, quadrants=3, alpha=0.3)
    assert_keras_round_trip(model, images(16), np.zeros(16, "int32"), tmp_path / "m.keras", same_completions)




# ------------------------------------------------------------------------------------------
# Command line and a short real run










def test_the_prior_network_is_a_conditional_gaussian_and_old_files_still_load():
    """tests/data/completion_0.2_hybrid.keras: written before the prior network went through
    `priors.ConditionalGaussian` (hybrid, one step of FusedAdam): it loads with the same
    weights, and completes and reports the prior's moments exactly as it did."""
    import keras

    from conftest import REPO_ROOT
    from keras_cvae.priors import ConditionalGaussian

    data = REPO_ROOT / "tests" / "data"
    model = keras.saving.load_model(data / "completion_0.2_hybrid.keras", safe_mode=True)
    assert isinstance(model.prior, ConditionalGaussian) and int(model.optimizer.iterations) == 2
    expected = np.load(data / "completion_0.2_hybrid_outputs.npz")
    x = expected["images"].astype("float32") / 255.0
    np.testing.assert_allclose(model.complete(x, eps=expected["eps"]).numpy(), expected["completed"], atol=1e-6)
    moments = model.latent_moments(x)
    np.testing.assert_allclose(moments["p_mean"].numpy(), expected["p_mean"], atol=1e-6)
    np.testing.assert_allclose(moments["p_log_var"].numpy(), expected["p_log_var"], atol=1e-5)
