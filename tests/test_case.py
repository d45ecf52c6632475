"""Shared test helpers: layer tests, serialization and SavedModel round trips.

`run_layer_test` puts a layer through everything the quality bar asks of it:
build, symbolic call, eager call, one `fit` step, `.keras` save/load without
`custom_objects`, config round trip, a `mixed_bfloat16` run and a
`jit_compile=True` run. `run_saved_model_test` exports a model and reloads it
in a fresh Python process.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import keras
import numpy as np
import tensorflow as tf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _to_numpy(x):
    if isinstance(x, dict):
        return {k: _to_numpy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_numpy(v) for v in x]
    return keras.ops.convert_to_numpy(x)


def _flatten(x):
    if isinstance(x, dict):
        return [np.asarray(v) for _, v in sorted(x.items())]
    if isinstance(x, (list, tuple)):
        return [np.asarray(v) for v in x]
    return [np.asarray(x)]


def assert_allclose_nested(actual, expected, rtol=1e-5, atol=1e-6):
    actual, expected = _flatten(_to_numpy(actual)), _flatten(_to_numpy(expected))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol)


def _random_input(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if np.issubdtype(np.dtype(dtype), np.integer):
        return rng.integers(0, 4, size=shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def run_serialization_test(obj, custom_check=None):
    """Serialize `obj` (layer, loss, initializer) and deserialize it without custom_objects.

    Checks that the config is JSON-safe, that the revived object has the same
    class and the same config.
    """
    config = keras.saving.serialize_keras_object(obj)
    text = json.dumps(config)  # JSON-safe: no arrays or tensors in the config
    revived = keras.saving.deserialize_keras_object(json.loads(text))
    assert type(revived) is type(obj), (type(revived), type(obj))
    assert json.dumps(keras.saving.serialize_keras_object(revived), sort_keys=True) == json.dumps(
        config, sort_keys=True
    )
    if custom_check is not None:
        custom_check(obj, revived)
    return revived


def _first_output(y):
    if isinstance(y, dict):
        return y[sorted(y)[0]]
    if isinstance(y, (list, tuple)):
        return y[0]
    return y


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    input_dtype="float32",
    input_data=None,
    expected_output_shape=None,
    run_fit=True,
    run_mixed_precision=True,
    run_jit=True,
    rtol=1e-5,
    atol=1e-5,
    before_call=None,
):
    """Exercise `layer_cls(**init_kwargs)` on inputs of `input_shape` (batch included).

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        input_shape: full input shape, batch dimension included.
        input_data: optional concrete input; random normal otherwise.
        expected_output_shape: full output shape to check (batch included).
        run_fit: train one step of a model ending in this layer.
        run_mixed_precision: run under the `mixed_bfloat16` policy.
        run_jit: compare an XLA-compiled call with the eager call.
        before_call: optional `fn(layer, x)` called after build and before the
            first call (e.g. to `adapt` the layer).

    Returns:
        The layer's eager output on `input_data`, as NumPy.
    """
    x = input_data if input_data is not None else _random_input(input_shape, input_dtype, 0)
    x = np.asarray(x)

    # Build.
    layer = layer_cls(**init_kwargs)
    layer.build(input_shape)
    assert layer.built
    if before_call is not None:
        before_call(layer, x)

    # Config round trip (JSON-safe, same config).
    config = layer.get_config()
    json.dumps(config)
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    run_serialization_test(layer)

    # Symbolic call.
    sym_in = keras.Input(shape=input_shape[1:], batch_size=None, dtype=input_dtype)
    sym_out = layer(sym_in)
    if expected_output_shape is not None:
        got = tuple(_first_output(sym_out).shape)[1:]
        assert got == tuple(expected_output_shape)[1:], (got, expected_output_shape)

    # Eager call.
    y = _to_numpy(layer(x))
    if expected_output_shape is not None:
        assert tuple(_first_output(y).shape) == tuple(expected_output_shape)
    for arr in _flatten(y):
        if np.issubdtype(arr.dtype, np.floating):
            assert np.all(np.isfinite(arr)), "eager output has non-finite values"

    model = keras.Model(sym_in, sym_out)

    # One fit step: gradients flow and the model trains without error.
    if run_fit:
        out = _first_output(sym_out)
        head = keras.layers.Flatten()(out) if len(out.shape) > 2 else out
        head = keras.layers.Dense(1)(head)
        fit_model = keras.Model(sym_in, head)
        fit_model.compile(optimizer="sgd", loss="mse")
        history = fit_model.fit(x, np.zeros((len(x), 1), "float32"), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])

    # .keras save / load without custom_objects.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
        assert_allclose_nested(reloaded(x), model(x), rtol=rtol, atol=atol)

    # jit_compile=True (what TPUs run).
    if run_jit:
        fn = tf.function(lambda t: model(t), jit_compile=True)
        tol = dict(rtol=max(rtol, 1e-4), atol=max(atol, 1e-4))
        assert_allclose_nested(fn(tf.constant(x)), model(x), **tol)

    # mixed_bfloat16 (TPU) policy.
    if run_mixed_precision:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            mp_layer = layer_cls(**init_kwargs)
            mp_layer.build(input_shape)
            if before_call is not None:
                before_call(mp_layer, x)
            mp_out = _flatten(_to_numpy(mp_layer(x)))
            for arr in mp_out:
                if np.issubdtype(arr.dtype, np.floating) or arr.dtype.name == "bfloat16":
                    finite = np.isfinite(arr.astype(np.float32))
                    assert np.all(finite), "mixed_bfloat16 output not finite"
        finally:
            keras.config.set_dtype_policy(previous)
    return y


_RELOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    path, endpoint, inputs_path, outputs_path = sys.argv[1:5]
    loaded = tf.saved_model.load(path)
    fn = getattr(loaded, endpoint)
    data = np.load(inputs_path)
    args = [tf.constant(data[f"arg{i}"]) for i in range(len(data.files))]
    out = fn(*args)
    if isinstance(out, dict):
        np.savez(outputs_path, **{k: v.numpy() for k, v in out.items()})
    elif isinstance(out, (list, tuple)):
        np.savez(outputs_path, **{f"out{i}": v.numpy() for i, v in enumerate(out)})
    else:
        np.savez(outputs_path, out0=out.numpy())
    """
)


def reload_in_fresh_process(path, endpoint, args):
    """Load the SavedModel at `path` in a new Python process and call `endpoint(*args)`.

    Returns the outputs as a dict of NumPy arrays (``out0``, ``out1``... for
    non-dict outputs).
    """
    with tempfile.TemporaryDirectory() as tmp:
        inputs_path = os.path.join(tmp, "inputs.npz")
        outputs_path = os.path.join(tmp, "outputs.npz")
        np.savez(inputs_path, **{f"arg{i}": np.asarray(a) for i, a in enumerate(args)})
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        result = subprocess.run(
            [sys.executable, "-c", _RELOAD_SCRIPT, path, endpoint, inputs_path, outputs_path],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        if result.returncode != 0:
            raise AssertionError(f"reload in a fresh process failed:\n{result.stderr[-4000:]}")
        with np.load(outputs_path) as data:
            return {k: data[k] for k in data.files}


def run_saved_model_test(model, inputs, rtol=1e-5, atol=1e-5, batch_sizes=None):
    """Export a Keras model as a SavedModel and compare a fresh process's outputs.

    Args:
        model: a Keras model (single input, any outputs).
        inputs: a NumPy array, batch first.
        batch_sizes: batch sizes to check (slices of `inputs`); default all of it.
    """
    inputs = np.asarray(inputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "saved")
        archive = keras.export.ExportArchive()
        archive.track(model)
        spec = tf.TensorSpec([None, *inputs.shape[1:]], tf.as_dtype(inputs.dtype))
        archive.add_endpoint("serve", model.call, input_signature=[spec])
        archive.write_out(path, verbose=False)
        for b in batch_sizes or [len(inputs)]:
            got = reload_in_fresh_process(path, "serve", [inputs[:b]])
            expected = _to_numpy(model(inputs[:b], training=False))
            if isinstance(expected, dict):
                assert sorted(got) == sorted(expected), (sorted(got), sorted(expected))
                for k in expected:
                    np.testing.assert_allclose(got[k], expected[k], rtol=rtol, atol=atol)
            else:
                np.testing.assert_allclose(got["out0"], _flatten(expected)[0], rtol=rtol, atol=atol)


def run_saved_function_test(fn, args, rtol=1e-5, atol=1e-6):
    """Save `fn` (e.g. a loss's `__call__`) as a SavedModel function; reload it in a fresh process.

    The function is traced with a batch-polymorphic signature built from
    `args`, so this also checks that `fn` is graph-exportable.
    """
    args = [np.asarray(a) for a in args]
    module = tf.Module()
    signature = [tf.TensorSpec([None, *a.shape[1:]], tf.as_dtype(a.dtype)) for a in args]
    module.fn = tf.function(lambda *t: fn(*t), input_signature=signature)
    expected = _to_numpy(module.fn(*[tf.constant(a) for a in args]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "saved")
        tf.saved_model.save(module, path)
        got = reload_in_fresh_process(path, "fn", args)
    np.testing.assert_allclose(got["out0"], _flatten(expected)[0], rtol=rtol, atol=atol)
    return expected
