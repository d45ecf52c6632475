"""Relative RBF approximation error of KernelPooling (Eq. 3.11-3.12)."""

import json

import numpy as np
import pytest

from keras_fgvc.analysis import kernel_approximation as ka
from keras_fgvc.analysis.features import save_features


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Overrides the Keras reset of tests/conftest.py (slow gc.collect): the layers here
    are built with an explicit float32 dtype and hold no global state."""
    yield


def _features(n=60, c=16, seed=0):
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(size=(n, c)), 0.0) / np.sqrt(c)  # ReLU-like, x.y > 0


def test_matches_eq_3_12_written_out():
    x = _features()
    gamma, num_pairs = 0.7, 300
    errors = ka.relative_error(x, 3, 256, gamma, num_pairs=num_pairs, seed=3, reduction="none")
    i, j = ka.sample_pairs(len(x), num_pairs, seed=3)
    phi, alpha = ka.feature_map(x, 3, 256, gamma, seed=3)
    beta = np.exp(-gamma * ((x[i] ** 2).sum(1) + (x[j] ** 2).sum(1)))
    k_hat = beta * (phi[i] * phi[j]).sum(1) / alpha[0] ** 2  # beta * Taylor kernel
    k_rbf = np.exp(-gamma * ((x[i] - x[j]) ** 2).sum(1))
    np.testing.assert_allclose(errors, np.abs(k_hat - k_rbf) / k_rbf, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(alpha ** 2, [(2 * gamma) ** p / np.prod(np.arange(1, p + 1))
                                           for p in range(4)], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_order_one_is_exact_truncation(dtype):
    """p = 1 has no sketch: phi(x).phi(y) = 1 + 2 gamma x.y exactly."""
    x = _features(seed=1).astype(dtype)
    gamma = 0.5
    errors = ka.relative_error(x, 1, 8, gamma, num_pairs=200, reduction="none")
    i, j = ka.sample_pairs(len(x), 200, seed=0)
    xy = (x[i].astype(np.float64) * x[j]).sum(1)
    want = np.abs((1 + 2 * gamma * xy) * np.exp(-2 * gamma * xy) - 1)
    np.testing.assert_allclose(errors, want, rtol=2e-5, atol=1e-7)


def test_error_falls_with_dims_and_order():
    x = _features(n=80, c=32, seed=2)
    gamma = ka.default_gamma(x) / 4
    small = ka.relative_error(x, 4, 64, gamma, num_pairs=500)
    large = ka.relative_error(x, 4, 4096, gamma, num_pairs=500)
    assert large < small
    assert large < 0.02  # close to 1% with enough dims and a small gamma (Sec. 3.3.2)
    low_order = ka.relative_error(x, 1, 4096, gamma, num_pairs=500)
    assert large < low_order


def test_float32_and_float64_agree_and_gamma_default():
    x = _features(seed=4)
    a = ka.relative_error(x, 2, 128, None, num_pairs=100)
    b = ka.relative_error(x.astype(np.float32), 2, 128, ka.default_gamma(x), num_pairs=100)
    assert a == pytest.approx(b, rel=1e-4)
    xy = x @ x.T
    n = len(x)
    assert ka.default_gamma(x) == pytest.approx(n * (n - 1) / (xy.sum() - np.trace(xy)))


def test_grid_matches_direct_computation():
    """One feature map per d: lower orders truncate phi, other gammas rescale its blocks."""
    x = _features(n=50, c=8, seed=5)
    gammas = [0.8, 0.3]
    grid = ka.relative_error_grid(x, [1, 2, 4], [32, 128], gammas, num_pairs=150, seed=2)
    assert grid.shape == (3, 2, 2)
    i, j = ka.sample_pairs(len(x), 150, seed=2)
    xy = (x[i] * x[j]).sum(1)
    for b, d in enumerate([32, 128]):
        phi, _ = ka.feature_map(x, 4, d, gammas[0], seed=2)
        for c, gamma in enumerate(gammas):
            for a, p in enumerate([1, 2, 4]):
                # Eq. 3.7 truncated at p, with alpha_i^2 = (2 gamma)^i / i! (Eq. 3.11)
                edges = np.cumsum([0, 1, 8] + [d] * 3)
                k = sum((gamma / gammas[0]) ** o
                        * (phi[i, edges[o]:edges[o + 1]] * phi[j, edges[o]:edges[o + 1]]).sum(1)
                        for o in range(p + 1))
                want = np.mean(np.abs(k * np.exp(-2 * gamma * xy) - 1))
                assert grid[a, b, c] == pytest.approx(want, rel=1e-9)
    # The highest order at the first gamma is exactly `relative_error`.
    assert grid[2, 1, 0] == pytest.approx(
        ka.relative_error(x, 4, 128, gammas[0], num_pairs=150, seed=2), rel=1e-9)
    with pytest.raises(ValueError, match="gammas"):
        ka.relative_error_grid(x, [2], [8], [0.0])


def test_pairs_are_distinct_and_cover():
    i, j = ka.sample_pairs(5, 2000, seed=0)
    assert np.all(i != j)
    assert set(np.unique(j)) == set(range(5))


def test_bad_input():
    x = _features()
    bad = x.copy()
    bad[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ka.relative_error(bad, 2, 16, 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        ka.relative_error(x[:1], 2, 16, 0.5)
    with pytest.raises(ValueError, match="gamma must be a positive"):
        ka.relative_error(x, 2, 16, -1.0)
    with pytest.raises(ValueError, match="reduction"):
        ka.relative_error(x, 2, 16, 0.5, reduction="sum")
    with pytest.raises(ValueError, match="mean inner product"):
        ka.default_gamma(np.array([[1.0, 0.0], [-1.0, 0.0]]))  # mean x.y = -1
    with pytest.raises(ValueError, match="order"):
        ka.relative_error(x, 0, 16, 0.5)


def test_cli(tmp_path):
    x = _features(n=40)
    save_features(tmp_path / "f.npz", x, np.zeros(40, int))
    out = tmp_path / "k.json"
    rows = ka.main(["--features", str(tmp_path / "f.npz"), "--order", "2", "--dims", "64",
                    "--gamma", "0.5", "--num_pairs", "100", "--output", str(out)])
    result = json.loads(out.read_text())
    assert result["results"][0]["relative_error"] == pytest.approx(
        ka.relative_error(x, 2, 64, 0.5, num_pairs=100))
    assert rows == result["results"]
