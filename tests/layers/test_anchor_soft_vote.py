"""AnchorSoftVote (Cui et al. 2016, dissertation Eq. 2.3) and its k-means initialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.layers import AnchorSoftVote
from keras_fgvc.layers.anchor_soft_vote import kmeans
from tests.test_case import run_layer_test, run_saved_model_test


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _eq23_reference(x, anchors, gamma):
    """Eq. 2.3 written out with explicit loops over classes and anchors (float64)."""
    x = np.asarray(x, np.float64)
    anchors = np.asarray(anchors, np.float64)
    num_classes, k, _ = anchors.shape
    p = np.zeros((len(x), num_classes))
    for b in range(len(x)):
        for i in range(num_classes):
            for j in range(k):
                p[b, i] += np.exp(-gamma * np.sum((x[b] - anchors[i, j]) ** 2))
        p[b] /= p[b].sum()
    return p


def _layer_with_anchors(anchors, gamma, output="probabilities", dtype=None):
    anchors = np.asarray(anchors)
    layer = AnchorSoftVote(anchors.shape[0], anchors.shape[1], gamma, output=output, dtype=dtype)
    layer.build((None, anchors.shape[2]))
    layer.anchors.assign(anchors.astype("float32"))
    return layer


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("gamma", [0.5, 5.0])
def test_matches_eq23(dtype, gamma):
    rng = np.random.default_rng(0)
    x = _unit(rng.normal(size=(7, 8))).astype(dtype)
    anchors = rng.normal(size=(4, 3, 8)).astype("float32") * 0.5  # not normalised
    expected = _eq23_reference(x, anchors, gamma)
    probs = _layer_with_anchors(anchors, gamma, "probabilities", dtype)(x)
    log_probs = _layer_with_anchors(anchors, gamma, "log_probabilities", dtype)(x)
    probs, log_probs = keras.ops.convert_to_numpy(probs), keras.ops.convert_to_numpy(log_probs)
    assert probs.dtype == np.dtype(dtype)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(log_probs, np.log(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def test_degenerate_single_class_and_single_anchor():
    rng = np.random.default_rng(1)
    x = _unit(rng.normal(size=(3, 4))).astype("float32")
    one_class = _layer_with_anchors(rng.normal(size=(1, 2, 4)), 5.0, "log_probabilities")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(one_class(x)), 0.0, atol=1e-6)
    # K = 1: p_i = softmax_i(-gamma ||x - u_i||^2).
    anchors = rng.normal(size=(3, 1, 4))
    d2 = ((x[:, None, :] - anchors[None, :, 0, :]) ** 2).sum(-1)
    logits = -2.0 * d2
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    got = keras.ops.convert_to_numpy(_layer_with_anchors(anchors, 2.0)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_large_gamma_is_nearest_anchor_assignment():
    rng = np.random.default_rng(2)
    x = _unit(rng.normal(size=(20, 6))).astype("float32")
    anchors = _unit(rng.normal(size=(5, 3, 6))).astype("float32")
    d2 = ((x[:, None, None, :] - anchors[None]) ** 2).sum(-1)  # [B, N, K]
    nearest_class = np.argmin(d2.reshape(20, -1), axis=1) // 3
    log_p = keras.ops.convert_to_numpy(_layer_with_anchors(anchors, 1e4, "log_probabilities")(x))
    assert np.all(np.isfinite(log_p))
    np.testing.assert_array_equal(np.argmax(log_p, axis=1), nearest_class)
    probs = keras.ops.convert_to_numpy(_layer_with_anchors(anchors, 1e4)(x))
    np.testing.assert_allclose(probs, np.eye(5)[nearest_class], atol=1e-6)
    # Log-probabilities of the other classes: -gamma (d_i - d_min), finite, not -inf.
    class_d = d2.min(-1)
    expected = -1e4 * (class_d - class_d.min(1, keepdims=True))
    np.testing.assert_allclose(log_p, expected, rtol=2e-3, atol=0.5)


def test_small_gamma_is_uniform_vote():
    rng = np.random.default_rng(3)
    x = _unit(rng.normal(size=(4, 6))).astype("float32")
    probs = _layer_with_anchors(rng.normal(size=(4, 2, 6)), 1e-7)(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probs), 0.25, atol=1e-5)


def test_gradients_reach_anchors_and_inputs():
    rng = np.random.default_rng(4)
    layer = _layer_with_anchors(rng.normal(size=(3, 2, 4)), 5.0, "log_probabilities")
    x = tf.Variable(_unit(rng.normal(size=(6, 4))).astype("float32"))
    y = np.array([0, 1, 2, 0, 1, 2])
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(tf.gather(layer(x), y, batch_dims=1))  # Eq. 2.4
    g_anchor, g_x = tape.gradient(loss, [layer.anchors.value, x])
    assert np.all(np.isfinite(g_anchor)) and np.abs(g_anchor).sum() > 0
    assert np.abs(g_x.numpy()).sum() > 0
    assert len(layer.trainable_weights) == 1


def _blobs(rng, num_classes, k, per_cluster, dim, spread=0.02):
    centres = rng.normal(size=(num_classes, k, dim)) * 3.0
    x, y = [], []
    for i in range(num_classes):
        for j in range(k):
            x.append(centres[i, j] + spread * rng.normal(size=(per_cluster, dim)))
            y += [i] * per_cluster
    perm = rng.permutation(len(y))
    return np.concatenate(x)[perm], np.asarray(y)[perm], centres


def test_kmeans_init_finds_cluster_centres():
    rng = np.random.default_rng(5)
    x, y, centres = _blobs(rng, num_classes=4, k=3, per_cluster=30, dim=5)
    layer = AnchorSoftVote(4, anchors_per_class=3)
    anchors = layer.init_from_embeddings(x, y, seed=0)
    np.testing.assert_allclose(layer.anchors.numpy(), anchors)
    for i in range(4):
        for j in range(3):
            # every true centre has one anchor of its class at the cluster mean
            members = x[(y == i)]
            members = members[
                np.argmin(((members[:, None] - centres[i][None]) ** 2).sum(-1), axis=1) == j
            ]
            dist = np.linalg.norm(anchors[i] - members.mean(0), axis=-1)
            assert dist.min() < 1e-5
    # Seeded: the same seed gives the same anchors.
    again = AnchorSoftVote(4, anchors_per_class=3).init_from_embeddings(x, y, seed=0)
    np.testing.assert_array_equal(anchors, again)


def test_kmeans_with_fewer_points_than_anchors():
    rng = np.random.default_rng(6)
    points = rng.normal(size=(2, 3))
    centres = kmeans(points, 4, rng, jitter=1e-3)
    assert centres.shape == (4, 3)
    for p in points:
        assert np.min(np.linalg.norm(centres - p, axis=1)) == 0.0
    # The extra anchors are jittered repeats, so all four are distinct but close.
    assert len(np.unique(centres, axis=0)) == 4
    assert np.max(np.min(np.linalg.norm(centres[:, None] - points[None], axis=-1), 1)) < 0.01
    # Duplicated points count once.
    dup = kmeans(np.ones((5, 3)), 2, rng, jitter=1e-3)
    assert len(np.unique(dup, axis=0)) == 2


def test_init_from_embeddings_bad_input():
    layer = AnchorSoftVote(3, anchors_per_class=2)
    x = np.random.default_rng(7).normal(size=(6, 4))
    with pytest.raises(ValueError, match=r"classes \[2\] have no embeddings"):
        layer.init_from_embeddings(x, np.array([0, 0, 1, 1, 0, 1]))
    with pytest.raises(ValueError, match="must be in"):
        layer.init_from_embeddings(x, np.array([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError, match="labels"):
        layer.init_from_embeddings(x, np.array([0, 1, 2]))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        layer.init_from_embeddings(bad, np.array([0, 1, 2, 0, 1, 2]))
    # keep_missing: class 2 keeps its current anchors; classes 0 and 1 get k-means centres.
    layer.build((None, 4))
    before = layer.anchors.numpy().copy()
    y = np.array([0, 0, 1, 1, 0, 1])
    got = layer.init_from_embeddings(x, y, keep_missing=True)
    np.testing.assert_array_equal(layer.anchors.numpy(), got)
    np.testing.assert_array_equal(got[2], before[2])
    for c in (0, 1):
        members = x[y == c]
        nearest = np.argmin(((members[:, None] - got[c][None]) ** 2).sum(-1), axis=1)
        for j in range(2):
            np.testing.assert_allclose(got[c, j], members[nearest == j].mean(0), atol=1e-6)
    layer = AnchorSoftVote(3, anchors_per_class=2)
    layer.build((None, 5))
    with pytest.raises(ValueError, match="D=4"):
        layer.init_from_embeddings(x, np.array([0, 1, 2, 0, 1, 2]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 0},
        {"num_classes": 2, "anchors_per_class": 0},
        {"num_classes": 2, "gamma": 0.0},
        {"num_classes": 2, "gamma": float("nan")},
        {"num_classes": 2, "output": "logits"},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=list(kwargs)[-1]):
        AnchorSoftVote(**kwargs)


def test_layer_suite_keeps_anchors():
    rng = np.random.default_rng(8)
    x = _unit(rng.normal(size=(8, 6))).astype("float32")
    labels = np.arange(8) % 4

    def init(layer, data):
        layer.init_from_embeddings(data, labels, seed=0)

    out = run_layer_test(
        AnchorSoftVote,
        {"num_classes": 4, "anchors_per_class": 2, "gamma": 5.0},
        input_shape=(8, 6),
        input_data=x,
        expected_output_shape=(8, 4),
        before_call=init,
    )
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, rtol=1e-5)


def test_keras_round_trip_restores_anchor_values(tmp_path):
    rng = np.random.default_rng(9)
    inputs = keras.Input((6,))
    layer = AnchorSoftVote(3, anchors_per_class=2, gamma=2.0, output="probabilities")
    model = keras.Model(inputs, layer(inputs))
    layer.anchors.assign(rng.normal(size=(3, 2, 6)).astype("float32"))
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded.layers[-1].anchors.numpy(), layer.anchors.numpy())
    assert reloaded.layers[-1].get_config() == layer.get_config()


def test_mixed_precision_keeps_float32_anchors():
    keras.config.set_dtype_policy("mixed_bfloat16")
    rng = np.random.default_rng(10)
    anchors = rng.normal(size=(3, 2, 4)).astype("float32")
    x = _unit(rng.normal(size=(5, 4))).astype("float32")
    layer = _layer_with_anchors(anchors, 5.0)
    assert layer.anchors.dtype == "float32"
    probs = keras.ops.convert_to_numpy(layer(x)).astype("float32")
    # Inputs are rounded to bfloat16 on the way in; the distances are float32 math.
    np.testing.assert_allclose(probs, _eq23_reference(x, anchors, 5.0), atol=2e-2)


@pytest.mark.slow
def test_saved_model():
    rng = np.random.default_rng(11)
    inputs = keras.Input((6,))
    emb = keras.layers.UnitNormalization()(keras.layers.Dense(6)(inputs))
    model = keras.Model(inputs, AnchorSoftVote(4, anchors_per_class=3, gamma=5.0)(emb))
    x = rng.normal(size=(5, 6)).astype("float32")
    run_saved_model_test(model, x)
