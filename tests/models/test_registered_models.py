"""Every registered model: outputs, .keras round trip, XLA, a training step, SavedModel."""

import inspect
import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.models import create_model, get_builder, list_models
from tests.test_case import REPO_ROOT, assert_allclose_nested

NUM_CLASSES = 4
# keras.applications trunks: seconds per build / save / XLA compile.
HEAVY = {
    "inception_v3",
    "resnet50_gap",
    "resnet50_kernel_pooling",
    "vgg16_compact_bilinear",
    "vgg16_kernel_pooling",
}
# XLA compiles (~10 s each on CI) and .keras round trips of a heavy trunk run
# once: resnet50_gap's trunk is resnet50_kernel_pooling's, and its GAP + Dense
# head is covered by every small_cnn model.
SAME_TRUNK_CHECKED_BY = {"resnet50_gap": "resnet50_kernel_pooling"}
# SavedModel in a fresh process: one model per head type / output set.
SAVED_MODEL_SUBSET = ["anchor_metric", "bg_split_fixed_background", "lws"]


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


def _input_shape(name):
    return tuple(inspect.signature(get_builder(name)).parameters["input_shape"].default)


def _images(name, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, size=(batch, *_input_shape(name))).astype("float32")


def _loss(model, outputs, labels, teacher_labels):
    logits = outputs["logits"]
    if model.get_layer("probabilities").get_config()["activation"] == "sigmoid":
        one_hot = keras.ops.one_hot(labels, NUM_CLASSES)
        loss = keras.ops.mean(keras.losses.binary_crossentropy(one_hot, logits, from_logits=True))
    else:
        loss = keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
    if "aux_logits" in outputs:
        loss += keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                teacher_labels, outputs["aux_logits"], from_logits=True
            )
        )
    return loss + sum(model.losses)


def test_same_trunk_partners_are_registered():
    for name, partner in SAME_TRUNK_CHECKED_BY.items():
        assert partner in list_models() and partner in HEAVY and name in HEAVY
        assert _input_shape(name) == _input_shape(partner)


def test_registry_is_complete():
    names = list_models()
    for expected in [
        "small_cnn",
        "classifier",
        "resnet50_gap",
        "resnet50_kernel_pooling",
        "vgg16_compact_bilinear",
        "inception_v3",
        "bg_split",
        "anchor_metric",
        "lws",
        "fixed_background",
    ]:
        assert expected in names
    for name in names:
        parameters = inspect.signature(get_builder(name)).parameters
        assert list(parameters)[:2] == ["num_classes", "input_shape"], name


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown model 'nope'.*small_cnn"):
        create_model("nope", num_classes=3)


@pytest.mark.parametrize("name", _params(list_models()))
def test_registered_model(name):
    """Build, forward, outputs, .keras round trip, XLA == eager, one finite training step."""
    x = _images(name)
    model = create_model(name, num_classes=NUM_CLASSES)

    # Outputs: named dict, float32, probabilities consistent with the logits.
    out = {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}
    assert {"logits", "probabilities"} <= set(out)
    assert set(out) <= {"logits", "probabilities", "aux_logits", "embedding"}
    assert out["logits"].shape == out["probabilities"].shape == (3, NUM_CLASSES)
    for value in out.values():
        assert value.dtype == np.float32 and np.all(np.isfinite(value))
    activation = model.get_layer("probabilities").get_config()["activation"]
    logits = out["logits"].astype(np.float64)
    if activation == "sigmoid":
        expected = 1.0 / (1.0 + np.exp(-logits))
    elif activation == "exponential":  # anchor soft vote: logits are log-probabilities
        expected = np.exp(logits)
    else:
        expected = np.exp(logits - logits.max(-1, keepdims=True))
        expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-5, atol=1e-6)
    if activation != "sigmoid":
        np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, atol=1e-5)
    if "embedding" in out:
        np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=-1), 1.0, atol=1e-5)

    if name not in SAME_TRUNK_CHECKED_BY:
        # .keras round trip without custom_objects.
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            reloaded = keras.saving.load_model(path)
        assert_allclose_nested(reloaded(x, training=False), out)
        assert len(reloaded.trainable_weights) == len(model.trainable_weights)

        # XLA (what TPUs run) equals eager.
        compiled = tf.function(lambda t: model(t, training=False), jit_compile=True)
        assert_allclose_nested(compiled(tf.constant(x)), out, rtol=1e-4, atol=1e-4)

    # One SGD step: finite loss, weights change, nothing NaN. Gradients are
    # clipped as the trainer does (Ch. 3): a from-scratch ResNet on a batch of
    # three 1x1 feature maps has huge batch-norm gradients.
    labels = np.arange(len(x)) % NUM_CLASSES
    teacher_labels = np.arange(len(x)) % 3
    optimizer = keras.optimizers.SGD(0.01, global_clipnorm=1.0)
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    with tf.GradientTape() as tape:
        loss = _loss(model, model(x, training=True), labels, teacher_labels)
    grads = tape.gradient(loss, model.trainable_weights)
    optimizer.apply_gradients(zip(grads, model.trainable_weights))
    assert np.isfinite(float(loss))
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert all(np.all(np.isfinite(w)) for w in after)
    assert any(not np.array_equal(a, b) for a, b in zip(after, before))
    out = model(x, training=False)
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(v))) for v in out.values())


def test_small_cnn_fit_with_a_loss_on_logits_only():
    """`compile(loss={"logits": ...})` trains a dict-output model with Keras fit."""
    model = create_model("small_cnn", num_classes=NUM_CLASSES)
    assert 100_000 <= model.count_params() <= 300_000
    model.compile(
        optimizer="sgd",
        loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    x = _images("small_cnn", batch=8)
    history = model.fit(x, {"logits": np.arange(8) % NUM_CLASSES}, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_small_cnn_mixed_bfloat16_outputs_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = create_model("anchor_metric", num_classes=NUM_CLASSES)
    out = model(_images("anchor_metric"), training=False)
    for value in out.values():
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(value)))


_FRESH_PROCESS = """
import json
import sys

import numpy as np
import tensorflow as tf

x_path, saved_json, keras_json = sys.argv[1:4]
x = np.load(x_path)
# 1. SavedModels: TensorFlow alone, no keras_fgvc (what TF Serving has).
for path, batches in json.loads(saved_json):
    loaded = tf.saved_model.load(path)  # keep a reference: it owns the variables
    for b in batches:
        out = loaded.serve(tf.constant(x[:b]))
        np.savez(f"{path}.{b}.npz", **{k: v.numpy() for k, v in out.items()})
assert not any(m.startswith("keras_fgvc") for m in sys.modules), "SavedModel needed keras_fgvc"
# 2. .keras files: `import keras_fgvc.models` registers every layer, loss and
# initializer they use, so no custom_objects are needed.
import keras
import keras_fgvc.models  # noqa: F401
for path in json.loads(keras_json):
    model = keras.saving.load_model(path)
    out = model(x, training=False)
    np.savez(path + ".npz", **{k: keras.ops.convert_to_numpy(v) for k, v in out.items()})
"""


def _export_saved_model(model, x, path):
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([None, *x.shape[1:]], tf.float32)
    archive.add_endpoint("serve", model.call, input_signature=[spec])
    archive.write_out(path, verbose=False)


@pytest.mark.slow
def test_saved_models_and_keras_files_in_one_fresh_process(tmp_path):
    """A fresh process serves each SavedModel (batch 1 and 3) and loads each ``.keras`` file.

    One subprocess for all of them: a TensorFlow import costs seconds on CI.
    SavedModels: one model per head type / output set (`SAVED_MODEL_SUBSET`).
    ``.keras`` files: kernel pooling + sigmoid head, compact bilinear +
    anchors, bilinear + LWS over a fixed-background base.
    """
    x = _images("small_cnn")
    np.save(tmp_path / "x.npy", x)
    saved = {}
    for name in SAVED_MODEL_SUBSET:
        model = create_model(name, num_classes=NUM_CLASSES)
        path = os.fspath(tmp_path / f"saved_{name}")
        _export_saved_model(model, x, path)
        saved[path] = model
    models = {
        "kernel_sigmoid": create_model(
            "classifier",
            num_classes=3,
            pooling="kernel",
            head="sigmoid",
            pooling_kwargs={"order": 3, "dims": 64},
        ),
        "cbp_anchor": create_model(
            "anchor_metric", num_classes=3, pooling="compact_bilinear", pooling_kwargs={"dims": 64}
        ),
        "bilinear_lws": create_model(
            "lws", num_classes=3, base_model="fixed_background", base_kwargs={"pooling": "bilinear"}
        ),
    }
    paths = []
    for key, model in models.items():
        paths.append(os.fspath(tmp_path / f"{key}.keras"))
        model.save(paths[-1])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, os.fspath(tmp_path / "x.npy"),
         json.dumps([[p, [1, 3]] for p in saved]), json.dumps(paths)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for path, model in saved.items():
        for b in (1, 3):
            with np.load(f"{path}.{b}.npz") as got:
                assert sorted(got.files) == sorted(model.output)
                assert_allclose_nested(dict(got), model(x[:b], training=False), atol=1e-5)
    for path, model in zip(paths, models.values()):
        with np.load(path + ".npz") as got:
            assert_allclose_nested(dict(got), model(x, training=False))
