"""The exported serving_default prepares files exactly as evaluation does (preprocessing.json)."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.data.task import Split
from keras_fgvc.export import saved_model
from keras_fgvc.models import create_model
from keras_fgvc.training import evaluation, inputs

SIZE = 16
NAMES = ["a", "b", "c"]
# Non-square, wide and tall, several sizes; each one grey and RGB, PNG and JPEG.
SHAPES = [(37, 53), (64, 29), (23, 96)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for h, w in SHAPES:
        for source_channels in (1, 3):
            # Smooth gradients plus noise: every part of the image matters to the model.
            ramp = np.add.outer(np.linspace(0, 180, h), np.linspace(0, 60, w))[..., None]
            pixels = ramp + rng.normal(0, 20, (h, w, source_channels))
            pixels = np.clip(pixels, 0, 255).astype(np.uint8)
            for ext, encode in (("png", tf.io.encode_png), ("jpg", tf.io.encode_jpeg)):
                path = str(root / f"{h}x{w}_{source_channels}.{ext}")
                tf.io.write_file(path, encode(pixels))
                paths.append(path)
    return Split(labels=np.zeros(len(paths), np.int64), paths=np.array(paths, dtype=object))


def _workdir(root, split, augment, channels):
    """A small_cnn detector's workdir, with preprocessing.json as the trainer writes it."""
    keras.utils.set_random_seed(0)
    model = create_model("small_cnn", num_classes=len(NAMES) + 1,
                         input_shape=(SIZE, SIZE, channels))
    workdir = os.path.join(root, "workdir")
    os.makedirs(workdir)
    model.save(os.path.join(workdir, "model.keras"))
    with open(os.path.join(workdir, "labels.txt"), "w") as f:
        f.write("\n".join(["background", *NAMES]) + "\n")
    with open(os.path.join(workdir, "preprocessing.json"), "w") as f:  # as Trainer writes it
        json.dump({**inputs.eval_preprocessing(split, SIZE, channels, augment),
                   "has_background": True}, f)
    return model, workdir


def _export(root, split, augment, channels):
    model, workdir = _workdir(root, split, augment, channels)
    path = saved_model.export_from_workdir(workdir, os.path.join(root, "models"), "det",
                                           warmup_batch_sizes=())
    return model, path


def _bytes(split):
    return tf.constant([tf.io.read_file(p).numpy() for p in split.paths])


@pytest.mark.parametrize("augment,channels", [
    (True, 3), (False, 1),  # grey files made RGB and RGB files made grey: both covered
    pytest.param(True, 1, marks=pytest.mark.slow), pytest.param(False, 3, marks=pytest.mark.slow),
])
def test_served_scores_equal_evaluation_scores(files, tmp_path, augment, channels):
    model, path = _export(str(tmp_path), files, augment, channels)
    # Evaluation's own path: the pipeline reads the files of a path-based split.
    expected = evaluation.predict(model, files, 5, SIZE, channels, augment=augment)
    loaded = tf.saved_model.load(path)
    served = loaded.signatures["serving_default"](image_bytes=_bytes(files))
    np.testing.assert_allclose(served["scores"].numpy(), expected[:, 1:], rtol=0, atol=1e-5)
    np.testing.assert_allclose(served["background"].numpy(), expected[:, 0], rtol=0, atol=1e-5)

    # The comparison can fail: resizing the whole image (the old serving) scores otherwise.
    whole = tf.stack([tf.image.resize(tf.cast(tf.io.decode_image(b, channels), tf.float32),
                                      [SIZE, SIZE]) for b in _bytes(files)])
    old = loaded.signatures["predict_images"](images=whole)["scores"].numpy()
    assert np.abs(old - expected[:, 1:]).max() > 1e-4

    with open(os.path.join(path, "assets", "preprocessing.json")) as f:
        assert json.load(f) == {
            "image_size": [SIZE, SIZE], "channels": channels, "aspect": "center_square",
            "crop_fraction": 0.875 if augment else 1.0, "resize_method": "bilinear",
            "antialias": False, "has_background": True}


def test_served_scores_equal_flip_averaged_evaluation_scores(files, tmp_path):
    """Config.eval_flip: preprocessing.json says ``"flip_average": true``; the exported
    detector then serves what evaluation scored (the mean over the crop and its mirror)."""
    model, workdir = _workdir(str(tmp_path), files, True, 3)
    spec_path = os.path.join(workdir, "preprocessing.json")
    with open(spec_path) as f:
        spec = json.load(f)
    with open(spec_path, "w") as f:
        json.dump({**spec, "flip_average": "yes"}, f)
    with pytest.raises(ValueError, match="flip_average 'yes' must be true or false"):
        saved_model.read_workdir(workdir)
    with open(spec_path, "w") as f:
        json.dump({**spec, "flip_average": True}, f)
    path = saved_model.export_from_workdir(workdir, str(tmp_path / "models"), "flip",
                                           warmup_batch_sizes=())
    call = evaluation.predict_function(model, flip=True)
    expected = evaluation.predict(model, files, 5, SIZE, 3, augment=True, call=call)
    served = tf.saved_model.load(path).signatures["serving_default"](image_bytes=_bytes(files))
    np.testing.assert_allclose(served["scores"].numpy(), expected[:, 1:], rtol=0, atol=1e-5)
    unflipped = evaluation.predict(model, files, 5, SIZE, 3, augment=True)
    assert np.abs(unflipped[:, 1:] - expected[:, 1:]).max() > 1e-4


def test_legacy_preprocessing_json_keeps_the_whole_image_resize(files, tmp_path):
    # A workdir from before the crop keys: exported as it was served then (no crop).
    model, workdir = _workdir(str(tmp_path), files, False, 3)
    with open(os.path.join(workdir, "preprocessing.json"), "w") as f:
        json.dump({"image_size": [SIZE, SIZE], "channels": 3, "has_background": True}, f)
    info = saved_model.read_workdir(workdir)
    assert info["preprocessing"] == {
        "image_size": [SIZE, SIZE], "channels": 3, "aspect": "stretch", "crop_fraction": 1.0,
        "resize_method": "bilinear", "antialias": False}
    path = saved_model.export_from_workdir(workdir, str(tmp_path / "models"), "legacy",
                                           warmup_batch_sizes=())
    whole = tf.stack([tf.image.resize(tf.cast(tf.io.decode_image(b, 3), tf.float32),
                                      [SIZE, SIZE]) for b in _bytes(files)])
    served = tf.saved_model.load(path).signatures["serving_default"](image_bytes=_bytes(files))
    np.testing.assert_allclose(served["scores"].numpy(),
                               model(whole)["probabilities"].numpy()[:, 1:], rtol=0, atol=1e-5)
    with open(os.path.join(workdir, "preprocessing.json"), "w") as f:
        json.dump({"image_size": [SIZE, SIZE], "channels": 3, "aspect": "squash"}, f)
    with pytest.raises(ValueError, match="preprocessing.json.*aspect must be one of"):
        saved_model.read_workdir(workdir)


def test_spec_and_explicit_geometry_must_agree(tmp_path):
    model = create_model("small_cnn", num_classes=2, input_shape=(SIZE, SIZE, 3))
    spec = {"image_size": [SIZE, SIZE], "channels": 3, "crop_fraction": 0.875,
            "aspect": "center_square"}
    with pytest.raises(ValueError, match="channels 1 differs"):
        saved_model.export_model(model, str(tmp_path), "det", ["a"], channels=1,
                                 preprocessing=spec)
    with pytest.raises(ValueError, match="image_size \\[8, 8\\] differs"):
        saved_model.export_model(model, str(tmp_path), "det", ["a"], image_size=(8, 8),
                                 preprocessing=spec)
    assert not os.path.exists(os.path.join(tmp_path, "det"))


_FRESH = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    path, out = sys.argv[1], sys.argv[2]
    data = [open(p, "rb").read() for p in sys.argv[3:]]
    fn = tf.saved_model.load(path).signatures["serving_default"]
    np.save(out, fn(image_bytes=tf.constant(data))["scores"].numpy())
    """
)


@pytest.mark.slow
def test_fresh_process_serves_the_evaluation_scores(files, tmp_path):
    model, path = _export(str(tmp_path), files, True, 3)
    expected = evaluation.predict(model, files, 5, SIZE, 3, augment=True)[:, 1:]
    out = str(tmp_path / "scores.npy")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", _FRESH, path, out, *files.paths],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), expected, rtol=0, atol=1e-5)
