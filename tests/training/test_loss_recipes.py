"""Loss recipes: the trainer's composition of loss terms matches the papers' equations."""

import numpy as np
import pytest

from keras_fgvc.losses import TripletLoss
from keras_fgvc.training.config import resolve_config
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
