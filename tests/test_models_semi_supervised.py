"""The semi-supervised CVAE (M2): the bound with the class summed out, q(y | x), the enumeration
inside the step, and the weighting of labelled, unlabelled and classification terms."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from conftest import assert_keras_round_trip
from keras_cvae.models.semi_supervised import SemiSupervisedCVAE, average_weights, marginal_bound

tfd = tfp.distributions
DATA = Path(__file__).parent / "data"


def logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    return np.logaddexp.reduce(values.astype("float64"), axis=axis)


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    return np.exp(logits - logsumexp(logits, axis=axis)[:, None])


def small_model(**overrides) -> SemiSupervisedCVAE:
    args = {"num_classes": 3, "latent_dim": 2, "hidden_units": (16,), "seed": 0, "num_labeled": 30, "num_train": 300}
    return SemiSupervisedCVAE(**(args | overrides))


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 28, 28, 1)).astype("float32")


def bound(logits: np.ndarray, elbo: np.ndarray) -> np.ndarray:
    return marginal_bound(tfd.Categorical(logits=tf.constant(logits)), tf.constant(elbo)).numpy()


def test_the_bound_reaches_log_sum_exp_at_the_exact_posterior_and_only_there():
    # max over q of Σ q·L + H(q) is log Σ exp L, at q ∝ exp L: without the entropy the bound
    # would fall short there, and a q that is not the posterior must fall short.
    rng = np.random.default_rng(0)
    elbo = rng.normal(-100.0, 5.0, (6, 4)).astype("float32")
    np.testing.assert_allclose(bound(elbo, elbo), logsumexp(elbo, axis=1), rtol=1e-6)
    other = bound(rng.normal(size=(6, 4)).astype("float32"), elbo)
    assert np.all(other < logsumexp(elbo, axis=1) - 1e-3)


def test_the_bound_weights_the_classes_by_normalised_probabilities():
    # Shifting the logits leaves q(y | x) and the bound unchanged; the hand computation uses
    # weights that sum to 1.
    rng = np.random.default_rng(1)
    logits, elbo = rng.normal(size=(5, 3)).astype("float32"), rng.normal(-50, 3, (5, 3)).astype("float32")
    q = softmax(logits, axis=1)
    by_hand = np.sum(q * elbo, axis=1) - np.sum(q * np.log(q), axis=1)
    np.testing.assert_allclose(bound(logits, elbo), by_hand, rtol=1e-5)
    np.testing.assert_allclose(bound(logits + 7.0, elbo), by_hand, rtol=1e-5)


def test_q_y_given_x_is_a_distribution_over_the_classes():
    probabilities = small_model().classify(images(8)).numpy()
    assert probabilities.shape == (8, 3)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def deterministic(model: SemiSupervisedCVAE) -> SemiSupervisedCVAE:
    """z = the posterior mean, so that terms computed two ways can be compared exactly."""
    model.noise = tf.zeros
    return model


def test_the_enumeration_equals_each_class_taken_alone():
    model = deterministic(small_model())
    x = images(5)
    terms = model.per_class_terms(tf.constant(x))
    for c in range(3):
        labels = np.full((5, 1), c, "float32")
        z_mean, z_log_var = model.encode(x, labels)
        reconstruction = -model.log_likelihood(x, labels, z_mean).numpy()
        prior = model.prior.distribution(model.prior_conditions(labels, 5))
        kl = tfd.kl_divergence(model.posterior(z_mean, z_log_var), prior).numpy()
        np.testing.assert_allclose(terms["reconstruction"][:, c], reconstruction, rtol=1e-5)
        np.testing.assert_allclose(terms["elbo"][:, c], -np.log(3) - reconstruction - kl, rtol=1e-5)


def test_the_batch_objective_weights_labelled_unlabelled_and_classification_terms():
    # mean loss = −[f·mean_labelled (L(x, y) − w·(−log q(y|x))) + (1 − f)·mean_unlabelled U(x)]:
    # w weighs a labelled image's classification term against its own bound, for any data set size.
    model = deterministic(small_model(classifier_weight=0.7))
    x = tf.constant(images(8))
    labels = np.array([2, -1, 0, -1, -1, 1, -1, -1], "float32")[:, None]
    observed = labels[:, 0] >= 0
    terms = {k: v.numpy() for k, v in model.compute_terms(x, labels).items()}

    elbo = model.per_class_terms(x)["elbo"].numpy()
    q = model.classify(x).numpy()
    y = labels[observed, 0].astype(int)
    labelled = elbo[observed][np.arange(len(y)), y]
    unlabelled = np.sum(q * elbo, axis=1) - np.sum(q * np.log(q), axis=1)
    f = 30 / 300
    objective = f * labelled.mean() + (1 - f) * unlabelled[~observed].mean()
    cross_entropy = -np.log(q[observed][np.arange(len(y)), y])
    np.testing.assert_allclose(terms["elbo"].mean(), objective, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"].mean(), -objective + f * 0.7 * cross_entropy.mean(), rtol=1e-5)
    np.testing.assert_allclose(terms["accuracy"].mean(), np.mean(q[observed].argmax(1) == y), atol=1e-6)


def test_the_classifier_weight_means_the_same_per_labelled_image_at_any_data_set_size():
    # 100 labels among N = 1,000 or N = 10,000 images: the labelled share f of the objective changes
    # tenfold, but per labelled image the classification term stays w · −log q(y | x) against that
    # image's own bound L(x, y), so its gradient relative to the bound's is the same at both sizes.
    x = tf.constant(images(8))
    labels = np.array([2, -1, 0, -1, -1, 1, -1, -1], "float32")[:, None]
    observed = labels[:, 0] >= 0
    ratios, shares, weights = [], [], None
    for num_train in (1_000, 10_000):
        model = deterministic(small_model(classifier_weight=5.0, num_labeled=100, num_train=num_train))
        weights = weights or model.get_weights()
        model.set_weights(weights)  # the same networks at both sizes
        terms = {k: v.numpy() for k, v in model.compute_terms(x, labels).items()}
        y = labels[observed, 0].astype(int)
        bound_ = model.per_class_terms(x)["elbo"].numpy()[observed][np.arange(len(y)), y]
        cross_entropy = -np.log(model.classify(x).numpy()[observed][np.arange(len(y)), y])
        classification = (terms["loss"] + terms["elbo"])[observed]  # what w adds to each labelled image
        ratios.append(classification / -terms["elbo"][observed])
        shares.append(terms["elbo"][observed] / bound_)  # the image's batch weight
        np.testing.assert_allclose(ratios[-1], 5.0 * cross_entropy / -bound_, rtol=1e-4)
    np.testing.assert_allclose(shares[0], 10 * shares[1], rtol=1e-5)  # N does change the labelled share
    np.testing.assert_allclose(ratios[0], ratios[1], rtol=1e-4)


def test_the_classification_term_is_what_trains_q_on_the_labels():
    # With a = 0 no gradient of −log q(y|x) reaches the classifier from a labelled batch; with a > 0 it does.
    x, labels = tf.constant(images(6)), np.array([0, 1, 2, 0, 1, 2], "float32")[:, None]

    def classifier_gradient(weight: float) -> np.ndarray:
        model = deterministic(small_model(classifier_weight=weight, num_labeled=300))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.compute_terms(x, labels)["loss"])
        return tape.gradient(loss, model.classifier.trainable_weights[-1])

    assert classifier_gradient(0.0) is None or np.allclose(classifier_gradient(0.0), 0.0)
    assert np.abs(classifier_gradient(0.1)).max() > 1e-4


def test_validation_sums_every_label_out_and_scores_q():
    model = deterministic(small_model())
    model.compile(optimizer="adam")
    x, labels = images(6), np.array([0, 1, 2, 0, 1, 2], "float32")[:, None]
    logs = model.test_step((tf.constant(x), tf.constant(labels)))
    q = model.classify(x).numpy()
    elbo = model.per_class_terms(tf.constant(x))["elbo"].numpy()
    np.testing.assert_allclose(float(logs["elbo"]), np.mean(bound(np.log(q), elbo)), rtol=1e-5)
    np.testing.assert_allclose(float(logs["accuracy"]), np.mean(q.argmax(1) == labels[:, 0]), atol=1e-6)


def test_a_separate_classifier_step_leaves_the_term_out_of_the_loss_and_takes_a_second_step():
    x = tf.constant(images(8))
    labels = np.array([2, -1, 0, -1, -1, 1, -1, -1], "float32")[:, None]
    joint = deterministic(small_model(classifier_weight=0.7))
    separate = deterministic(small_model(classifier_weight=0.7, classifier_step="separate"))
    separate.set_weights(joint.get_weights())
    with_term = joint.compute_terms(x, labels)["loss"].numpy()
    without = separate.compute_terms(x, labels)["loss"].numpy()
    term = separate._classification_terms(x, labels, training=False).numpy()
    np.testing.assert_allclose(without + term, with_term, rtol=1e-5, atol=1e-4)
    assert np.all(term[labels[:, 0] < 0] == 0) and np.all(term[labels[:, 0] >= 0] > 0)
    for model in (joint, separate):
        model.compile(optimizer="adam")
        model.train_step((x, tf.constant(labels)))
    assert int(joint.optimizer.iterations) == 1 and int(separate.optimizer.iterations) == 2
    assert SemiSupervisedCVAE.from_config(separate.get_config()).classifier_step == "separate"
    with pytest.raises(ValueError, match="classifier_step must be one of joint, separate"):
        small_model(classifier_step="both")


def test_the_weight_average_follows_the_live_weights_early_and_decays_at_d_later():
    averaged, live = keras.Variable(np.zeros(3, "float32")), keras.Variable(np.full(3, 2.0, "float32"))
    average_weights([averaged], [live], 0.99, tf.constant(0))  # rate min(0.99, 1/10) = 0.1
    np.testing.assert_allclose(averaged.numpy(), 0.9 * 2.0, rtol=1e-6)
    averaged.assign(np.zeros(3, "float32"))
    average_weights([averaged], [live], 0.99, tf.constant(10_000))  # rate 0.99
    np.testing.assert_allclose(averaged.numpy(), 0.01 * 2.0, rtol=1e-5)
    with pytest.raises(ValueError):
        average_weights([averaged], [live, live], 0.99, tf.constant(1))


def test_the_averaged_classifier_is_q_outside_training_and_takes_in_each_step():
    x = tf.constant(images(8))
    labels = tf.constant(np.array([2, -1, 0, -1, -1, 1, -1, -1], "float32")[:, None])
    plain = small_model()
    assert plain.averaged_classifier is None and plain.get_config()["classifier_average"] == 0.0
    model = small_model(classifier_average=0.9)
    np.testing.assert_array_equal(model.classify(x), model.label_posterior(x, training=True).probs_parameter())
    model.compile(optimizer="adam")
    before = [w.numpy() for w in model.averaged_classifier.weights]
    for _ in range(3):
        model.train_step((x, labels))
    live = [w.numpy() for w in model.classifier.weights]
    after = [w.numpy() for w in model.averaged_classifier.weights]
    assert all(not np.allclose(a, b) for a, b in zip(after, before)) and all(
        not np.allclose(a, b) for a, b in zip(after, live))
    # The step's update, replayed by hand from the weights after the third step.
    step = float(model.optimizer.iterations) + 1
    model.train_step((x, labels))
    rate = min(0.9, (1 + step) / (10 + step))
    for averaged, new_live, old in zip(model.averaged_classifier.weights, model.classifier.weights, after):
        np.testing.assert_allclose(averaged.numpy(), rate * old + (1 - rate) * new_live.numpy(), rtol=1e-5, atol=1e-7)
    # Outside training q(y | x) is the average's; in training, the live classifier's.
    averaged_logits = model.averaged_classifier(x).numpy()
    np.testing.assert_allclose(model.classify(x), softmax(averaged_logits, axis=1), atol=1e-6)
    np.testing.assert_allclose(model.label_posterior(x, training=True).logits, model.classifier(x), atol=1e-6)
    assert model.averaged_classifier.trainable_weights == []
    assert all(w is not v for w in model.trainable_weights for v in model.averaged_classifier.weights)
    assert SemiSupervisedCVAE.from_config(model.get_config()).classifier_average == 0.9
    with pytest.raises(ValueError, match=r"classifier_average must be in \[0, 1\)"):
        small_model(classifier_average=1.0)


def test_the_class_enters_at_scale_one_and_the_scale_is_kept():
    model = small_model()
    assert model.condition_scale == 1.0 and model.get_config()["condition_scale"] == 1.0
    assert "condition_scale" not in [layer.name for layer in model.decoder.layers]  # no Rescaling at 1
    assert SemiSupervisedCVAE.from_config(small_model(condition_scale=4.0).get_config()).condition_scale == 4.0
    with pytest.raises(ValueError, match="classifier_weight must be >= 0"):
        small_model(classifier_weight=-1.0)


def test_a_model_saved_by_version_0_1_loads_as_it_was_trained():
    # Written by keras_cvae 0.1 (condition scale 10, a = 0.1 per image of the data set: 30 of 300
    # labelled, so w = 1.0), with its classify() outputs on fixed images.
    loaded = keras.saving.load_model(DATA / "semi_supervised_0.1.keras", safe_mode=True)
    assert loaded.condition_scale == 10.0 and loaded.decoder.get_layer("condition_scale").scale == 10.0
    np.testing.assert_allclose(loaded.classifier_weight, 0.1 * 300 / 30)
    outputs = np.load(DATA / "semi_supervised_0.1_outputs.npz")
    np.testing.assert_allclose(loaded.classify(outputs["images"]), outputs["probabilities"], atol=1e-6)
    z, labels = np.zeros((4, 2), "float32"), np.array([0, 1, 2, 1])
    np.testing.assert_allclose(loaded.decode(z, labels), outputs["decoded"], atol=1e-6)


def test_refuses_anything_but_one_categorical_condition():
    with pytest.raises(ValueError, match="exactly one categorical condition"):
        small_model(conditional=False)
    with pytest.raises(ValueError, match="num_labeled must be in"):
        small_model(num_labeled=301)


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    def same_outputs(loaded, model):
        x = images(4, seed=3)
        np.testing.assert_allclose(loaded.classify(x), model.classify(x), atol=1e-6)
        z, labels = np.zeros((4, 2), "float32"), np.array([0, 1, 2, 1])
        np.testing.assert_allclose(loaded.decode(z, labels), model.decode(z, labels), atol=1e-6)

    labels = np.array([0, -1, 1, -1, 2, -1, -1, -1] * 2, "float32")[:, None]
    assert_keras_round_trip(small_model(arch="conv"), images(16), labels, tmp_path / "m.keras", same_outputs)

    def same_average(loaded, model):
        same_outputs(loaded, model)
        for restored, saved in zip(loaded.averaged_classifier.weights, model.averaged_classifier.weights, strict=True):
            np.testing.assert_array_equal(restored.numpy(), saved.numpy())

    assert_keras_round_trip(small_model(classifier_average=0.99), images(16), labels, tmp_path / "a.keras",
                            same_average)
