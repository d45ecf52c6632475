"""Feature files and feature extraction with a model (keras_fgvc.analysis.features)."""

import keras
import numpy as np
import pytest

from keras_fgvc.analysis import features as fl


def _tiny_model(num_classes=3):
    """The model contract in miniature: dict outputs, logits behind a weightless layer."""
    inputs = keras.Input((6, 6, 1), name="images")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pooling")(x)
    x = keras.layers.Dropout(0.1, name="dropout")(x)
    logits = keras.layers.Dense(num_classes, name="classifier")(x)
    logits = keras.layers.Activation("linear", name="logits")(logits)
    probs = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, {"logits": logits, "probabilities": probs})


def test_save_load_round_trip(tmp_path):
    x = np.random.rand(5, 3).astype(np.float32)
    y = np.array([0, 1, 1, 2, 0])
    path = tmp_path / "sub" / "f.npz"
    fl.save_features(path, x, y, extra=np.arange(3))
    x2, y2 = fl.load_features(path)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    assert x2.dtype == np.float32 and y2.dtype == np.int64
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["f.npz"]  # no temp left


def test_load_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No feature file"):
        fl.load_features(tmp_path / "missing.npz")
    np.savez(tmp_path / "a.npz", features=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"lacks the arrays \['labels'\]"):
        fl.load_features(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", features=np.ones((3, 2)), labels=np.arange(4))
    with pytest.raises(ValueError, match="labels has 4 entries but features has 3"):
        fl.load_features(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", features=np.full((3, 2), np.nan), labels=np.arange(3))
    with pytest.raises(ValueError, match="NaN"):
        fl.load_features(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="NaN"):
        fl.save_features(tmp_path / "d.npz", np.full((3, 2), np.inf), np.arange(3))


def test_extract_classifier_input_matches_submodel():
    model = _tiny_model()
    images = np.random.default_rng(0).random((7, 6, 6, 1)).astype(np.float32) * 255
    feats = fl.extract_features(model, images, batch_size=3)
    assert feats.shape == (7, 4)
    # The classifier input: logits = feats @ W + b.
    dense = model.get_layer("classifier")
    w, b = (keras.ops.convert_to_numpy(v) for v in dense.weights)
    logits = keras.ops.convert_to_numpy(model.predict(images, verbose=0)["logits"])
    np.testing.assert_allclose(feats @ w + b, logits, rtol=1e-5, atol=1e-5)
    conv = fl.extract_features(model, images, layer="conv")
    assert conv.shape == (7, 4, 4, 4)
    np.testing.assert_allclose(conv.mean(axis=(1, 2)), feats, rtol=1e-5, atol=1e-6)


def test_embedding_output_is_preferred():
    inputs = keras.Input((3,))
    emb = keras.layers.Dense(2, name="embedding")(inputs)
    logits = keras.layers.Dense(4, name="logits")(emb)
    model = keras.Model(inputs, {"logits": logits, "embedding": emb})
    x = np.random.rand(5, 3).astype(np.float32)
    out = model.predict(x, verbose=0)
    np.testing.assert_allclose(fl.extract_features(model, x), out["embedding"], rtol=1e-6)


def test_registered_small_cnn_penultimate():
    from keras_fgvc.models import create_model

    model = create_model("small_cnn", num_classes=10, input_shape=(28, 28, 1))
    images = np.random.default_rng(1).integers(0, 255, (4, 28, 28, 1)).astype(np.float32)
    feats = fl.extract_features(model, images)
    assert feats.ndim == 2 and feats.shape[0] == 4 and np.all(np.isfinite(feats))


def test_cli_extracts_from_saved_model_over_npz_dataset(tmp_path):
    model = _tiny_model()
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(2)
    images = rng.integers(0, 255, (10, 6, 6)).astype(np.uint8)  # rank 3: gets a channel
    labels = rng.integers(0, 3, 10)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    out = tmp_path / "f.npz"
    fl.main(["--model_path", str(tmp_path / "model.keras"), "--dataset",
             str(tmp_path / "data.npz"), "--output", str(out)])
    x, y = fl.load_features(out)
    np.testing.assert_array_equal(y, labels)
    want = fl.extract_features(model, images[..., None].astype(np.float32))
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-6)
    # A feature map: every position becomes a row with its image's label.
    fl.main(["--model_path", str(tmp_path / "model.keras"), "--dataset",
             str(tmp_path / "data.npz"), "--layer", "conv", "--limit", "4", "--output", str(out)])
    x, y = fl.load_features(out)
    assert x.shape == (4 * 16, 4) and len(y) == 64


def test_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown data set"):
        fl.load_dataset("cifar")
    np.savez(tmp_path / "x.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="must hold `images` and `labels`"):
        fl.load_dataset(str(tmp_path / "x.npz"))
    with pytest.raises(ValueError, match="split"):
        fl.load_dataset("fashion_mnist", split="val")


@pytest.mark.slow
def test_train_and_extract_with_label_map_and_cache(tmp_path):
    rng = np.random.default_rng(3)
    labels = np.arange(24) % 4
    images = (rng.random((24, 12, 12, 1)) * 60 + labels[:, None, None, None] * 40)
    np.savez(tmp_path / "d.npz", images=images.astype(np.uint8), labels=labels)
    cache = tmp_path / "cache" / "f.npz"
    feats, y = fl.train_and_extract("small_cnn", str(tmp_path / "d.npz"), epochs=1,
                                    label_map=[0, 0, 1, 1], cache=str(cache))
    assert feats.ndim == 2 and len(feats) == 24 and np.all(np.isfinite(feats))
    np.testing.assert_array_equal(y, labels)  # the original (fine) labels come back
    again, y2 = fl.train_and_extract("small_cnn", str(tmp_path / "d.npz"), cache=str(cache))
    np.testing.assert_array_equal(again, feats)  # read from the cache, no retraining


def test_nested_backbone_layer():
    inner_in = keras.Input((6, 6, 1), name="images")
    inner = keras.Model(inner_in, keras.layers.Conv2D(3, 3, name="c")(inner_in), name="backbone")
    inputs = keras.Input((6, 6, 1), name="images")
    fmap = inner(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(fmap)
    logits = keras.layers.Dense(2, name="logits")(pooled)
    model = keras.Model(inputs, {"logits": logits})
    x = np.random.rand(3, 6, 6, 1).astype(np.float32)
    out = fl.extract_features(model, x, layer="backbone")
    np.testing.assert_allclose(out, inner.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fl.extract_features(model, x), out.mean(axis=(1, 2)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_loads_a_registered_model_in_a_fresh_process(tmp_path):
    """`--model_path` on a model with keras_fgvc layers, from a process that imported nothing."""
    import subprocess
    import sys

    from keras_fgvc.models import create_model

    model = create_model("small_cnn", num_classes=3)  # holds ImageNormalization
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(3)
    images = rng.integers(0, 255, (6, 28, 28)).astype(np.uint8)
    np.savez(tmp_path / "data.npz", images=images, labels=rng.integers(0, 3, 6))
    out = tmp_path / "f.npz"
    result = subprocess.run(
        [sys.executable, "-m", "keras_fgvc.analysis.features", "--model_path",
         str(tmp_path / "model.keras"), "--dataset", str(tmp_path / "data.npz"),
         "--output", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    x, _ = fl.load_features(out)
    want = fl.extract_features(model, images[..., None].astype(np.float32))
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-5)
