"""FID and KID: zero for a set against itself, growing with the noise added to one side, and the
Fréchet distance equal to its closed form for Gaussians."""

from __future__ import annotations

import numpy as np
import pytest

from keras_cvae.evaluation.sample_quality import frechet_distance, kernel_distance


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    mixed = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))
    return np.maximum(mixed / mixed.std(), 0.0)  # ReLU features of unit scale, like a dense layer's


def test_a_set_against_itself_is_zero(features):
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    # KID compares random subsets of the two sets: unbiased, so about 0 (not exactly) for one set.
    noisy = features + np.random.default_rng(5).normal(scale=0.5, size=features.shape)
    same = kernel_distance(features, features, np.random.default_rng(1))
    assert abs(same) < kernel_distance(features, noisy, np.random.default_rng(1)) / 4


def test_both_grow_with_added_noise(features):
    rng = np.random.default_rng(2)
    noisy = [features + rng.normal(scale=scale, size=features.shape) for scale in (0.5, 1.0, 2.0, 4.0)]
    fids = [frechet_distance(features, other) for other in noisy]
    kids = [kernel_distance(features, other, np.random.default_rng(3)) for other in noisy]
    assert fids == sorted(fids) and fids[0] > 0.1
    assert kids == sorted(kids) and kids[0] > 0


def test_the_frechet_distance_of_two_gaussians_matches_the_closed_form():
    # Diagonal covariances: ‖μ1 − μ2‖² + Σ_i (σ1_i − σ2_i)².
    rng = np.random.default_rng(4)
    a = rng.normal(size=(200_000, 3)) * [1.0, 2.0, 0.5]
    b = rng.normal(size=(200_000, 3)) * [3.0, 1.0, 0.5] + [1.0, 0.0, -2.0]
    expected = (1 + 0 + 4) + (1 - 3) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
