"""Serving endpoints of the rare-class detector: decode, run the model, threshold.

The exported SavedModel carries these endpoints (see DESIGN.md, serving
contract):

- ``serving_default(image_bytes)``: string [batch] of JPEG / PNG / GIF / BMP
  bytes, decoded and prepared inside the graph exactly as evaluation prepared
  the validation images the thresholds were chosen on:
  `keras_fgvc.data.preprocessing.prepare_image` with the spec in the
  exported ``preprocessing.json`` (channels, centre crop, aspect, resize);
- ``predict_images(images)``: float32 [batch, H, W, C] in [0, 255], images
  already prepared as ``preprocessing.json`` describes (nothing is cropped or
  resized here); NaN or infinite pixels are an InvalidArgumentError (TF
  Serving: INVALID_ARGUMENT), never a confident answer;
- ``metadata()``: ``class_names`` (read from the exported labels asset) and
  ``thresholds``; with a lineage (a model grown by `keras_fgvc.bootstrap`),
  also ``lineage``: the JSON text of the exported ``lineage.json`` asset (the
  round, decisions and S / H sizes that built the model);
- ``classify(inputs)``: TF Serving's Classify API: serialized ``tf.Example``
  [batch] with the image in feature ``image/encoded`` -> ``classes`` [batch, N]
  (class names) and ``scores`` [batch, N]. Its SignatureDef gets the method
  name ``tensorflow/serving/classify`` (see `set_method_name`).

Both prediction endpoints return the same named outputs: ``scores`` [batch, N]
(foreground probabilities, columns in label-file order), ``background``
[batch] (probability of the background class plus that of the absorbed
classes; zeros for models with neither), ``detected`` [batch, N] (bool,
``scores >= thresholds``) and, for metric-learning models, ``embedding``.
Absorbed classes are probability columns that are no served class: a
bootstrapping round's hard-negative classes (Softmax + HNS / HNM) only take
probability mass away from the categories, so they fold into background and
``scores`` keeps the remaining columns, in order. Normalisation happens
inside the model (models take float32 in [0, 255]).
"""

import tensorflow as tf

from keras_fgvc.data.preprocessing import decode_and_prepare

OUTPUT_KEYS = ("scores", "background", "detected", "embedding")
CLASSIFY_SIGNATURE = "classify"
CLASSIFY_METHOD = "tensorflow/serving/classify"
IMAGE_FEATURE = "image/encoded"
NONFINITE_MESSAGE = "images has NaN or infinite pixels"


def decode_images(image_bytes, preprocessing):
    """Decode and prepare a batch of encoded images as evaluation does.

    Args:
        image_bytes: string tensor [batch] (JPEG, PNG, GIF first frame, BMP or
            WebP).
        preprocessing: the preprocessing spec
            (`keras_fgvc.data.preprocessing.make_spec`): channels, centre
            crop, aspect handling, resize method.

    Returns:
        float32 tensor [batch, H, W, C] in [0, 255].
    """
    height, width = preprocessing["image_size"]
    spec = tf.TensorSpec([height, width, preprocessing["channels"]], tf.float32)

    def _decode_one(data):
        # GIF, BMP and WebP to a grey model: `image_ops.decode_image` decodes them to RGB and
        # converts, exactly as evaluation does (TF's decoders give those only in colour).
        return tf.ensure_shape(decode_and_prepare(data, preprocessing), spec.shape)

    return tf.map_fn(_decode_one, image_bytes, fn_output_signature=spec)


def served_columns(width, has_background, absorbed_columns=()):
    """``(score columns, background columns)`` of a ``probabilities`` output `width` wide.

    The background columns are column 0 (when `has_background`) and the
    `absorbed_columns`; every other column is a served class, in order.
    """
    folded = [0] * bool(has_background) + sorted(int(c) for c in absorbed_columns)
    return [c for c in range(width) if c not in folded], folded


def detector_outputs(model_outputs, thresholds, has_background, absorbed_columns=()):
    """Map a model's output dict to the named serving outputs.

    Args:
        model_outputs: dict with ``probabilities`` [batch, N (+1) (+ absorbed)]
            and optionally ``embedding``.
        thresholds: float32 tensor [N], one per foreground class.
        has_background: whether column 0 of ``probabilities`` is background.
        absorbed_columns: columns of ``probabilities`` added to ``background``
            and left out of ``scores`` (module docstring).

    Returns:
        dict with ``scores``, ``background``, ``detected`` (+ ``embedding``).
    """
    probabilities = tf.cast(model_outputs["probabilities"], tf.float32)
    if absorbed_columns:
        scored, folded = served_columns(probabilities.shape[-1], has_background,
                                        absorbed_columns)
        scores = tf.gather(probabilities, scored, axis=1)
        background = tf.reduce_sum(tf.gather(probabilities, folded, axis=1), axis=1)
    elif has_background:
        scores = probabilities[:, 1:]
        background = probabilities[:, 0]
    else:
        scores = probabilities
        background = tf.zeros_like(probabilities[:, 0])
    outputs = {
        "scores": tf.identity(scores, name="scores"),
        "background": tf.identity(background, name="background"),
        "detected": tf.greater_equal(scores, thresholds[tf.newaxis, :], name="detected"),
    }
    if "embedding" in model_outputs:
        outputs["embedding"] = tf.cast(model_outputs["embedding"], tf.float32)
    return outputs


def make_endpoints(model, class_names, thresholds, has_background, preprocessing,
                   labels_asset, lineage_asset=None, absorbed_columns=()):
    """Build the endpoint functions and their input signatures.

    Args:
        model: Keras model returning a dict with ``probabilities``.
        class_names: list of N foreground class names.
        thresholds: list of N floats.
        has_background: whether ``probabilities`` column 0 is background.
        preprocessing: the evaluation preprocessing spec
            (`keras_fgvc.data.preprocessing`), applied by ``serving_default``.
        labels_asset: `tf.saved_model.Asset` of the labels file (one
            foreground class name per line).
        lineage_asset: `tf.saved_model.Asset` of ``lineage.json``, or None;
            ``metadata()`` then also returns its text as ``lineage``.
        absorbed_columns: ``probabilities`` columns folded into ``background``
            (`detector_outputs`).

    Returns:
        A list of ``(name, fn, input_signature)`` for `ExportArchive.add_endpoint`.
    """
    thresholds_const = tf.constant(list(thresholds), tf.float32)
    height, width = preprocessing["image_size"]
    channels = preprocessing["channels"]

    def run_model(images):
        outputs = model(tf.cast(images, tf.float32), training=False)
        if not isinstance(outputs, dict) or "probabilities" not in outputs:
            raise ValueError("The model must return a dict with a 'probabilities' output.")
        return detector_outputs(outputs, thresholds_const, has_background, absorbed_columns)

    def predict_images(images):
        return run_model(tf.debugging.assert_all_finite(images, NONFINITE_MESSAGE))

    def serving_default(image_bytes):
        return run_model(decode_images(image_bytes, preprocessing))

    def metadata():
        text = tf.strings.strip(tf.io.read_file(labels_asset.asset_path))
        out = {
            "class_names": tf.strings.split(text, "\n"),
            "thresholds": tf.identity(thresholds_const),
        }
        if lineage_asset is not None:
            out["lineage"] = tf.io.read_file(lineage_asset.asset_path)
        return out

    def classify(inputs):
        features = tf.io.parse_example(
            inputs, {IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)})
        scores = serving_default(features[IMAGE_FEATURE])["scores"]
        names = tf.constant(list(class_names), tf.string)
        classes = tf.tile(names[tf.newaxis, :], [tf.shape(scores)[0], 1])
        return {"classes": classes, "scores": scores}

    return [
        ("serving_default", serving_default, [tf.TensorSpec([None], tf.string, "image_bytes")]),
        (
            "predict_images",
            predict_images,
            [tf.TensorSpec([None, height, width, channels], tf.float32, "images")],
        ),
        ("metadata", metadata, []),
        (CLASSIFY_SIGNATURE, classify, [tf.TensorSpec([None], tf.string, "inputs")]),
    ]


def set_method_name(saved_model_dir, signature_name, method_name):
    """Rewrite one SignatureDef's ``method_name`` in ``saved_model.pb`` (TF Serving checks it).

    ``tf.saved_model.save`` marks every signature as a predict signature; TF
    Serving's Classify API only accepts ``tensorflow/serving/classify``. The
    fingerprint (a checksum of saved_model.pb) is rewritten to match.
    """
    import os

    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(saved_model_dir, "saved_model.pb")
    with open(path, "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if signature_name not in meta_graph.signature_def:
            raise ValueError(f"No signature {signature_name!r} in {saved_model_dir!r}.")
        meta_graph.signature_def[signature_name].method_name = method_name
    with open(path, "wb") as f:
        f.write(saved_model.SerializeToString(deterministic=True))
    try:  # private TF module: the same call tf.saved_model.save makes
        from tensorflow.python.saved_model import fingerprinting_utils
    except ImportError:  # the fingerprint is optional; a stale one must not stay
        os.remove(os.path.join(saved_model_dir, "fingerprint.pb"))
    else:
        fingerprinting_utils.write_fingerprint(saved_model_dir)
