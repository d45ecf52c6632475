"""Export a trained detector as a TF Serving SavedModel: ``MODEL_BASE/<name>/<version>/``.

Each export first removes the temporary directories killed exports left in
``MODEL_BASE/<name>/`` (`versions.remove_stale_temp_dirs`), then writes,
atomically (temporary directory + rename), readable by every user:

- the SavedModel (``keras.export.ExportArchive``) with the endpoints of
  `keras_fgvc.export.signatures` (``serving_default``, ``predict_images``,
  ``metadata``, ``classify``);
- assets: ``labels.txt`` (one foreground class per line, the column order of
  ``scores``), ``thresholds.json`` (``{"class_names", "thresholds"}``) and
  ``preprocessing.json``: the preprocessing spec ``serving_default`` applies
  (``image_size``, ``channels``, ``aspect``, ``crop_fraction``,
  ``resize_method``, ``antialias``; `keras_fgvc.data.preprocessing`) and
  ``has_background``; for a model with a lineage (a `keras_fgvc.bootstrap`
  round), ``lineage.json``, which the ``metadata`` signature also returns;
- ``assets.extra/tf_serving_warmup_requests``;

and then adds the model to ``MODEL_BASE/models.config``.

Absorbed classes: a model may have probability columns that are no served
class, a bootstrapping round's hard-negative classes (Softmax + HNS / HNM,
`keras_fgvc.data.bootstrap_manifest`). The trainer lists them as
``absorbed_classes`` in ``W/preprocessing.json``; the export folds them into
``background`` (p(background) + their sum) and serves, lists and thresholds
the other classes only (`keras_fgvc.export.signatures`).
"""

import json
import math
import os

import keras
import tensorflow as tf

# Sibling modules by full name, not through `keras_fgvc.export` (whose __init__ loads this
# module lazily); kept as modules so tests can patch e.g. ``warmup.write_warmup_requests``.
import keras_fgvc.export.model_config as model_config
import keras_fgvc.export.signatures as signatures
import keras_fgvc.export.versions as versions
import keras_fgvc.export.warmup as warmup
from keras_fgvc.data.preprocessing import spec_from_json
from keras_fgvc.export.workdir_files import (  # noqa: F401  (read_workdir: the public name)
    LABELS_FILE,
    LINEAGE_FILE,
    PREPROCESSING_FILE,
    THRESHOLDS_FILE,
    read_workdir,
)


def _check_model_name(model_name):
    if not isinstance(model_name, str) or not model_name or model_name.startswith("."):
        raise ValueError(f"model_name must be a non-empty string not starting with '.', "
                         f"got {model_name!r}.")
    if os.sep in model_name or (os.altsep and os.altsep in model_name):
        raise ValueError(f"model_name must not contain a path separator, got {model_name!r}.")


def _probability_width(model, image_size, channels):
    outputs = model.output if hasattr(model, "output") else None
    if isinstance(outputs, dict) and "probabilities" in outputs:
        return int(outputs["probabilities"].shape[-1])
    probe = model(tf.zeros([1, *image_size, channels], tf.float32), training=False)
    if not isinstance(probe, dict) or "probabilities" not in probe:
        keys = sorted(probe) if isinstance(probe, dict) else ""
        raise ValueError("The model must return a dict with a 'probabilities' output, got "
                         f"{type(probe).__name__}{keys}.")
    return int(probe["probabilities"].shape[-1])


def _input_geometry(model, image_size, channels):
    shape = None
    if getattr(model, "inputs", None):
        shape = tuple(model.inputs[0].shape)
    if image_size is None:
        if shape is None or len(shape) != 4 or None in shape[1:3]:
            raise ValueError(f"image_size is needed: the model input shape is {shape}.")
        image_size = shape[1:3]
    if channels is None:
        if shape is None or len(shape) != 4 or shape[3] is None:
            raise ValueError(f"channels is needed: the model input shape is {shape}.")
        channels = shape[3]
    image_size = [int(v) for v in image_size]
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"image_size must be (H, W) with positive sizes, got {image_size!r}.")
    if int(channels) not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}.")
    return image_size, int(channels)


def _check_classes(class_names, thresholds, num_foreground):
    class_names = [str(c) for c in class_names]
    if len(class_names) != num_foreground:
        raise ValueError(f"class_names has {len(class_names)} names but the model scores "
                         f"{num_foreground} foreground classes: {class_names!r}.")
    for name in class_names:
        if not name or "\n" in name:
            raise ValueError(f"class names must be non-empty single lines, got {name!r}.")
    if thresholds is None:
        thresholds = [0.5] * num_foreground
    thresholds = [float(t) for t in thresholds]
    if len(thresholds) != num_foreground:
        raise ValueError(f"thresholds has {len(thresholds)} values for {num_foreground} "
                         f"foreground classes: {thresholds!r}.")
    for t in thresholds:
        if not math.isfinite(t):
            raise ValueError(f"thresholds must be finite, got {t!r}.")
    return class_names, thresholds


def _check_absorbed(absorbed_columns, width, has_background):
    """The absorbed columns as sorted ints, checked against the model's `width`."""
    columns = [int(c) for c in absorbed_columns or ()]
    first = 1 if has_background else 0
    bad = [c for c in columns if not first <= c < width]
    if bad:
        raise ValueError(f"absorbed_columns {columns}: {bad[0]} is not a foreground column of "
                         f"the model's {width} probabilities (columns {first}..{width - 1}).")
    if len(set(columns)) != len(columns):
        raise ValueError(f"absorbed_columns {columns} lists a column twice.")
    return sorted(columns)


def _preprocessing(model, image_size, channels, preprocessing):
    """The validated spec ``serving_default`` applies (default: the legacy whole-image resize)."""
    if preprocessing is None:
        image_size, channels = _input_geometry(model, image_size, channels)
        return spec_from_json({"image_size": image_size, "channels": channels})
    spec = spec_from_json(preprocessing)
    if image_size is not None and [int(v) for v in image_size] != spec["image_size"]:
        raise ValueError(f"image_size {list(image_size)} differs from the preprocessing "
                         f"spec's {spec['image_size']}.")
    if channels is not None and int(channels) != spec["channels"]:
        raise ValueError(f"channels {channels} differs from the preprocessing spec's "
                         f"{spec['channels']}.")
    return spec


def export_model(model, model_base_path, model_name, class_names, thresholds=None,
                 image_size=None, channels=None, has_background=True, version=None,
                 warmup_batch_sizes=(1, 8), update_model_config=True, serving_base_path=None,
                 verbose=False, preprocessing=None, lineage=None, absorbed_columns=(),
                 flip_average=False):
    """Write `model` as version ``MODEL_BASE/<model_name>/<version>/`` for TF Serving.

    Args:
        model: Keras model taking float32 images in [0, 255] and returning a
            dict with ``probabilities`` (index 0 = background when
            `has_background`) and optionally ``embedding``.
        model_base_path: ``MODEL_BASE``; created if missing.
        model_name: served model name (a directory name).
        class_names: the N foreground class names, in ``scores`` column order
            (the ``probabilities`` columns that are neither background nor
            absorbed, in order).
        thresholds: N per-class detection thresholds (default 0.5 each).
        image_size: ``(H, W)``; default from `preprocessing`, else the
            model's input shape.
        channels: 1 or 3; default from `preprocessing`, else the model's
            input shape.
        has_background: whether ``probabilities`` column 0 is background.
        version: int version; default the next free one.
        warmup_batch_sizes: batch sizes of the warmup requests (empty: none).
        update_model_config: add the model to ``MODEL_BASE/models.config``.
        serving_base_path: where the server sees ``MODEL_BASE`` (e.g. ``/models``
            inside the tensorflow/serving container); models.config then lists
            ``<serving_base_path>/<model_name>``. Default: the absolute local path.
        verbose: print the endpoints ExportArchive wrote.
        preprocessing: the spec of the evaluation the thresholds were chosen
            with (a ``preprocessing.json`` dict, `keras_fgvc.data.
            preprocessing`); ``serving_default`` prepares images with it and
            it is saved as the ``preprocessing.json`` asset. Default: the
            whole image resized bilinearly to `image_size`, no crop (how
            in-memory splits such as Fashion-MNIST are evaluated; the
            behaviour of exports before the spec existed).
        lineage: a JSON-serialisable dict saying what built the model (a
            `keras_fgvc.bootstrap` round writes one: round, decisions, S / H
            sizes); saved as the ``lineage.json`` asset and returned as
            ``lineage`` by the ``metadata`` signature. None: neither exists.
        absorbed_columns: ``probabilities`` columns that are no served class
            (a bootstrapping round's hard-negative classes): their
            probability is added to ``background`` and they get no score,
            name or threshold. Default: none.
        flip_average: serve the mean of the model's outputs on each image and
            on its mirror image (`keras_fgvc.models.flip_averaged`), as a run
            with ``eval_flip`` evaluated (its ``preprocessing.json`` says
            ``"flip_average": true``); recorded in the asset.

    Returns:
        The path of the published version directory.

    Example:
        >>> export_model(model, "models", "detector", ["sandal", "bag"],  # doctest: +SKIP
        ...              thresholds=[0.4, 0.6])
        'models/detector/1'
    """
    _check_model_name(model_name)
    if flip_average:
        from keras_fgvc.models.flip import flip_averaged

        model = flip_averaged(model)
    preprocessing = _preprocessing(model, image_size, channels, preprocessing)
    image_size, channels = preprocessing["image_size"], preprocessing["channels"]
    width = _probability_width(model, image_size, channels)
    absorbed_columns = _check_absorbed(absorbed_columns, width, has_background)
    num_foreground = width - int(bool(has_background)) - len(absorbed_columns)
    if num_foreground < 1:
        raise ValueError(f"The model has {width} probability columns: no foreground class.")
    class_names, thresholds = _check_classes(class_names, thresholds, num_foreground)
    if lineage is not None:
        try:
            lineage_text = json.dumps(lineage, indent=1, sort_keys=True)
        except (TypeError, ValueError) as error:
            raise ValueError(f"lineage must be JSON-serialisable: {error}") from None

    model_dir = os.path.join(model_base_path, model_name)
    versions.remove_stale_temp_dirs(model_dir)
    with versions.staging_dir(model_dir) as staging:
        labels_path = os.path.join(staging, LABELS_FILE)
        with open(labels_path, "w") as f:
            f.write("\n".join(class_names) + "\n")
        thresholds_path = os.path.join(staging, THRESHOLDS_FILE)
        with open(thresholds_path, "w") as f:
            json.dump({"class_names": class_names, "thresholds": thresholds}, f, indent=1)
        preprocessing_path = os.path.join(staging, PREPROCESSING_FILE)
        with open(preprocessing_path, "w") as f:
            # absorbed_columns: the probability columns `background` also holds, so a
            # reader of the served model knows what its background output sums.
            json.dump({**preprocessing, "has_background": bool(has_background),
                       **({"absorbed_columns": absorbed_columns}
                          if absorbed_columns else {}),
                       **({"flip_average": True} if flip_average else {})}, f, indent=1)

        assets = tf.Module()
        assets.labels = tf.saved_model.Asset(labels_path)
        assets.thresholds = tf.saved_model.Asset(thresholds_path)
        assets.preprocessing = tf.saved_model.Asset(preprocessing_path)
        assets.lineage = None
        if lineage is not None:
            lineage_path = os.path.join(staging, LINEAGE_FILE)
            with open(lineage_path, "w") as f:
                f.write(lineage_text + "\n")
            assets.lineage = tf.saved_model.Asset(lineage_path)

        archive = keras.export.ExportArchive()
        archive.track(model)
        # ExportArchive has no public hook for file assets: attach them to the
        # object it saves so tf.saved_model.save copies them into assets/.
        archive._tf_trackable.detector_assets = assets
        for name, fn, signature in signatures.make_endpoints(
            model, class_names, thresholds, has_background, preprocessing, assets.labels,
            assets.lineage, absorbed_columns,
        ):
            archive.add_endpoint(name, fn, input_signature=signature)

        with versions.atomic_version_dir(model_dir, version) as result:
            archive.write_out(result[0], verbose=verbose)
            signatures.set_method_name(result[0], signatures.CLASSIFY_SIGNATURE,
                                       signatures.CLASSIFY_METHOD)
            if warmup_batch_sizes:
                logs = warmup.warmup_requests(model_name, image_size, channels,
                                              warmup_batch_sizes)
                warmup.write_warmup_requests(result[0], logs)
    if update_model_config:
        model_config.add_to_model_config(
            os.path.join(model_base_path, model_config.MODEL_CONFIG_FILE),
            model_name,
            os.path.abspath(model_dir) if serving_base_path is None
            else f"{serving_base_path.rstrip('/')}/{model_name}",
        )
    return result[0]


def _load_keras_model(path):
    try:
        return keras.saving.load_model(path)
    except (TypeError, ValueError):
        # Custom keras_fgvc layers register themselves on import.
        import importlib

        for package in ("keras_fgvc.layers", "keras_fgvc.losses", "keras_fgvc.models"):
            try:
                importlib.import_module(package)
            except ImportError:
                pass
        return keras.saving.load_model(path)


def export_from_workdir(workdir, model_base_path, model_name, version=None, **kwargs):
    """Export the final model of a training workdir (``W/model.keras`` + label/threshold files).

    Args:
        workdir: training workdir.
        model_base_path: ``MODEL_BASE``.
        model_name: served model name.
        version: int version, default the next free one.
        **kwargs: passed to `export_model`, over what the workdir gives
            (`read_workdir`).

    Returns:
        The path of the published version directory.
    """
    info = read_workdir(workdir)
    model = _load_keras_model(info.pop("model_path"))
    # What the caller passes wins over what the workdir says (e.g. other thresholds).
    return export_model(model, model_base_path, model_name, version=version,
                        **{**info, **kwargs})
