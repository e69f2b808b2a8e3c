"""Tests for mirrorgan_tf/evaluation/inception.py: IS, FID statistics and distance, Inception."""

import keras
import numpy as np
import pytest

from mirrorgan_tf.evaluation.inception import (
    InceptionClassifier,
    StreamingInceptionScore,
    StreamingStatistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    load_features,
    load_statistics,
    save_statistics,
)


def _reference_inception_score(preds, splits):
    # The reference code (improved-gan, Salimans et al. 2016), written out directly.
    scores = []
    n = preds.shape[0]
    for k in range(splits):
        part = preds[k * n // splits : (k + 1) * n // splits]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return np.mean(scores), np.std(scores)


def _random_spd(rng, dim, rank=None):
    a = rng.normal(size=(dim, rank or dim))
    return a @ a.T / dim


# === Inception Score ===
def test_uniform_predictions_score_one():
    mean, std = inception_score(np.full([200, 1000], 1e-3))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_balanced_one_hot_predictions_score_the_class_count():
    classes = 10
    # Every split of 100 consecutive images holds each class 10 times.
    preds = np.eye(classes)[np.arange(1000) % classes]
    mean, std = inception_score(preds, splits=10)
    assert mean == pytest.approx(classes, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)
    # One class only: every image confident and all the same -> 1.
    assert inception_score(np.eye(classes)[np.zeros(100, int)], splits=5)[0] == pytest.approx(1.0)


def test_matches_reference_code_and_streaming_matches_array():
    rng = np.random.default_rng(0)
    preds = rng.dirichlet(np.full(50, 0.3), size=1003)  # N not a multiple of the splits
    expected = _reference_inception_score(preds, 10)
    np.testing.assert_allclose(inception_score(preds, splits=10), expected, rtol=1e-10)
    # Uneven batches, consumed as a stream.
    cuts = [0, 7, 300, 301, 650, 1003]
    stream = (preds[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    np.testing.assert_allclose(
        inception_score(stream, splits=10, num_images=1003), expected, rtol=1e-10
    )
    # A stream without num_images is gathered first: same result.
    stream = (preds[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    np.testing.assert_allclose(inception_score(stream, splits=10), expected, rtol=1e-10)


def test_zero_probabilities_do_not_give_nan():
    preds = np.eye(4)[np.arange(40) % 4]  # exact zeros, log 0 avoided
    assert np.isfinite(inception_score(preds, splits=2)).all()


def test_streaming_inception_score_errors():
    score = StreamingInceptionScore(num_images=4, splits=2)
    score.update(np.full([3, 5], 0.2))
    with pytest.raises(ValueError, match="3 of num_images=4"):
        score.result()
    with pytest.raises(ValueError, match="more than num_images"):
        score.update(np.full([2, 5], 0.2))
    with pytest.raises(ValueError, match="splits <= num_images"):
        StreamingInceptionScore(num_images=3, splits=10)


# === Streaming statistics ===
def test_streaming_statistics_equal_batch_statistics():
    rng = np.random.default_rng(1)
    # A large offset next to the spread: raw sums of x x^T would lose digits here.
    x = 1e4 + rng.normal(size=(1001, 12)) @ rng.normal(size=(12, 12))
    chunked = StreamingStatistics(12)
    for a in range(0, 1001, 64):
        chunked.update(x[a : a + 64])
    whole = StreamingStatistics(12)
    whole.update(x)
    for stats in (chunked, whole):
        assert stats.count == 1001
        np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-13, atol=0)
        np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(chunked.covariance, whole.covariance, rtol=1e-9, atol=1e-9)
    assert chunked.covariance.dtype == np.float64


def test_streaming_statistics_errors():
    stats = StreamingStatistics(3)
    with pytest.raises(ValueError, match="no features"):
        _ = stats.mean
    stats.update(np.ones([1, 3]))
    with pytest.raises(ValueError, match="at least 2 samples"):
        _ = stats.covariance
    with pytest.raises(ValueError, match=r"\[batch, 3\]"):
        stats.update(np.ones([2, 4]))


# === Frechet distance ===
def test_fid_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 32)) @ rng.normal(size=(32, 32))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # Singular covariance (fewer samples than dimensions), where scipy's sqrtm struggles.
    y = rng.normal(size=(10, 32))
    mu, sigma = y.mean(0), np.cov(y, rowvar=False)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_fid_diagonal_closed_form():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    d1, d2 = rng.uniform(0.1, 3, size=8), rng.uniform(0.1, 3, size=8)
    # Diagonal covariances commute: d^2 = |mu1 - mu2|^2 + sum (sqrt(d1) - sqrt(d2))^2.
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    got = frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2))
    assert got == pytest.approx(expected, rel=1e-12)


def test_fid_matches_the_trace_of_a_general_square_root():
    rng = np.random.default_rng(4)
    s1, s2 = _random_spd(rng, 6), _random_spd(rng, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    # Independent route: S1 S2 has real non-negative eigenvalues; tr sqrt = sum of their roots.
    eigenvalues = np.linalg.eigvals(s1 @ s2)
    trace_sqrt = np.sum(np.sqrt(np.clip(eigenvalues.real, 0, None)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_two_gaussian_samples_matches_the_closed_form():
    rng = np.random.default_rng(5)
    n, dim = 200_000, 4
    mu1, mu2 = np.zeros(dim), np.array([1.0, -0.5, 0.0, 2.0])
    d1, d2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([4.0, 1.0, 0.5, 0.25])
    x = mu1 + rng.normal(size=(n, dim)) * np.sqrt(d1)
    y = mu2 + rng.normal(size=(n, dim)) * np.sqrt(d2)
    sx, sy = StreamingStatistics(dim), StreamingStatistics(dim)
    for a in range(0, n, 10_000):
        sx.update(x[a : a + 10_000])
        sy.update(y[a : a + 10_000])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)  # 6.75
    got = frechet_distance(sx.mean, sx.covariance, sy.mean, sy.covariance)
    assert got == pytest.approx(expected, abs=0.05)


def test_fid_is_symmetric_and_non_negative():
    rng = np.random.default_rng(6)
    for rank in (None, 3):  # full rank and singular covariances
        for _ in range(5):
            s1, s2 = _random_spd(rng, 16, rank), _random_spd(rng, 16, rank)
            mu1, mu2 = rng.normal(size=16), rng.normal(size=16) * 0.01
            forward = frechet_distance(mu1, s1, mu2, s2)
            backward = frechet_distance(mu2, s2, mu1, s1)
            assert forward >= 0.0
            assert forward == pytest.approx(backward, rel=1e-8, abs=1e-10)


def test_fid_rejects_bad_shapes_and_nan():
    with pytest.raises(ValueError, match="covariance"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.full([2, 2], np.nan), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="sizes 2 and 3"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_statistics_npz_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    mu, sigma = rng.normal(size=5), _random_spd(rng, 5)
    path = str(tmp_path / "sub" / "stats")  # no suffix: written exactly there
    assert save_statistics(path, mu, sigma) == path
    loaded_mu, loaded_sigma = load_statistics(path)
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)
    with np.load(path) as data:
        assert sorted(data.files) == ["mu", "sigma"]
    np.savez(tmp_path / "bad.npz", mu=mu)
    with pytest.raises(ValueError, match="sigma"):
        load_statistics(str(tmp_path / "bad.npz"))
    with pytest.raises(FileNotFoundError, match="compute-reference-stats"):
        load_statistics(str(tmp_path / "missing.npz"))
    assert load_features(path) is None
    # With the per-image features (for KID): mu and sigma stay as pytorch-fid reads them.
    features = rng.normal(size=(3, 5))
    save_statistics(path, mu, sigma, features=features)
    np.testing.assert_array_equal(load_statistics(path)[0], mu)
    np.testing.assert_allclose(load_features(path), features.astype(np.float32))
    with pytest.raises(ValueError, match=r"features must be \[N, 5\]"):
        save_statistics(path, mu, sigma, features=features[:, :4])


# === Kernel Inception Distance ===
def _direct_mmd(x, y):
    """The unbiased MMD^2 of Binkowski et al. with k(a, b) = (a.b / d + 1)^3, as loops."""
    d = x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.5, size=(9, 3))
    # One subset of every feature (min(7, 9) = 7 of y, drawn): a subset of x is all of x.
    kid = kernel_inception_distance(x, x[::-1] + 0.0, num_subsets=1, subset_size=100)
    assert kid["subset_size"] == 7
    assert kid["mean"] == pytest.approx(_direct_mmd(x, x[::-1]), abs=1e-12)
    # Several subsets: the draws are numpy's `choice` without replacement from `seed`.
    kid = kernel_inception_distance(x, y, num_subsets=4, subset_size=5, seed=3)
    draws = np.random.default_rng(3)
    values = []
    for _ in range(4):
        a = x[draws.choice(7, 5, replace=False)]
        values.append(_direct_mmd(a, y[draws.choice(9, 5, replace=False)]))
    assert kid["mean"] == pytest.approx(np.mean(values), rel=1e-10)
    assert kid["std"] == pytest.approx(np.std(values), rel=1e-10)
    assert kid["standard_error"] == pytest.approx(np.std(values) / 2, rel=1e-10)
    assert (kid["num_subsets"], kid["subset_size"]) == (4, 5)


def test_kid_is_unbiased_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    same = kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)),
                                     num_subsets=20, subset_size=100)
    # Unbiased: about zero for one distribution (can be negative), within its uncertainty.
    assert abs(same["mean"]) < 4 * same["standard_error"] + 1e-3
    shifted = [
        kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(shift, 1, (400, 8)),
                                  num_subsets=20, subset_size=100)["mean"]
        for shift in (0.5, 1.0)
    ]
    assert 0.05 < shifted[0] < shifted[1]


def test_kid_errors():
    with pytest.raises(ValueError, match="one D"):
        kernel_inception_distance(np.zeros([4, 3]), np.zeros([4, 2]))
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(np.zeros([1, 3]), np.zeros([4, 3]))


# === The classifier ===
@pytest.fixture(scope="module")
def random_inception():
    return InceptionClassifier.from_weights(None)


def test_inception_classifier_outputs(random_inception):
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, size=(3, 64, 64, 3)).astype(np.uint8)
    probabilities, features = random_inception(images)
    assert probabilities.shape == (3, 1000) and features.shape == (3, 2048)
    assert probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (features >= 0).all()  # average of ReLU maps
    # uint8 and the equivalent floats in [-1, 1] give the same result; batch size is free.
    floats = images.astype(np.float32) / 127.5 - 1.0
    p2, f2 = random_inception(floats[:2])
    np.testing.assert_allclose(p2, probabilities[:2], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(f2, features[:2], rtol=1e-4, atol=1e-5)


def test_inception_runs_in_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        classifier = InceptionClassifier.from_weights(None)
        assert keras.config.dtype_policy().name == "mixed_bfloat16"  # restored
        assert all(layer.dtype_policy.name == "float32" for layer in classifier.network.layers)
        probabilities, _ = classifier(np.zeros([1, 32, 32, 3], np.uint8))
        np.testing.assert_allclose(probabilities.sum(), 1.0, atol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_inception_from_weights_file(tmp_path):
    # A converted classifier with its own class count (e.g. CUB's fine-tuned Inception).
    base = keras.applications.InceptionV3(include_top=True, weights=None, classes=7)
    path = str(tmp_path / "cub_inception.weights.h5")
    base.save_weights(path)
    classifier = InceptionClassifier.from_weights(path)
    images = np.random.default_rng(9).uniform(-1, 1, size=(2, 299, 299, 3)).astype(np.float32)
    probabilities, features = classifier(images)
    assert probabilities.shape == (2, 7) and features.shape == (2, 2048)
    np.testing.assert_allclose(probabilities, base(images), rtol=1e-4, atol=1e-6)
    assert classifier.source == path


def test_inception_from_keras_file(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, activation="softmax")(x)
    path = str(tmp_path / "classifier.keras")
    keras.Model(inputs, outputs).save(path)
    classifier = InceptionClassifier.from_weights(path)
    probabilities, features = classifier(np.zeros([2, 40, 40, 3], np.uint8))
    assert probabilities.shape == (2, 5) and features.shape == (2, 6)
    # A model that does not end in the Dense classifier is refused.
    inputs = keras.Input((8, 8, 3))
    keras.Model(inputs, keras.layers.Flatten()(inputs)).save(str(tmp_path / "flat.keras"))
    with pytest.raises(ValueError, match="Dense softmax"):
        InceptionClassifier.from_weights(str(tmp_path / "flat.keras"))
    with pytest.raises(ValueError, match="imagenet"):
        InceptionClassifier.from_weights("inception.pt")
