"""Granularity measures (Ch. 6, Eq. 6.1-6.5) against brute-force NumPy references."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import silhouette_score

from keras_fgvc.analysis import granularity as g

MEASURES = [g.rs, g.rsm, g.rank, g.rank_m]
PROPERTY = settings(max_examples=15, deadline=None, derandomize=True, database=None)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Overrides the Keras reset of tests/conftest.py (its gc.collect costs ~1 s a test);
    these tests use no Keras state."""
    yield


# --- references written from the equations (O(n^2) loops, exact differences) ---


def _dist(x):
    x = np.asarray(x, np.float64)
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


def _a_b(d, y):
    n = len(y)
    a, b = np.zeros(n), np.zeros(n)
    for i in range(n):
        same = (y == y[i]) & (np.arange(n) != i)
        a[i] = d[i, same].mean()
        b[i] = min(d[i, y == c].mean() for c in np.unique(y) if c != y[i])
    return a, b


def ref_rs(x, y):
    a, b = _a_b(_dist(x), y)
    return np.mean(a / b)  # Eq. 6.2


def ref_medoids(d, y):
    return {c: np.flatnonzero(y == c)[np.argmin(d[np.ix_(y == c, y == c)].sum(1))]
            for c in np.unique(y)}


def ref_rsm(x, y):
    d = _dist(x)
    med = ref_medoids(d, y)
    vals = [d[i, med[y[i]]] / min(d[i, med[c]] for c in med if c != y[i]) for i in range(len(y))]
    return np.mean(vals)  # Eq. 6.3


def ref_rank(x, y):
    d, n = _dist(x), len(y)
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        # ties: samples of other classes rank first
        others.sort(key=lambda j: (d[i, j], y[j] == y[i]))
        ranks = [r + 1 for r, j in enumerate(others) if y[j] == y[i]]
        ap = np.mean([(jj + 1) / r for jj, r in enumerate(ranks)])
        total += n / (n - 1) * (1 - ap)  # Eq. 6.4
    return total / n


def ref_rank_m(x, y):
    d = _dist(x)
    med = ref_medoids(d, y)
    k = len(med)
    vals = []
    for i in range(len(y)):
        own = d[i, med[y[i]]]
        r = sum(d[i, m] <= own for m in med.values())  # ties count against x_i
        vals.append(k / (k - 1) * (1 - 1 / r))  # Eq. 6.5
    return np.mean(vals)


REFS = {g.rs: ref_rs, g.rsm: ref_rsm, g.rank: ref_rank, g.rank_m: ref_rank_m}


def _data(seed, k=3, per_class=8, dim=4, spread=2.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(k, dim))
    y = np.repeat(np.arange(k), per_class)
    x = centers[y] + rng.normal(size=(len(y), dim))
    return x.astype(dtype), y


# --- values ---


@pytest.mark.parametrize("fn", MEASURES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(fn, dtype, seed):
    x, y = _data(seed, k=2 + seed, per_class=5 + 2 * seed, dtype=dtype)
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(fn(x, y), REFS[fn](x, y), rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("fn", MEASURES, ids=lambda f: f.__name__)
def test_chunking_and_precomputed_agree(fn):
    x, y = _data(5, k=4, per_class=9)
    full = fn(x, y)
    assert fn(x, y, chunk_size=1) == pytest.approx(full, rel=1e-8)
    assert fn(x, y, chunk_size=7) == pytest.approx(full, rel=1e-8)
    assert fn(_dist(x), y, metric="precomputed") == pytest.approx(full, rel=1e-8)


def test_silhouette_matches_sklearn():
    x, y = _data(3, k=4, per_class=10)
    y[0] = 7  # a singleton class scores 0, as in sklearn
    assert g.silhouette(x, y) == pytest.approx(silhouette_score(x, y), rel=1e-8)
    assert g.silhouette(x, y, chunk_size=3) == pytest.approx(silhouette_score(x, y), rel=1e-8)


def test_hand_computed_values():
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    y = np.array([0, 0, 0, 1, 1, 1])
    # Medoids are 1 and 11; every sample is nearest to its own medoid.
    assert g.rank_m(x, y) == 0.0
    assert g.rank(x, y) == 0.0
    assert g.rsm(x, y) == pytest.approx((1 / 11 + 0 + 1 / 9 + 1 / 9 + 0 + 1 / 11) / 6)
    # Swap one label per class: those two samples rank their own medoid second.
    y2 = np.array([0, 0, 1, 0, 1, 1])
    _, med = g.class_medoids(x, y2)
    assert g.rank_m(x, y2) == pytest.approx(ref_rank_m(x, y2))
    assert 0 < g.rank_m(x, y2) <= 1
    assert med.tolist() == [1, 4]


def test_indistinguishable_classes_are_maximally_fine():
    x = np.ones((6, 3))
    y = np.array([0, 0, 0, 1, 1, 1])
    assert g.rank_m(x, y) == 1.0  # ties count against x_i
    assert g.rs(x, y) == 1.0 and g.rsm(x, y) == 1.0  # 0 / 0 read as 1
    assert g.rank(x, y) == pytest.approx(ref_rank(x, y))
    assert g.rank(x, y) > 0.5


def test_granularity_dict_and_unknown_measure():
    x, y = _data(0)
    out = g.granularity(x, y, measures=("rank_m", "silhouette"))
    assert out == {"rank_m": g.rank_m(x, y), "silhouette": g.silhouette(x, y)}
    with pytest.raises(ValueError, match="Unknown granularity"):
        g.granularity(x, y, measures=("nope",))


# --- properties (Sec. 6.2.2) ---

_shapes = st.tuples(st.integers(0, 10_000), st.integers(2, 4), st.integers(2, 6),
                    st.integers(1, 5))


@PROPERTY
@given(_shapes, st.integers(-6, 6), st.floats(0.01, 100.0))
def test_scale_invariance(shape, exponent, alpha):
    seed, k, per_class, dim = shape
    x, y = _data(seed, k, per_class, dim)
    for fn in MEASURES:
        base = fn(x, y)
        assert fn(x * 2.0**exponent, y) == pytest.approx(base, rel=1e-9, abs=1e-12)
        assert fn(x * alpha, y) == pytest.approx(base, rel=1e-6, abs=1e-9)


@PROPERTY
@given(_shapes, st.randoms(use_true_random=False))
def test_isomorphism_invariance(shape, random):
    seed, k, per_class, dim = shape
    x, y = _data(seed, k, per_class, dim)
    ids = list(range(k))
    random.shuffle(ids)
    y_perm = np.array([ids[c] * 3 + 5 for c in y])  # permuted and renamed class ids
    for fn in MEASURES + [g.silhouette]:
        assert fn(x, y_perm) == pytest.approx(fn(x, y), rel=1e-12, abs=1e-12)


def _consistent_transform(x, y, shrink):
    """[shrink * x, s * onehot(y)]: within-class distances scale by `shrink` <= 1,
    between-class distances grow (s chosen so that 2 s^2 >= (1 - shrink^2) max d^2);
    class medoids stay the same samples."""
    s = np.sqrt((1 - shrink**2) * _dist(x).max() ** 2 / 2) + 0.1
    onehot = np.eye(y.max() + 1)[y] * s
    return np.concatenate([shrink * x, onehot], axis=1)


@PROPERTY
@given(_shapes, st.floats(0.05, 1.0))
def test_granularity_consistency(shape, shrink):
    seed, k, per_class, dim = shape
    x, y = _data(seed, k, per_class, dim, spread=0.5)
    x2 = _consistent_transform(x, y, shrink)
    d, d2 = _dist(x), _dist(x2)
    same = y[:, None] == y[None, :]
    assert np.all(d2[same] <= d[same] + 1e-9) and np.all(d2[~same] >= d[~same] - 1e-9)
    for fn in MEASURES:
        assert fn(x2, y) <= fn(x, y) + 1e-9, fn.__name__


@PROPERTY
@given(st.integers(0, 10_000), st.integers(2, 4), st.integers(2, 5))
def test_granularity_consistency_any_distance(seed, k, per_class):
    """RS and Rank on arbitrary distance matrices: within x u <= 1, between x v >= 1."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), per_class)
    n = len(y)
    d = rng.random((n, n))
    d = np.triu(d, 1) + np.triu(d, 1).T
    f = rng.random((n, n))
    f = np.triu(f, 1) + np.triu(f, 1).T
    same = y[:, None] == y[None, :]
    d2 = np.where(same, d * f, d / np.maximum(f, 1e-3))
    for fn in (g.rs, g.rank):
        assert fn(d2, y, metric="precomputed") <= fn(d, y, metric="precomputed") + 1e-9


@PROPERTY
@given(_shapes)
def test_rank_measures_in_unit_interval(shape):
    seed, k, per_class, dim = shape
    x, y = _data(seed, k, per_class, dim, spread=0.0)  # heavily overlapping classes
    for fn in (g.rank, g.rank_m):
        assert 0.0 <= fn(x, y) <= 1.0
    x_sep, _ = _data(seed, k, per_class, dim, spread=1000.0)
    assert g.rank_m(x_sep, y) == 0.0 and g.rank(x_sep, y) == 0.0


def test_silhouette_is_not_granularity_consistent():
    """Contrast (Sec. 6.2.3): the silhouette *rises* under a consistent transformation."""
    x, y = _data(0, k=3, per_class=10, spread=0.5)
    x2 = _consistent_transform(x, y, 0.5)
    assert g.silhouette(x2, y) > g.silhouette(x, y)
    assert g.rank_m(x2, y) <= g.rank_m(x, y)


def test_simulation_direction():
    """Two unit Gaussians (Sec. 6.3.1): granularity falls as the means separate."""
    rng = np.random.default_rng(0)
    values = []
    for m in (0.0, 2.0, 6.0):
        x = np.concatenate([rng.normal(size=(150, 2)), rng.normal(size=(150, 2)) + [m, 0]])
        y = np.repeat([0, 1], 150)
        values.append([fn(x, y) for fn in MEASURES])
    values = np.array(values)
    assert np.all(np.diff(values, axis=0) < 0)


# --- bad input ---


@pytest.mark.parametrize("fn", MEASURES + [g.silhouette], ids=lambda f: f.__name__)
def test_single_class_is_undefined(fn):
    with pytest.raises(ValueError, match="undefined for a single class"):
        fn(np.random.rand(5, 2), np.zeros(5, int))


@pytest.mark.parametrize("fn", MEASURES, ids=lambda f: f.__name__)
def test_bad_input(fn):
    x, y = _data(0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN/inf values in 1 rows .first bad row: 3"):
        fn(bad, y)
    with pytest.raises(ValueError, match="labels has 23 entries but features has 24"):
        fn(x, y[:-1])
    with pytest.raises(ValueError, match="empty"):
        fn(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(ValueError, match="2-D"):
        fn(x[:, 0], y)
    with pytest.raises(ValueError, match="integer class ids"):
        fn(x, y + 0.5)
    with pytest.raises(ValueError, match="metric"):
        fn(x, y, metric="cosine")
    with pytest.raises(ValueError, match="square"):
        fn(x, y, metric="precomputed")


@pytest.mark.parametrize("fn", [g.rs, g.rank], ids=lambda f: f.__name__)
def test_singleton_class_needs_medoid_measure(fn):
    x, y = _data(0)
    y[0] = 9
    with pytest.raises(ValueError, match=r"classes with 1 sample: \[9\]"):
        fn(x, y)
    assert 0 <= g.rank_m(x, y) <= 1  # the medoid measures handle singletons


def test_cli(tmp_path, capsys):
    from keras_fgvc.analysis.features import save_features

    x, y = _data(1)
    path = tmp_path / "f.npz"
    save_features(path, x, y)
    out = tmp_path / "g.json"
    g.main(["--features", str(path), "--measures", "rank_m", "rs", "--output", str(out)])
    result = json.loads(out.read_text())
    assert result["rank_m"] == pytest.approx(g.rank_m(x, y))
    assert result["rs"] == pytest.approx(g.rs(x, y))
    assert result["n"] == 24 and result["num_classes"] == 3


def test_cli_plot(tmp_path):
    from keras_fgvc.analysis.features import save_features

    x, y = _data(1)
    save_features(tmp_path / "f.npz", x, y)
    plot = tmp_path / "g.png"
    g.main(["--features", str(tmp_path / "f.npz"), "--measures", "rank_m", "rsm",
            "--plot", str(plot)])
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    import matplotlib.image

    assert matplotlib.image.imread(plot).ndim == 3
    with pytest.raises(SystemExit):
        g.main(["--features", str(tmp_path / "f.npz"), "--plot", str(tmp_path / "g.pdf")])


@pytest.mark.parametrize("seed", range(4))
def test_rank_measures_keep_exact_ties_on_the_euclidean_path(seed):
    """Integer features on a 4 x 4 grid tie exactly and often. The Euclidean path computes
    ||x||^2 + ||y||^2 - 2 x.y on centred features, whose rounding breaks ties at random; a
    tie must count against x_i as on exact precomputed distances, in float32 and float64."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, size=(30, 2)).astype(np.float64)
    y = np.repeat([0, 1, 2], 10)
    exact = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))  # integer sums: exact
    for measure in (g.rank, g.rank_m):
        want = measure(exact, y, metric="precomputed")
        for dtype in (np.float64, np.float32):
            assert measure(x.astype(dtype), y) == pytest.approx(want, abs=1e-6), (
                measure.__name__, dtype)
