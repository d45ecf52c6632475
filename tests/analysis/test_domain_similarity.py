"""EMD domain similarity (Sec. 4.3, Eq. 4.1-4.3) against a brute-force linear program."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from keras_fgvc.analysis import domain_similarity as ds
from keras_fgvc.analysis.features import save_features


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Overrides the Keras reset of tests/conftest.py (slow gc.collect); no Keras here."""
    yield


def lp_emd(s, ws, t, wt):
    """Eq. 4.2 as the transportation LP: min sum f_ij d_ij, row sums ws, column sums wt."""
    ws, wt = np.asarray(ws, float) / np.sum(ws), np.asarray(wt, float) / np.sum(wt)
    m, n = len(ws), len(wt)
    d = np.sqrt(((np.asarray(s)[:, None] - np.asarray(t)[None]) ** 2).sum(-1))
    a_eq = np.zeros((m + n, m * n))
    for i in range(m):
        a_eq[i, i * n : (i + 1) * n] = 1
    for j in range(n):
        a_eq[m + j, j::n] = 1
    res = linprog(d.ravel(), A_eq=a_eq, b_eq=np.concatenate([ws, wt]), bounds=(0, None),
                  method="highs")
    assert res.success
    flow = res.x
    return float(flow @ d.ravel() / flow.sum())


def _domain(rng, m, dim, zero_some=False):
    means = rng.normal(size=(m, dim)) * rng.uniform(0.1, 10)
    weights = rng.integers(1, 50, size=m).astype(float)
    if zero_some and m > 1:
        weights[0] = 0.0
    return means, weights


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(st.integers(0, 100_000), st.integers(1, 6), st.integers(1, 6), st.integers(1, 5),
       st.booleans())
def test_emd_equals_linear_program(seed, m, n, dim, zero_some):
    rng = np.random.default_rng(seed)
    s, ws = _domain(rng, m, dim, zero_some)
    t, wt = _domain(rng, n, dim)
    assert ds.emd(s, ws, t, wt) == pytest.approx(lp_emd(s, ws, t, wt), rel=1e-7, abs=1e-9)


def test_emd_float32_input_and_large_problem_against_lp():
    rng = np.random.default_rng(7)
    s, ws = _domain(rng, 20, 8)
    t, wt = _domain(rng, 15, 8)
    want = lp_emd(s, ws, t, wt)
    assert ds.emd(s.astype(np.float32), ws, t.astype(np.float32), wt) == pytest.approx(
        lp_emd(s.astype(np.float32), ws, t.astype(np.float32), wt), rel=1e-7)
    assert ds.emd(s, ws, t, wt) == pytest.approx(want, rel=1e-7)


def test_identical_domains():
    rng = np.random.default_rng(0)
    s, ws = _domain(rng, 7, 4)
    assert ds.emd(s, ws, s, ws) == pytest.approx(0.0, abs=1e-12)
    assert ds.similarity(s, ws, s, ws) == pytest.approx(1.0, abs=1e-12)


def test_weight_scale_invariance_and_symmetry():
    rng = np.random.default_rng(1)
    s, ws = _domain(rng, 5, 3)
    t, wt = _domain(rng, 4, 3)
    base = ds.emd(s, ws, t, wt)
    assert ds.emd(s, ws * 1000, t, wt * 0.001) == pytest.approx(base, rel=1e-10)
    assert ds.emd(t, wt, s, ws) == pytest.approx(base, rel=1e-10)


def test_similarity_formula():
    s, t = np.array([[0.0, 0.0]]), np.array([[30.0, 40.0]])
    assert ds.emd(s, [1], t, [1]) == pytest.approx(50.0)
    assert ds.similarity(s, [1], t, [1]) == pytest.approx(np.exp(-0.5))  # gamma = 0.01
    assert ds.similarity(s, [1], t, [1], gamma=0.1) == pytest.approx(np.exp(-5.0))
    with pytest.raises(ValueError, match="gamma"):
        ds.similarity(s, [1], t, [1], gamma=-1)


def test_unconverged_solver_is_an_error():
    rng = np.random.default_rng(6)
    s, ws = _domain(rng, 30, 3)
    t, wt = _domain(rng, 30, 3)
    with pytest.raises(RuntimeError, match="raise num_iter_max"):
        ds.emd(s, ws, t, wt, num_iter_max=2)


def test_class_means():
    x = np.array([[0.0, 1.0], [2.0, 3.0], [10.0, 10.0], [5.0, 5.0], [7.0, 7.0], [9.0, 9.0]])
    y = np.array([3, 3, 8, 5, 5, 5])
    means, weights, classes = ds.class_means(x, y)
    np.testing.assert_allclose(means, [[1.0, 2.0], [7.0, 7.0], [10.0, 10.0]])
    np.testing.assert_allclose(weights, [2 / 6, 3 / 6, 1 / 6])
    assert classes.tolist() == [3, 5, 8]
    means, weights, classes = ds.class_means(x, y, min_count=2)
    assert classes.tolist() == [3, 5]
    np.testing.assert_allclose(weights, [0.4, 0.6])
    with pytest.raises(ValueError, match="No class has at least min_count=4"):
        ds.class_means(x, y, min_count=4)


def test_class_similarities_match_emd_of_single_point():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(9, 4)) * 5
    t, wt = _domain(rng, 6, 4)
    sims = ds.class_similarities(src, t, wt)
    for i in range(len(src)):
        assert sims[i] == pytest.approx(ds.similarity(src[i : i + 1], [1.0], t, wt), rel=1e-10)


def test_select_source_classes_and_union():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(30, 5)) * 20
    targets = [_domain(rng, 4, 5) for _ in range(3)]
    sel = ds.select_source_classes(src, *targets[0], k=5)
    brute = [ds.similarity(src[i : i + 1], [1.0], *targets[0]) for i in range(30)]
    assert sel.indices.tolist() == np.argsort(brute)[::-1][:5].tolist()
    assert np.all(np.diff(sel.similarities) <= 0)
    union = ds.select_source_union(src, targets, k=[5, 3, 2])
    expected = set()
    for (t, w), k in zip(targets, [5, 3, 2]):
        expected |= set(ds.select_source_classes(src, t, w, k).indices.tolist())
    assert union.tolist() == sorted(expected)
    assert ds.select_source_union(src, targets, k=30).tolist() == list(range(30))


def test_bad_input():
    rng = np.random.default_rng(4)
    s, ws = _domain(rng, 3, 2)
    t, wt = _domain(rng, 3, 2)
    with pytest.raises(ValueError, match="dimensions"):
        ds.emd(s, ws, np.ones((3, 4)), wt)
    with pytest.raises(ValueError, match="source_weights must be 1-D with 3 entries"):
        ds.emd(s, ws[:2], t, wt)
    with pytest.raises(ValueError, match="non-negative"):
        ds.emd(s, -ws, t, wt)
    with pytest.raises(ValueError, match="sum to 0"):
        ds.emd(s, np.zeros(3), t, wt)
    bad = s.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ds.emd(bad, ws, t, wt)
    with pytest.raises(ValueError, match="labels has 2 entries but features has 3"):
        ds.class_means(s, [0, 1])
    with pytest.raises(ValueError, match=r"classes \[1\] have no images"):
        ds.class_means(s, [0, 2, 2], num_classes=3)
    with pytest.raises(ValueError, match="outside"):
        ds.class_means(s, [0, 2, 5], num_classes=3)
    with pytest.raises(ValueError, match="empty"):
        ds.class_means(np.zeros((0, 2)), [])
    with pytest.raises(ValueError, match="k must be in"):
        ds.select_source_classes(s, t, wt, k=4)
    with pytest.raises(ValueError, match="values of k"):
        ds.select_source_union(s, [(t, wt)], k=[1, 2])


def test_cli(tmp_path):
    rng = np.random.default_rng(5)
    xs, ys = rng.normal(size=(60, 3)), np.repeat(np.arange(6), 10)
    xt, yt = rng.normal(size=(20, 3)) + 1, np.repeat(np.arange(2), 10)
    save_features(tmp_path / "s.npz", xs, ys)
    save_features(tmp_path / "t.npz", xt, yt)
    out = tmp_path / "r.json"
    ds.main(["--source", str(tmp_path / "s.npz"), "--target", str(tmp_path / "t.npz"),
             "--target", str(tmp_path / "t.npz"), "--select_k", "2", "--output", str(out)])
    result = json.loads(out.read_text())
    src = ds.class_means(xs, ys)
    tgt = ds.class_means(xt, yt)
    want = ds.emd(src.means, src.weights, tgt.means, tgt.weights)
    assert result["targets"][0]["emd"] == pytest.approx(want)
    assert result["targets"][0]["similarity"] == pytest.approx(np.exp(-0.01 * want))
    sel = ds.select_source_classes(src.means, tgt.means, tgt.weights, 2)
    assert result["targets"][0]["selected_classes"] == sel.indices.tolist()
    assert result["union_classes"] == sorted(sel.indices.tolist())


def _png_ok(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    import matplotlib.image

    assert matplotlib.image.imread(path).ndim == 3


def test_cli_plot(tmp_path):
    rng = np.random.default_rng(6)
    save_features(tmp_path / "s.npz", rng.normal(size=(40, 3)), np.repeat(np.arange(4), 10))
    save_features(tmp_path / "t.npz", rng.normal(size=(20, 3)), np.repeat(np.arange(2), 10))
    plot = tmp_path / "sub" / "sim.png"
    ds.main(["--source", str(tmp_path / "s.npz"), "--target", str(tmp_path / "t.npz"),
             "--plot", str(plot)])  # no --select_k: top min(10, m) classes
    _png_ok(plot)
    with pytest.raises(SystemExit):
        ds.main(["--source", str(tmp_path / "s.npz"), "--target", str(tmp_path / "t.npz"),
                 "--plot", str(tmp_path / "sim.jpg")])
    with pytest.raises(SystemExit):  # no target at all
        ds.main(["--source", str(tmp_path / "s.npz")])


def test_cli_extracts_source_and_target_with_a_saved_model(tmp_path):
    """--source_dataset / --target_dataset: features from --model_path, mixed with an .npz."""
    import keras

    from keras_fgvc.analysis import features as fl

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(3, name="classifier")(x)
    model = keras.Model(inputs, {"logits": logits, "probabilities": keras.layers.Softmax()(logits)})
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(7)
    src_images, src_labels = rng.integers(0, 255, (24, 6, 6)).astype(np.uint8), np.arange(24) % 4
    tgt_images, tgt_labels = rng.integers(0, 255, (12, 6, 6, 1)).astype(np.uint8), np.arange(12) % 2
    np.savez(tmp_path / "src.npz", images=src_images, labels=src_labels)
    np.savez(tmp_path / "tgt.npz", images=tgt_images, labels=tgt_labels)
    xt_file, yt_file = rng.normal(size=(10, 4)), np.arange(10) % 2
    save_features(tmp_path / "tf.npz", xt_file, yt_file)
    out, plot = tmp_path / "r.json", tmp_path / "sim.png"
    result = ds.main([
        "--model_path", str(tmp_path / "model.keras"),
        "--source_dataset", str(tmp_path / "src.npz") + ":train",
        "--target", str(tmp_path / "tf.npz"),
        "--target_dataset", str(tmp_path / "tgt.npz"),
        "--select_k", "2", "--output", str(out), "--plot", str(plot)])
    assert json.loads(out.read_text()) == result
    xs = fl.extract_features(model, src_images[..., None].astype(np.float32))
    xt = fl.extract_features(model, tgt_images.astype(np.float32))
    src, tgt, tgt_file = ds.class_means(xs, src_labels), ds.class_means(xt, tgt_labels), \
        ds.class_means(xt_file, yt_file)
    assert [e["target"] for e in result["targets"]] == [str(tmp_path / "tf.npz"),
                                                        str(tmp_path / "tgt.npz")]
    for entry, t in zip(result["targets"], [tgt_file, tgt]):
        want = ds.emd(src.means, src.weights, t.means, t.weights)
        assert entry["emd"] == pytest.approx(want, rel=1e-5)
        sel = ds.select_source_classes(src.means, t.means, t.weights, 2)
        assert entry["selected_classes"] == sel.indices.tolist()
    _png_ok(plot)
    with pytest.raises(SystemExit):  # a data set needs a model
        ds.main(["--source_dataset", str(tmp_path / "src.npz"), "--target",
                 str(tmp_path / "tf.npz")])


def test_parse_dataset_spec():
    from keras_fgvc.analysis.features import parse_dataset_spec

    assert parse_dataset_spec("fashion_mnist:train") == ("fashion_mnist", "train")
    assert parse_dataset_spec("fashion_mnist") == ("fashion_mnist", "test")
    assert parse_dataset_spec("/d/x.npz:test") == ("/d/x.npz", "test")
    assert parse_dataset_spec("C:/d/x.npz") == ("C:/d/x.npz", "test")
