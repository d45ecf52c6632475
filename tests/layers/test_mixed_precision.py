"""Every public layer under `mixed_float16` and `mixed_bfloat16`, against its float32 output.

The layers are found from the packages' `__all__` (`keras_fgvc.layers`, and
`keras_fgvc.models` for the layers it exports, e.g. `ImageNormalization`), so a
new layer fails here until it has an entry in `CASES`. Each case builds the
layer under float32, copies its weights into the same layer built under each
mixed policy, and compares the outputs with tolerances relative to the output
scale: a few units of the low-precision round-off (2^-10 for float16, 2^-7 for
bfloat16), since the inputs themselves are cast to the compute dtype.
"""

import keras
import numpy as np
import pytest

import keras_fgvc.layers
import keras_fgvc.models

POLICIES = ("mixed_float16", "mixed_bfloat16")
# Machine epsilon of each compute dtype; the tolerance is TOLERANCE_ULPS of them.
EPSILON = {"float16": 2.0**-10, "bfloat16": 2.0**-7}
TOLERANCE_ULPS = 4


def _normal(*shape, scale=1.0):
    return lambda rng: (scale * rng.normal(size=shape)).astype("float32")


def _relu(*shape):
    return lambda rng: np.maximum(rng.normal(size=shape), 0.0).astype("float32")


def _unit_rows(*shape):
    def make(rng):
        x = rng.normal(size=shape)
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype("float32")

    return make


def _pixels(*shape):
    return lambda rng: rng.integers(0, 256, size=shape).astype("float32")


# name -> constructor arguments, input maker, and `output_dtype` when a layer
# documents a fixed output dtype (None: the policy's compute dtype). Inputs of
# scale 300 fit float16 (max 65504) but their squares do not: the layers that
# say they normalise in float32 must do so.
CASES = {
    "AnchorSoftVote": dict(kwargs=dict(num_classes=5, anchors_per_class=3, gamma=5.0),
                           inputs=_unit_rows(4, 16)),
    "BilinearPooling": dict(kwargs={}, inputs=_relu(2, 4, 4, 8)),
    "CompactBilinearPooling": dict(kwargs=dict(dims=64, seed=3), inputs=_relu(2, 4, 4, 8)),
    "FixedBackgroundLogit": dict(kwargs=dict(background_logit=1.3), inputs=_normal(4, 5)),
    "HorizontalFlip": dict(kwargs={}, inputs=_pixels(2, 4, 4, 3)),
    "ImageNormalization": dict(kwargs=dict(mode="torch"), inputs=_pixels(2, 4, 4, 3)),
    "KernelPooling": dict(kwargs=dict(order=3, dims=64, seed=1), inputs=_relu(2, 4, 4, 8)),
    "L2Normalize": dict(kwargs={}, inputs=_normal(4, 10, scale=300.0)),
    "LearnableWeightScaling": dict(kwargs=dict(initial_scale=1.7), inputs=_normal(4, 5)),
    "NormalizedLinear": dict(kwargs=dict(units=6), inputs=_normal(4, 10, scale=300.0),
                             output_dtype="float32"),  # cosines scaled by s = 30 in the loss
    "SignedSqrt": dict(kwargs={}, inputs=_normal(4, 10)),
}


def _public_layers():
    """{name: class} of the layer classes in the packages' `__all__` (models excluded)."""
    found = {}
    for package in (keras_fgvc.layers, keras_fgvc.models):
        for name in package.__all__:
            obj = getattr(package, name)
            if (isinstance(obj, type) and issubclass(obj, keras.layers.Layer)
                    and not issubclass(obj, keras.Model)):
                found[name] = obj
    return found


PUBLIC_LAYERS = _public_layers()


@pytest.fixture
def restore_policy():
    previous = keras.config.dtype_policy()
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def test_every_public_layer_has_a_case():
    assert {"KernelPooling", "ImageNormalization", "SignedSqrt"} <= set(PUBLIC_LAYERS)
    missing = sorted(set(PUBLIC_LAYERS) - set(CASES))
    assert not missing, f"add these layers to CASES in {__file__}: {missing}"


def _build_and_call(cls, kwargs, x, policy, weights=None):
    keras.config.set_dtype_policy(policy)
    layer = cls(**kwargs)
    layer.build(x.shape)
    if weights is not None:
        layer.set_weights(weights)
    return layer, layer(x)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", sorted(PUBLIC_LAYERS))
def test_matches_float32(name, policy, restore_policy):
    if name not in CASES:
        pytest.fail(f"{name} is exported but has no entry in CASES")
    case, cls = CASES[name], PUBLIC_LAYERS[name]
    x = case["inputs"](np.random.default_rng(0))

    reference, y32 = _build_and_call(cls, case["kwargs"], x, "float32")
    y32 = np.asarray(keras.ops.convert_to_numpy(y32), np.float64)
    assert np.all(np.isfinite(y32)) and np.any(y32 != 0), name

    layer, y = _build_and_call(cls, case["kwargs"], x, policy, reference.get_weights())
    compute_dtype = keras.dtype_policies.get(policy).compute_dtype
    assert layer.compute_dtype == compute_dtype
    # Mixed precision keeps the variables in float32.
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)
    want_dtype = case.get("output_dtype") or compute_dtype
    assert keras.backend.standardize_dtype(y.dtype) == want_dtype, (name, y.dtype)
    symbolic = layer(keras.Input(shape=x.shape[1:], batch_size=x.shape[0]))
    assert keras.backend.standardize_dtype(symbolic.dtype) == want_dtype, (name, symbolic.dtype)
    assert tuple(symbolic.shape) == y32.shape

    got = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")), np.float64)
    assert np.all(np.isfinite(got)), f"{name} under {policy} is not finite"
    tol = TOLERANCE_ULPS * EPSILON[compute_dtype]
    np.testing.assert_allclose(got, y32, rtol=tol, atol=tol * np.abs(y32).max(),
                               err_msg=f"{name} under {policy}")

