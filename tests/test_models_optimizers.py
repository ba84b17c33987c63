"""FusedAdam must be Keras's Adam, update for update, in float32 and from a saved state."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_cvae.models.optimizers import FusedAdam


def run_updates(optimizer: keras.optimizers.Optimizer, steps: int = 5, jit_compile: bool | None = None,
                weights: list | None = None, first_step: int = 0) -> list[np.ndarray]:
    """Apply `steps` fixed pseudo-random gradients (eagerly, or in a tf.function compiled with
    XLA or not); gradient i is the same whichever run applies it."""
    rng = np.random.default_rng(0)
    weights = weights or [keras.Variable(rng.normal(size=shape).astype("float32")) for shape in [(7, 3), (3,)]]
    grads = [[tf.constant(np.random.default_rng(100 + i).normal(size=w.shape).astype("float32")) for w in weights]
             for i in range(first_step, first_step + steps)]
    if jit_compile is None:
        apply = optimizer.apply
    else:
        if not optimizer.built:
            optimizer.build(weights)  # its slots are variables: made outside the traced function
        compiled = tf.function(lambda g: optimizer.apply(g, weights), jit_compile=jit_compile)
        apply = lambda g, _: compiled(g)  # noqa: E731  (the variables stay captured, not arguments)
    for step_grads in grads:
        apply(step_grads, weights)
    return [w.numpy() for w in weights]


@pytest.mark.parametrize("kwargs", [{}, {"learning_rate": 0.05, "beta_1": 0.5, "epsilon": 1e-3}])
def test_fused_adam_matches_keras_adam(kwargs):
    expected = run_updates(keras.optimizers.Adam(**kwargs))
    got = run_updates(FusedAdam(**kwargs))
    start = run_updates(keras.optimizers.Adam(**kwargs), steps=0)
    for e, g, s in zip(expected, got, start):
        assert not np.allclose(e, s)  # the weights did move
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)  # float rounding order differs


def test_fused_adam_inside_compiled_function_and_amsgrad_fallback():
    expected = run_updates(keras.optimizers.Adam(amsgrad=True))
    np.testing.assert_allclose(run_updates(FusedAdam(amsgrad=True))[0], expected[0], rtol=1e-6)
    optimizer = FusedAdam(0.1)
    weight = keras.Variable(np.ones(4, "float32"))

    @tf.function(jit_compile=False)
    def step():
        optimizer.apply([tf.ones(4)], [weight])

    step()
    np.testing.assert_allclose(weight.numpy(), 0.9, rtol=1e-5)  # first Adam step moves by lr


def test_normalized_gradients_are_adams_update_of_the_unit_gradients():
    # Gradient i scaled by 10**i: normalised, the updates are Adam's for the unit-norm gradients.
    def gradients(scaled: bool):
        rng = np.random.default_rng(0)
        steps = []
        for i in range(4):
            g = rng.normal(size=(5, 2)).astype("float32")
            steps.append(g * 10.0 ** i if scaled else g / np.linalg.norm(g))
        return steps

    def run(optimizer, steps):
        weight = keras.Variable(np.ones((5, 2), "float32"))
        for g in steps:
            optimizer.apply([tf.constant(g)], [weight])
        return weight.numpy()

    normalized = run(FusedAdam(0.01, normalize_gradients=True), gradients(scaled=True))
    np.testing.assert_allclose(normalized, run(keras.optimizers.Adam(0.01), gradients(scaled=False)), rtol=1e-5)
    assert not np.allclose(normalized, run(FusedAdam(0.01), gradients(scaled=True)), rtol=1e-3)


def test_fused_adam_config_round_trip():
    optimizer = FusedAdam(learning_rate=0.003, beta_2=0.99, normalize_gradients=True)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, FusedAdam)
    assert restored.get_config() == optimizer.get_config()


@pytest.mark.parametrize("jit_compile", [True, False])
def test_fused_adam_matches_keras_adam_when_compiled(jit_compile):
    """XLA is the default for the MLP on one CPU, so the fused kernel must agree under it too."""
    expected = run_updates(keras.optimizers.Adam(1e-2), jit_compile=jit_compile)
    got = run_updates(FusedAdam(1e-2), jit_compile=jit_compile)
    start = run_updates(keras.optimizers.Adam(1e-2), steps=0)
    for e, g, s in zip(expected, got, start):
        assert not np.allclose(e, s)
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_fused_adam_continues_from_a_restored_state_as_if_never_stopped(tmp_path):
    """3 steps, save the model with its optimizer, load it, 2 more steps = 5 steps straight."""
    def model_and_weights():
        inputs = keras.Input((7,))
        model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(inputs))
        model.compile(optimizer=FusedAdam(1e-2))
        model.optimizer.build(model.trainable_variables)
        model.set_weights([w + 0.5 for w in model.get_weights()])
        return model, model.trainable_variables

    straight, weights = model_and_weights()
    start = [w.numpy() for w in weights]
    expected = run_updates(straight.optimizer, steps=5, weights=weights)

    interrupted, weights = model_and_weights()
    for w, s in zip(weights, start):
        w.assign(s)
    run_updates(interrupted.optimizer, steps=3, weights=weights)
    interrupted.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(restored.optimizer, FusedAdam) and int(restored.optimizer.iterations) == 3
    got = run_updates(restored.optimizer, steps=2, weights=restored.trainable_variables, first_step=3)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)
