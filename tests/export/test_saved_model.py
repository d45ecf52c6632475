"""Export of the Fashion-MNIST detector: layout, signatures, assets, fresh-process reload."""

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.export import model_config, saved_model, warmup
from tests.fixtures import example_detector
from tests.serving.image_files import encode_bmp, encode_gif

NAMES = ["sandal", "bag", "ankle_boot"]
THRESHOLDS = [0.5, 0.4, 0.6]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, images, _ = example_detector.cached_example_detector()
    root = tmp_path_factory.mktemp("export")
    workdir = example_detector.write_example_workdir(model, str(root / "workdir"), THRESHOLDS)
    base = str(root / "models")
    path = saved_model.export_from_workdir(workdir, base, "det")
    test_images, _ = example_detector.load_fashion_mnist("test", limit=16) or (images[:16], None)
    return {"model": model, "base": base, "path": path, "images": test_images,
            "workdir": workdir}


def _expected(model, images):
    probs = keras.ops.convert_to_numpy(model(images.astype("float32"))["probabilities"])
    scores = probs[:, 1:]
    return {"scores": scores, "background": probs[:, 0], "detected": scores >= THRESHOLDS}


def _png(image):
    return tf.io.encode_png(image).numpy()


def test_layout_assets_and_models_config(exported):
    base, path = exported["base"], exported["path"]
    assert path == os.path.join(base, "det", "1")
    assert sorted(os.listdir(os.path.join(base, "det"))) == ["1"]  # no temp dir left
    for name in ("saved_model.pb", "variables", "assets", "assets.extra"):
        assert os.path.exists(os.path.join(path, name)), name
    with open(os.path.join(path, "assets", "labels.txt")) as f:
        assert f.read().splitlines() == NAMES
    with open(os.path.join(path, "assets", "thresholds.json")) as f:
        assert json.load(f) == {"class_names": NAMES, "thresholds": THRESHOLDS}
    with open(os.path.join(path, "assets", "preprocessing.json")) as f:
        # Fashion-MNIST is evaluated in memory: the whole image, no crop.
        assert json.load(f) == {"image_size": [28, 28], "channels": 1, "aspect": "stretch",
                                "crop_fraction": 1.0, "resize_method": "bilinear",
                                "antialias": False, "has_background": True}
    config = model_config.read_model_config(os.path.join(base, "models.config"))
    assert [(n, b) for n, b, _ in model_config.model_entries(config)] == [
        ("det", os.path.abspath(os.path.join(base, "det")))]
    logs = warmup.read_warmup_requests(path)
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == {
        "serving_default", "predict_images"}


def test_signatures_have_named_outputs(exported):
    loaded = tf.saved_model.load(exported["path"])
    assert sorted(loaded.signatures) == ["classify", "metadata", "predict_images",
                                         "serving_default"]
    default = loaded.signatures["serving_default"]
    assert list(default.structured_input_signature[1]) == ["image_bytes"]
    assert default.structured_input_signature[1]["image_bytes"].dtype == tf.string
    spec = loaded.signatures["predict_images"].structured_input_signature[1]["images"]
    assert spec.shape.as_list() == [None, 28, 28, 1] and spec.dtype == tf.float32
    for key in ("serving_default", "predict_images"):
        outputs = loaded.signatures[key].structured_outputs
        assert sorted(outputs) == ["background", "detected", "scores"]
        assert outputs["detected"].dtype == tf.bool
    example = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[_png(exported["images"][0])]))}))
    classified = loaded.signatures["classify"](inputs=tf.constant([example.SerializeToString()]))
    assert [c.decode() for c in classified["classes"].numpy()[0]] == NAMES
    np.testing.assert_allclose(classified["scores"].numpy(),
                               _expected(exported["model"], exported["images"][:1])["scores"],
                               rtol=1e-5, atol=1e-6)
    fingerprint = tf.saved_model.experimental.read_fingerprint(exported["path"])
    assert fingerprint.saved_model_checksum  # rewritten after the method-name change
    meta = loaded.signatures["metadata"]()
    assert [n.decode() for n in meta["class_names"].numpy()] == NAMES
    np.testing.assert_allclose(meta["thresholds"].numpy(), THRESHOLDS, rtol=1e-6)


def test_in_process_png_jpeg_and_resize(exported):
    model, images = exported["model"], exported["images"][:5]
    fn = tf.saved_model.load(exported["path"]).signatures["serving_default"]
    got = fn(image_bytes=tf.constant([_png(i) for i in images]))
    for key, value in _expected(model, images).items():
        np.testing.assert_allclose(got[key].numpy(), value, rtol=1e-5, atol=1e-6)
    # JPEG, RGB and a different size: decoded, made grey and resized inside the graph.
    rgb = np.repeat(tf.image.resize(images, [40, 36]).numpy().round().astype(np.uint8), 3, -1)
    jpegs = [tf.io.encode_jpeg(i, quality=95).numpy() for i in rgb]
    decoded = np.stack([tf.io.decode_image(j, channels=1).numpy() for j in jpegs])
    reference = tf.image.resize(decoded.astype("float32"), [28, 28]).numpy()
    got = fn(image_bytes=tf.constant(jpegs))
    np.testing.assert_allclose(got["scores"].numpy(), _expected(model, reference)["scores"],
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError):
        fn(image_bytes=tf.constant([b"not an image"]))


def test_gif_and_bmp_decoded_as_png_and_nonfinite_pixels_refused(exported):
    model, images = exported["model"], exported["images"][:4]
    loaded = tf.saved_model.load(exported["path"])
    fn = loaded.signatures["serving_default"]
    expected = _expected(model, images)["scores"]
    files = {"gif": [encode_gif(i[..., 0]) for i in images],  # first (only) frame
             "bmp": [encode_bmp(np.repeat(i, 3, -1)) for i in images],  # colour, made grey
             "png": [_png(i) for i in images]}
    for kind, data in files.items():
        got = fn(image_bytes=tf.constant(data))["scores"].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=kind)
    mixed = fn(image_bytes=tf.constant([files["gif"][0], files["png"][1], files["bmp"][2]]))
    np.testing.assert_allclose(mixed["scores"].numpy(), expected[:3], rtol=1e-5, atol=1e-6)
    predict = loaded.signatures["predict_images"]
    for bad in (np.nan, np.inf, -np.inf):
        pixels = images[:2].astype("float32")
        pixels[1, 3, 4, 0] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite"):
            predict(images=tf.constant(pixels))


def test_export_removes_killed_exports_leftovers_and_is_readable_by_all(exported, tmp_path):
    base = str(tmp_path / "models")
    model_dir = os.path.join(base, "det")
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [f".tmp-1-{host}.{dead.pid}-abc", f".tmp-staging-{host}.{dead.pid}-def"]
    live = f".tmp-2-{host}.{os.getpid()}-ghi"  # an export still running: kept
    for name in (*stale, live):
        os.makedirs(os.path.join(model_dir, name, "variables"))
    old = os.umask(0o077)  # even under a private umask, versions are readable by the server
    try:
        path = saved_model.export_model(exported["model"], base, "det", NAMES, THRESHOLDS,
                                        warmup_batch_sizes=(1,))
    finally:
        os.umask(old)
    assert sorted(os.listdir(model_dir)) == sorted([live, os.path.basename(path)])
    wrong, seen = {}, 0
    for root, _, names in os.walk(path):
        seen += 1 + len(names)
        for name, want in [(root, 0o755)] + [(os.path.join(root, n), 0o644) for n in names]:
            if stat.S_IMODE(os.stat(name).st_mode) != want:
                wrong[name] = oct(stat.S_IMODE(os.stat(name).st_mode))
    assert seen > 5 and not wrong, wrong
    assert stat.S_IMODE(os.stat(os.path.join(base, "models.config")).st_mode) == 0o644


_FRESH_RELOAD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    path, inputs_path, outputs_path = sys.argv[1:4]
    loaded = tf.saved_model.load(path)
    data = np.load(inputs_path, allow_pickle=True)
    results = {}
    for batch in (1, 7):
        images = data["images"][:batch]
        pngs = list(data["pngs"][:batch])
        for name, out in [
            ("predict_images", loaded.signatures["predict_images"](images=tf.constant(images))),
            ("serving_default", loaded.signatures["serving_default"](
                image_bytes=tf.constant(pngs, tf.string))),
        ]:
            for key, value in out.items():
                results[f"{name}/{batch}/{key}"] = value.numpy()
    np.savez(outputs_path, **results)
    # Then `saved_model_cli show --all` (the console script is these two lines); exits.
    from tensorflow.python.tools.saved_model_cli import main
    sys.argv = ["saved_model_cli", "show", "--dir", path, "--all"]
    main()
    """
)


@pytest.mark.slow
def test_fresh_process_matches_keras_and_saved_model_cli_shows_signatures(exported, tmp_path):
    # Like tests.test_case.reload_in_fresh_process, but one fresh process runs both endpoints
    # at both batch sizes: a TF import costs 5-20 s on the shared CI machine.
    images = exported["images"][:7].astype("float32")
    inputs, outputs = str(tmp_path / "in.npz"), str(tmp_path / "out.npz")
    np.savez(inputs, images=images, pngs=np.array([_png(i) for i in exported["images"][:7]],
                                                  dtype=object))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", _FRESH_RELOAD, exported["path"], inputs,
                             outputs], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.exists(os.path.join(os.path.dirname(sys.executable), "saved_model_cli"))
    for text in ("signature_def['serving_default']", "signature_def['predict_images']",
                 "signature_def['metadata']", "inputs['image_bytes']", "inputs['images']",
                 "outputs['scores']", "outputs['background']", "outputs['detected']",
                 "outputs['class_names']", "outputs['classes']", "DT_BOOL", "DT_STRING",
                 "Method name is: tensorflow/serving/classify"):
        assert text in result.stdout, text
    got = dict(np.load(outputs))
    assert len(got) == 2 * 2 * 3
    for batch in (1, 7):
        expected = _expected(exported["model"], images[:batch])
        for name in ("predict_images", "serving_default"):
            for key, value in expected.items():
                np.testing.assert_allclose(got[f"{name}/{batch}/{key}"], value, rtol=1e-5,
                                           atol=1e-6)


def test_next_export_takes_next_version_and_failure_publishes_nothing(exported, monkeypatch,
                                                                       tmp_path):
    base = str(tmp_path / "models")
    model = exported["model"]
    assert saved_model.export_model(model, base, "det", NAMES, THRESHOLDS).endswith("/det/1")
    assert saved_model.export_model(model, base, "det", NAMES, THRESHOLDS,
                                    serving_base_path="/models/").endswith("/det/2")
    config = model_config.read_model_config(os.path.join(base, "models.config"))
    assert [(n, b) for n, b, _ in model_config.model_entries(config)] == [("det", "/models/det")]

    def fail(*args, **kwargs):
        raise OSError("simulated crash while writing warmup requests")

    monkeypatch.setattr(warmup, "write_warmup_requests", fail)
    with pytest.raises(OSError, match="simulated crash"):
        saved_model.export_model(model, base, "det", NAMES, THRESHOLDS)
    assert sorted(os.listdir(os.path.join(base, "det"))) == ["1", "2"]


def test_embedding_and_no_background_models(tmp_path):
    model = example_detector.build_example_detector(num_classes=3, embedding_dim=4)
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype("float32")
    path = saved_model.export_model(model, str(tmp_path), "emb", ["a", "b", "c"],
                                    thresholds=[0.3, 0.3, 0.3], has_background=False,
                                    warmup_batch_sizes=())
    assert not os.path.exists(os.path.join(path, "assets.extra"))
    got = tf.saved_model.load(path).signatures["predict_images"](images=images)
    assert sorted(got) == ["background", "detected", "embedding", "scores"]
    ref = model(images)
    np.testing.assert_allclose(got["scores"].numpy(), ref["probabilities"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(got["embedding"].numpy(), ref["embedding"].numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(got["background"].numpy(), np.zeros(4, np.float32))
    np.testing.assert_array_equal(got["detected"].numpy(), ref["probabilities"].numpy() >= 0.3)


def test_bad_arguments_name_the_bad_value(tmp_path):
    model = example_detector.build_example_detector()
    base = str(tmp_path / "models")
    cases = [
        (dict(class_names=["a", "b"]), "class_names has 2 names"),
        (dict(class_names=NAMES, thresholds=[0.5, float("nan"), 0.5]), "finite"),
        (dict(class_names=NAMES, thresholds=[0.5]), "thresholds has 1 values"),
        (dict(class_names=["a", "", "c"]), "non-empty single lines"),
        (dict(class_names=NAMES, channels=2), "channels must be 1 or 3"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            saved_model.export_model(model, base, "det", **kwargs)
    for bad_name in ("a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="model_name"):
            saved_model.export_model(model, base, bad_name, NAMES)
    inputs = keras.Input((28, 28, 1))
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="'probabilities' output"):
        saved_model.export_model(plain, base, "det", ["a"])
    with pytest.raises(ValueError, match="has no model.keras"):
        saved_model.export_from_workdir(str(tmp_path), base, "det")
    assert not os.path.exists(os.path.join(base, "det"))
