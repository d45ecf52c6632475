"""Every loss survives `.keras` save/load (no custom_objects) and SavedModel export."""

import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc import losses
from tests.test_case import reload_in_fresh_process

COUNTS = [30, 10, 3, 1]


def _cases():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=8)
    logits = rng.normal(size=(8, 4)).astype("float32")
    teacher = rng.normal(size=(8, 4))
    probs = (np.exp(teacher) / np.exp(teacher).sum(-1, keepdims=True)).astype("float32")
    log_p = np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
    return [
        (losses.ClassBalancedSoftmaxCrossEntropy(COUNTS, beta=0.99), labels, logits),
        (losses.ClassBalancedSigmoidCrossEntropy(COUNTS, beta=0.9), labels, logits),
        (losses.ClassBalancedFocalLoss(COUNTS, beta=0.999, gamma=1.0), labels, logits),
        (losses.SigmoidFocalLoss(gamma=2.0, alpha=0.25), labels, logits),
        (losses.TripletLoss(margin=0.3), labels, logits),
        (
            losses.AnchorTripletLoss(4, omega=0.2),
            labels,
            np.concatenate([logits, log_p], axis=-1),
        ),
        (losses.LDAMLoss(COUNTS, class_weights=[1.0, 2.0, 3.0, 4.0]), labels, logits),
        (losses.BackgroundSplittingLoss("soft", temperature=2.0), probs, logits),
    ]


def test_compiled_keras_round_trip_without_custom_objects():
    for loss, y_true, y_pred in _cases():
        width = y_pred.shape[-1]
        model = keras.Sequential([keras.Input((width,)), keras.layers.Identity()])
        model.compile(optimizer="sgd", loss=loss)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            reloaded = keras.saving.load_model(path)
        assert type(reloaded.loss) is type(loss), (type(reloaded.loss), type(loss))
        assert reloaded.loss.get_config() == loss.get_config()
        np.testing.assert_allclose(
            reloaded.loss(y_true, y_pred), loss(y_true, y_pred), rtol=1e-6, err_msg=loss.name
        )


@pytest.mark.slow
def test_saved_model_fresh_process_all_losses():
    """Every loss, exported in one SavedModel function, gives identical values in a new process.

    One fresh process for all losses keeps the test time down (~6 s each).
    The LDAM class-weight variable is tracked by the module (and set to
    non-default values first) so the export holds the current weights.
    """
    cases = _cases()
    ldam = next(loss for loss, _, _ in cases if isinstance(loss, losses.LDAMLoss))
    ldam.set_class_weights(losses.class_balanced_weights(COUNTS, 0.999))
    args = [np.asarray(a) for _, y_true, y_pred in cases for a in (y_true, y_pred)]
    args = [a.astype("int32") if a.dtype.kind == "i" else a.astype("float32") for a in args]

    def all_losses(*tensors):
        return keras.ops.stack(
            [loss(tensors[2 * i], tensors[2 * i + 1]) for i, (loss, _, _) in enumerate(cases)]
        )

    module = tf.Module()
    module.ldam_weights = ldam.class_weights_variable  # tracked: saved with the function
    signature = [tf.TensorSpec([None, *a.shape[1:]], tf.as_dtype(a.dtype)) for a in args]
    module.fn = tf.function(all_losses, input_signature=signature)
    expected = module.fn(*args).numpy()
    eager = [float(loss(y_true, y_pred)) for loss, y_true, y_pred in cases]
    np.testing.assert_allclose(expected, eager, rtol=1e-5)
    assert np.all(expected > 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "saved")
        tf.saved_model.save(module, path)
        got = reload_in_fresh_process(path, "fn", args)["out0"]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_bfloat16_predictions_are_computed_in_float32():
    """Mixed-precision models hand the loss bfloat16 outputs; losses run in float32."""
    for loss, y_true, y_pred in _cases():
        low = tf.cast(tf.constant(y_pred), tf.bfloat16)
        value = loss(y_true, low)
        assert value.dtype == tf.float32, loss.name
        expected = loss(y_true, tf.cast(low, tf.float32))
        np.testing.assert_allclose(value, expected, rtol=1e-6, err_msg=loss.name)


def test_reduction_none_returns_per_example_losses_whose_mean_is_the_loss():
    """The trainer builds losses with reduction=None and averages itself."""
    for loss, y_true, y_pred in _cases():
        per_example_loss = type(loss).from_config({**loss.get_config(), "reduction": None})
        values = per_example_loss(y_true, y_pred)
        assert tuple(values.shape) == (len(y_pred),), loss.name
        np.testing.assert_allclose(np.mean(values), loss(y_true, y_pred), rtol=1e-5)
