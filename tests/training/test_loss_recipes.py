"""Loss recipes: the trainer's composition of loss terms matches the papers' equations."""

import numpy as np
import pytest

from keras_fgvc.losses import TripletLoss
from keras_fgvc.training.experiments import resolve_config
from keras_fgvc.training.loss_recipes import build_loss
from tests.training.conftest import make_toy_task


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("omega", [0.1, 0.5, 1.0])
def test_triplet_anchor_recipe_is_eq_2_5(omega):
    """L = omega * L_triplet + (1 - omega) * (-log p_y)  (Eq. 2.4-2.5)."""
    task = make_toy_task()
    config = resolve_config(
        "fashion_metric_triplet_anchors", [f"loss_kwargs.omega={omega}"]
    )
    recipe = build_loss(config, task)
    rng = np.random.default_rng(0)
    batch_size, num_classes = 8, task.num_classes
    labels = rng.integers(0, num_classes, size=batch_size)
    embedding = rng.normal(size=(batch_size, 16)).astype("float32")
    # Soft-vote outputs are log-probabilities (Eq. 2.3): a normalised distribution.
    log_p = _log_softmax(rng.normal(size=(batch_size, num_classes))).astype("float32")
    got = np.asarray(recipe({"labels": labels}, {"logits": log_p, "embedding": embedding}))

    classification = -log_p[np.arange(batch_size), labels]  # Eq. 2.4
    triplet = np.asarray(TripletLoss(margin=0.2, positive_fraction=0.6, reduction=None)(
        labels, embedding))
    np.testing.assert_allclose(got, omega * triplet + (1 - omega) * classification,
                               rtol=1e-5, atol=1e-6)


def test_omega_outside_unit_interval_is_an_error():
    config = resolve_config("fashion_metric_triplet_anchors", ["loss_kwargs.omega=1.5"])
    with pytest.raises(ValueError, match="omega"):
        build_loss(config, make_toy_task())


@pytest.mark.parametrize("mining", ["hard", "naive"])
def test_triplet_recipe_is_eq_2_1_on_the_embedding(mining):
    """loss=triplet: Eq. 2.1 alone on outputs["embedding"]; logits are ignored."""
    from keras_fgvc.training.config import validate_config
    from keras_fgvc.training.loss_recipes import list_losses

    assert "triplet" in list_losses()
    config = resolve_config("fashion_metric_triplet_anchors", [
        "loss=triplet", "loss_kwargs.positive_fraction=1.0", "loss_kwargs.margin=0.3",
        f"loss_kwargs.mining={mining}"])
    validate_config(config)
    recipe = build_loss(config, make_toy_task())
    assert recipe.targets == ["labels"] and [t.output for t in recipe.terms] == ["embedding"]
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=10)
    embedding = rng.normal(size=(10, 8)).astype("float32")
    got = np.asarray(recipe({"labels": labels}, {"logits": np.full((10, 3), np.nan, "float32"),
                                                 "embedding": embedding}))
    expected = np.asarray(TripletLoss(margin=0.3, positive_fraction=1.0, mining=mining,
                                      reduction=None)(labels, embedding))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert np.mean(got) > 0.0


def test_register_loss_recipe_public_path():
    from keras_fgvc.training import loss_recipes

    def builder(config, task, num_classes):
        return [loss_recipes.Term(TripletLoss(margin=0.7, reduction=None), output="embedding",
                                  weight=2.0)]

    name = "_test_double_triplet"
    try:
        assert loss_recipes.register_loss_recipe(name)(builder) is builder
        assert name in loss_recipes.list_losses()
        assert loss_recipes.register_loss_recipe(name, builder) is builder  # same: no-op
        with pytest.raises(ValueError, match=name):
            loss_recipes.register_loss_recipe(name, lambda c, t, n: [])
        config = resolve_config("fashion_metric_triplet_anchors", [f"loss={name}"])
        recipe = build_loss(config, make_toy_task())
        rng = np.random.default_rng(2)
        labels = rng.integers(0, 3, size=8)
        embedding = rng.normal(size=(8, 4)).astype("float32")
        expected = 2.0 * np.asarray(TripletLoss(margin=0.7, reduction=None)(labels, embedding))
        np.testing.assert_allclose(recipe({"labels": labels}, {"embedding": embedding}),
                                   expected, rtol=1e-6)
    finally:
        loss_recipes._RECIPES.pop(name, None)
    for bad in ["", None]:
        with pytest.raises(ValueError, match="non-empty"):
            loss_recipes.register_loss_recipe(bad)
    with pytest.raises(ValueError, match="callable"):
        loss_recipes.register_loss_recipe("_x", 3)


def _official_ldam_drw(labels, cosine, counts, weights, max_margin=0.5, s=30.0):
    """kaidic/LDAM-DRW: F.cross_entropy(s * (cos - m_y e_y), y, weight=w), mean reduction."""
    m = 1.0 / np.sqrt(np.sqrt(np.asarray(counts, np.float64)))
    m = m * (max_margin / m.max())
    z = s * (cosine - np.eye(cosine.shape[1])[labels] * m[labels][:, None])
    nll = -_log_softmax(z)[np.arange(len(labels)), labels]
    w = np.asarray(weights, np.float64)[labels]
    return (w * nll).sum() / w.sum()


@pytest.mark.parametrize("strategy_name", ["one_device", "mirrored"])
def test_ldam_drw_recipe_is_the_official_weighted_mean(strategy_name):
    import tensorflow as tf

    from keras_fgvc.losses import class_balanced_weights
    from keras_fgvc.training.strategy import make_strategy

    task = make_toy_task(n_train=96, num_classes=4)
    task.train.labels[:80] = 0  # mostly background, as after DRW starts on Fashion-BG
    counts = task.class_counts("train").tolist()
    weights = np.asarray(class_balanced_weights(counts, 0.9999), np.float32)
    strategy = make_strategy(strategy_name)
    with strategy.scope():
        class_weights = tf.Variable(weights)
    recipe = build_loss(resolve_config("fashion_bg_ldam_drw"), task, class_weights)
    rng = np.random.default_rng(0)
    labels = np.array([0] * 14 + [1, 3], np.int32)
    cosine = rng.uniform(-1, 1, size=(16, 4)).astype("float32")
    expected = _official_ldam_drw(labels, cosine.astype(np.float64), counts, weights)

    def dataset_fn(context):
        per = context.get_per_replica_batch_size(16)
        ds = tf.data.Dataset.from_tensor_slices(({"labels": labels}, {"logits": cosine}))
        return ds.shard(context.num_input_pipelines, context.input_pipeline_id).batch(per)

    batch, outputs = next(iter(strategy.distribute_datasets_from_function(dataset_fn)))

    def step(b, o):
        return tf.nn.compute_average_loss(recipe(b, o), global_batch_size=16)

    loss = strategy.reduce(tf.distribute.ReduceOp.SUM,
                           strategy.run(step, args=(batch, outputs)), axis=None)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # Far from the batch mean of w_y * l_y (sum / B, what a plain class-weighted term gives).
    batch_mean = expected * float(weights[labels].sum()) / len(labels)
    assert abs(float(loss) - batch_mean) > 0.5 * expected


@pytest.mark.parametrize("loss", ["cb_softmax", "cb_sigmoid", "cb_focal"])
def test_class_balanced_loss_and_drw_together_are_refused(loss):
    """Class-balanced weights and DRW both multiply an example's loss by its class weight:
    together w_y^2. Refused with a message; DRW on the unweighted losses (beta 0) stays."""
    task = make_toy_task()
    with pytest.raises(ValueError, match="square the weight"):
        build_loss(resolve_config("fashion_lt10_softmax", [f"loss={loss}", "drw_epoch=1"]),
                   task)
    build_loss(resolve_config("fashion_lt10_softmax", [f"loss={loss}"]), task)
    build_loss(resolve_config("fashion_lt10_softmax", [f"loss={loss}", "drw_epoch=1",
                                                       "loss_kwargs.beta=0.0"]), task)
    build_loss(resolve_config("fashion_lt10_softmax", ["loss=focal", "drw_epoch=1"]), task)
