import numpy as np
import pytest

from mirrorgan_tf.evaluation.r_precision import _distinct_samples, r_precision


def test_oracle_features_score_one():
    features = np.random.default_rng(0).normal(size=(300, 32))
    assert r_precision(features, features) == (1.0, 0.0)


def test_shuffled_features_score_chance():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2000, 32))
    texts = images[rng.permutation(2000)]
    mean, std = r_precision(images, texts, num_candidates=100, runs=10, seed=3)
    # Chance is 1 / 100: the own caption is one of 100 unrelated candidates.
    assert abs(mean - 0.01) < 0.004
    assert 0.0 < std < 0.006


def test_partial_match_between_chance_and_one():
    rng = np.random.default_rng(2)
    images = rng.normal(size=(500, 16))
    texts = images + rng.normal(size=images.shape) * 2.0
    mean, std = r_precision(images, texts, runs=3)
    assert 0.05 < mean < 0.99 and std >= 0.0
    # Same seed, same draws.
    assert r_precision(images, texts, runs=3) == (mean, std)


def test_ties_count_as_misses():
    # Every caption identical: the own caption is never strictly the most similar.
    images = np.random.default_rng(3).normal(size=(100, 8))
    texts = np.ones([100, 8])
    assert r_precision(images, texts, runs=2) == (0.0, 0.0)


def test_mismatched_candidates_are_distinct_and_uniform():
    chosen = _distinct_samples(np.random.default_rng(0), 20000, 10, 3)
    assert all(len(set(row)) == 3 for row in chosen[:2000])
    frequencies = np.bincount(chosen.ravel(), minlength=10) / chosen.size
    np.testing.assert_allclose(frequencies, 0.1, atol=0.005)


def test_errors():
    with pytest.raises(ValueError, match="at least that many samples"):
        r_precision(np.zeros([50, 4]), np.zeros([50, 4]))
    with pytest.raises(ValueError, match="one shape"):
        r_precision(np.zeros([100, 4]), np.zeros([100, 5]))
