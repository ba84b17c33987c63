"""FusedAdam must be Keras's Adam, update for update, in float32 and from a saved state."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_cvae.optimizers import FusedAdam


def run_updates(optimizer: keras.optimizers.Optimizer, steps: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    weights = [keras.Variable(rng.normal(size=shape).astype("float32")) for shape in [(7, 3), (3,)]]
    for _ in range(steps):
        grads = [tf.constant(rng.normal(size=w.shape).astype("float32")) for w in weights]
        optimizer.apply(grads, weights)
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


def test_fused_adam_config_round_trip():
    optimizer = FusedAdam(learning_rate=0.003, beta_2=0.99)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, FusedAdam)
    assert restored.get_config() == optimizer.get_config()
