"""The CVAE's maths against closed forms, its conditioning, and its serialization round trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from conftest import assert_keras_round_trip
from keras_cvae.conditions import CATEGORICAL, CONTINUOUS, Condition
from keras_cvae.models.base import LOG_VAR_BOUND, condition_vector
from keras_cvae.models.cvae import CVAE

tfd = tfp.distributions


def small_model(**kwargs) -> CVAE:
    args = {"latent_dim": 3, "hidden_units": (16,), "seed": 0, **kwargs}
    return CVAE(**args)


def batch(n: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1)).astype("float32"), rng.integers(0, 10, n).astype("int32")


def test_kl_equals_closed_form_for_diagonal_gaussians():
    model = small_model()
    images, labels = batch()
    terms = model.compute_terms(images, labels)
    mu, log_var = (t.numpy() for t in model.encode(images, labels))
    closed = 0.5 * np.sum(np.exp(log_var) + mu**2 - 1.0 - log_var, axis=1)
    np.testing.assert_allclose(terms["kl_loss"].numpy(), closed, rtol=1e-5, atol=1e-5)
    assert np.all(closed > 0)


def test_kl_closed_form_far_from_prior():
    """Large means and variances, where a wrong sign or factor would show."""
    mu = np.array([[3.0, -2.0, 0.5]], "float32")
    log_var = np.array([[2.0, -3.0, 0.0]], "float32")
    import tensorflow_probability as tfp

    model, posterior = small_model(), CVAE.posterior(mu, log_var)
    closed = 0.5 * np.sum(np.exp(log_var) + mu**2 - 1.0 - log_var)
    kl, charged = model.kl_terms(posterior, posterior.sample(seed=1), tf.constant([3]))
    np.testing.assert_allclose(kl, [closed], rtol=1e-5)
    np.testing.assert_allclose(charged, [closed], rtol=1e-5)  # no free bits
    conditions = model.prior_conditions(tf.constant([3]), 1)
    per_dim = model.prior.kl_per_dimension(posterior, conditions).numpy()
    np.testing.assert_allclose(per_dim, 0.5 * (np.exp(log_var) + mu**2 - 1.0 - log_var), rtol=1e-5)
    prior = model.prior.distribution(conditions)
    np.testing.assert_allclose(tfp.distributions.kl_divergence(posterior, prior), [closed], rtol=1e-5)


def test_bernoulli_reconstruction_is_summed_bce():
    model = small_model()
    images, labels = batch()
    z = np.random.default_rng(1).standard_normal((6, 3)).astype("float32")
    logits = model.decoder_logits(z, labels).numpy().astype("float64")
    p = 1.0 / (1.0 + np.exp(-logits))
    bce = -(images * np.log(p) + (1 - images) * np.log(1 - p)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(-model.log_likelihood(images, labels, z).numpy(), bce, rtol=1e-4)


def test_gaussian_reconstruction_is_summed_normal_nll():
    model = small_model(likelihood="gaussian")
    images, labels = batch()
    z = np.zeros((6, 3), "float32")
    mean = model.decode(z, labels).numpy().astype("float64")
    sigma = 0.01 + np.log1p(np.exp(model.likelihood.pixel_scale_raw.numpy().astype("float64")))
    nll = (0.5 * ((images - mean) / sigma) ** 2 + np.log(sigma) + 0.5 * np.log(2 * np.pi)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(-model.log_likelihood(images, labels, z).numpy(), nll, rtol=1e-4)


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_terms_add_up(beta):
    model = small_model(beta=beta)
    model.kl_weight.assign(0.5)
    terms = {k: v.numpy() for k, v in model.compute_terms(*batch()).items()}
    np.testing.assert_allclose(terms["elbo"], -(terms["reconstruction_loss"] + terms["kl_loss"]), rtol=1e-6)
    np.testing.assert_allclose(
        terms["loss"], terms["reconstruction_loss"] + 0.5 * beta * terms["kl_loss"], rtol=1e-6
    )


def test_log_variance_is_bounded():
    model = small_model()
    kernel = model.encoder.get_layer("z_log_var").kernel
    kernel.assign(np.full(kernel.shape, 50.0, "float32"))
    _, log_var = model.encode(*batch())
    assert np.all(np.abs(log_var.numpy()) <= LOG_VAR_BOUND)


def test_condition_changes_the_decoder_output_unless_unconditional():
    z = np.zeros((2, 3), "float32")
    conditional = small_model()
    out = conditional.decode(z, np.array([0, 1])).numpy()
    assert not np.allclose(out[0], out[1])
    plain = small_model(conditional=False)
    assert len(plain.decoder.inputs) == 1
    out = plain.decode(z, np.array([0, 1])).numpy()
    np.testing.assert_array_equal(out[0], out[1])


def test_generate_shapes_and_range():
    images = small_model(arch="conv").generate(tf.constant([0, 1, 2, 3]), seed=3).numpy()
    assert images.shape == (4, 28, 28, 1) and images.min() >= 0 and images.max() <= 1


def test_training_step_lowers_the_loss():
    keras.utils.set_random_seed(0)  # the initial weights decide how fast it learns
    model = small_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    labels = np.arange(64, dtype="int32") % 10
    templates = (np.random.default_rng(0).random((10, 28, 28, 1)) > 0.5).astype("float32")
    images = templates[labels]  # one binary pattern per class: learnable in a few steps
    before = float(np.mean(model.compute_terms(images, labels)["loss"]))
    model.fit(images, labels, batch_size=32, epochs=20, verbose=0)
    after = float(np.mean(model.compute_terms(images, labels)["loss"]))
    assert after < 0.8 * before
    assert set(model.get_metrics_result()) == {"loss", "reconstruction_loss", "kl_loss", "elbo"}


def test_metrics_are_per_image_means_over_unequal_batches_of_uint8_images():
    """What the input pipeline ships (uint8, a smaller last batch) gives the per-image mean."""
    model = small_model()
    model.compile(optimizer="adam")
    rng = np.random.default_rng(0)
    pixels, labels = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 6).astype("int32")
    batches = tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(4)  # 4 images, then 2
    metrics = model.evaluate(batches, verbose=0, return_dict=True)
    kl = model.compute_terms(pixels.astype("float32") / 255.0, labels)["kl_loss"].numpy()  # z-free: exact
    np.testing.assert_allclose(metrics["kl_loss"], kl.mean(), rtol=1e-5)
    assert not np.isclose(metrics["kl_loss"], (kl[:4].mean() + kl[4:].mean()) / 2, rtol=1e-5)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_config_round_trip_gives_same_decode(arch):
    model = small_model(arch=arch, likelihood="gaussian", beta=2.0, class_names=list("abcdefghij"))
    clone = CVAE.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    z = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")
    labels = np.array([0, 3, 5, 9])
    np.testing.assert_allclose(clone.decode(z, labels), model.decode(z, labels), atol=1e-6)


@pytest.mark.parametrize("arguments", [
    {"arch": "conv"}, {"activation": "gated", "hidden_units": (8, 8)},
    {"initializer": "he_normal", "log_var_range": (-6.0, 2.0), "kl_estimate": "monte_carlo", "condition_scale": 3.0},
])
def test_keras_file_round_trip_in_safe_mode(tmp_path, arguments):
    z = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")
    labels = np.array([1, 2, 3, 4])

    def same_decode(loaded, model):
        assert loaded.get_config() == model.get_config()
        np.testing.assert_allclose(loaded.decode(z, labels), model.decode(z, labels), atol=1e-6)

    assert_keras_round_trip(small_model(**arguments), *batch(16), tmp_path / "m.keras", same_decode)


def test_mixed_precision_computes_in_bfloat16_but_keeps_losses_and_export_float32():
    from keras_cvae.models.base import global_dtype_policy

    with global_dtype_policy("mixed_bfloat16"):
        model = small_model()
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert model.encoder.layers[-1].compute_dtype == "bfloat16"
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, labels = batch(16)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    terms = model.compute_terms(images, labels)
    assert all(t.dtype == tf.float32 for t in terms.values())
    assert all(w.dtype == "float32" for w in model.trainable_weights)  # master weights stay float32
    exported = model.float32_copy()
    assert exported.encoder.layers[-1].compute_dtype == "float32"
    z = np.random.default_rng(1).standard_normal((4, 3)).astype("float32")
    np.testing.assert_allclose(exported.decode(z, labels[:4]), model.decode(z, labels[:4]), atol=2e-2)
    assert small_model().float32_copy().compute_dtype == "float32"


# -- several conditions, continuous ones, and the discretized logistic ----------------------------

MIXED = (Condition("colour", CATEGORICAL, values=("blue", "green", "red")),
         Condition("angle", CONTINUOUS, mean=10.0, std=4.0, low=0.0, high=20.0),
         Condition("shape", CATEGORICAL, values=("bar", "square")))


def test_condition_vector_is_one_hot_groups_and_standardised_values():
    rows = np.array([[2, 14.0, 0], [0, 2.0, 1]], "float32")
    vector = condition_vector(rows, MIXED).numpy()
    np.testing.assert_allclose(vector, [[0, 0, 1, 1.0, 1, 0], [1, 0, 0, -2.0, 0, 1]])
    # A model with one condition also takes its values as [N].
    np.testing.assert_array_equal(condition_vector(np.array([1, 0]), MIXED[:1]).numpy(), [[0, 1, 0], [1, 0, 0]])


def test_every_condition_reaches_both_networks_and_survives_a_round_trip(tmp_path):
    model = small_model(image_shape=(12, 10, 3), conditions=MIXED, arch="conv", likelihood="discretized_logistic")
    assert model.encoder.input_shape[1][-1] == model.decoder.input_shape[1][-1] == 6
    assert model.class_names == ("blue", "green", "red")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 12, 10, 3)).astype("float32") / 255.0
    rows = np.stack([rng.integers(0, 3, 16), rng.uniform(0, 20, 16), rng.integers(0, 2, 16)], 1).astype("float32")
    z = rng.standard_normal((16, 3)).astype("float32")
    for column, new_value in ((0, 1.0), (1, 30.0), (2, 1.0)):
        changed = rows.copy()
        changed[:, column] = new_value
        assert not np.allclose(model.decode(z, rows), model.decode(z, changed))

    def same(loaded, original):
        assert loaded.conditions == MIXED
        np.testing.assert_allclose(loaded.log_likelihood(images, rows, z), original.log_likelihood(images, rows, z),
                                   rtol=1e-5)

    assert_keras_round_trip(model, images, rows, tmp_path / "mixed.keras", same)


def test_no_conditions_is_a_plain_vae():
    model = small_model(conditions=[])
    assert not model.conditional and model.num_classes == 0 and len(model.encoder.inputs) == 1
    assert model.generate(np.zeros((2, 0), "float32")).shape == (2, 28, 28, 1)


def test_a_config_saved_before_conditions_still_builds():
    """`.keras` files of earlier versions name their classes instead of their conditions."""
    config = {key: value for key, value in small_model().get_config().items() if key != "conditions"}
    model = CVAE.from_config({**config, "num_classes": 3, "class_names": ["a", "b", "c"]})
    assert model.conditions == (Condition("labels", CATEGORICAL, values=("a", "b", "c")),)


def test_free_bits_match_a_hand_computation():
    import tensorflow as tf

    from keras_cvae.models.base import free_bits_kl

    kl = np.array([[0.1, 2.0, 0.0], [0.3, 4.0, 0.2]], "float32")  # batch means 0.2, 3.0, 0.1
    charged = free_bits_kl(tf.constant(kl), 0.25).numpy()
    np.testing.assert_allclose(charged, [0.25 + 2.0 + 0.25, 0.25 + 4.0 + 0.25])
    assert charged.mean() == pytest.approx(max(0.25, 0.2) + max(0.25, 3.0) + max(0.25, 0.1))
    np.testing.assert_allclose(free_bits_kl(tf.constant(kl), 0.0).numpy(), kl.sum(axis=1))
    # Dimensions under λ get no gradient; the others get the plain KL's.
    variable = tf.Variable(kl)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(free_bits_kl(variable, 0.25))
    np.testing.assert_allclose(tape.gradient(loss, variable).numpy(), [[0, 0.5, 0], [0, 0.5, 0]])


def test_free_bits_change_the_loss_but_not_the_reported_kl():
    plain = CVAE(latent_dim=3, hidden_units=(8,), seed=1)
    freed = CVAE(latent_dim=3, hidden_units=(8,), seed=1, free_bits=5.0)
    freed.set_weights(plain.get_weights())
    x, y = batch(4)
    a, b = plain.compute_terms(x, y), freed.compute_terms(x, y)
    np.testing.assert_allclose(a["kl_loss"], b["kl_loss"], rtol=1e-6)
    np.testing.assert_allclose(a["elbo"], b["elbo"], rtol=1e-6)
    # An untrained encoder's KL per dimension is far below 5 nats: the loss charges 3 × 5.
    np.testing.assert_allclose(b["loss"], b["reconstruction_loss"] + 15.0, rtol=1e-5)


def test_he_normal_weights_have_std_sqrt_2_over_fan_in_in_every_dense_layer():
    model = CVAE(initializer="he_normal", seed=0)
    for network in (model.encoder, model.decoder):
        for layer in network.layers:
            if isinstance(layer, keras.layers.Dense):
                kernel = layer.kernel.numpy()
                np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / kernel.shape[0]), rtol=0.06)
    glorot = CVAE(seed=0).decoder.get_layer("logits_flat").kernel.numpy()
    np.testing.assert_allclose(glorot.std(), np.sqrt(2.0 / sum(glorot.shape)), rtol=0.06)


def test_a_log_var_range_clips_the_posterior_log_variance_hard():
    model = small_model(log_var_range=(-6.0, 2.0))
    images, labels = batch()
    layer = model.encoder.get_layer("z_log_var")
    layer.bias.assign(np.array([-50.0, 0.5, 50.0], "float32"))
    layer.kernel.assign(np.zeros_like(layer.kernel.numpy()))
    _, log_var = model.encode(images, labels)
    np.testing.assert_allclose(log_var.numpy(), np.tile([-6.0, 0.5, 2.0], (len(images), 1)))
    _, soft = small_model().encode(images, labels)
    assert np.all(np.abs(soft.numpy()) < 10.0)
    with pytest.raises(ValueError, match="log_var_range must be"):
        small_model(log_var_range=(2.0, -6.0))


def test_the_monte_carlo_kl_is_log_q_minus_log_p_at_the_reconstructions_z():
    images, labels = batch()
    for estimate in ("analytic", "monte_carlo"):
        model = small_model(kl_estimate=estimate)
        posterior = model.posterior(*model.encode(images, labels))
        z = posterior.sample(seed=1)
        kl, charged = model.kl_terms(posterior, z, labels)
        conditions = model.prior_conditions(labels, len(images))
        expected = (posterior.log_prob(z) - model.prior.log_prob(z, conditions) if estimate == "monte_carlo"
                    else tfd.kl_divergence(posterior, tfd.MultivariateNormalDiag(tf.zeros([len(images), 3]))))
        np.testing.assert_allclose(kl.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(charged.numpy(), kl.numpy())
    with pytest.raises(ValueError, match="free_bits needs the KL per dimension"):
        small_model(kl_estimate="monte_carlo", free_bits=0.5)
