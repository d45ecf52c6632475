"""Per-epoch evaluation and the per-class thresholds saved for export.

Background tasks: foreground mAP and macro F1 (`keras_fgvc.metrics.
evaluate_background_task`); other tasks: top-1 / top-5 error
(`evaluate_classification`). At the end of training the per-class score
thresholds that maximise F1 on the validation split
(`best_f1_thresholds`) go to ``W/thresholds.json`` as
``{"class_names": [...foreground...], "thresholds": [...]}``, and which of
those classes the exported detector serves to ``W/preprocessing.json``
(`served_layout`).
"""

import numpy as np
import tensorflow as tf

from keras_fgvc.training import inputs

FLIPPED_OUTPUTS = ("logits", "probabilities")  # the scores `eval_flip` averages


def predict_function(model, output="probabilities", flip=False):
    """A `tf.function` computing ``model(images, training=False)[output]``; with `flip`
    (scores only: `FLIPPED_OUTPUTS`), its mean with the output on the mirrored images,
    `models.flip.flip_averaged`'s value, which the export of a run with ``eval_flip``
    serves (``"flip_average"`` in ``preprocessing.json``): the same wrapper in both."""
    if flip and output in FLIPPED_OUTPUTS:
        from keras_fgvc.models.flip import flip_averaged

        model = flip_averaged(model)
    return tf.function(lambda x: model(x, training=False)[output], reduce_retracing=True,
                       autograph=False)


class PredictFunctions:
    """One `predict_function` per (model, output), traced once and reused by every evaluation
    (`flip`: the scores average with the mirrored images, ``Config.eval_flip``; embeddings,
    which the anchor refresh and the miners read, do not)."""

    def __init__(self, flip=False):
        self._functions = {}
        self.flip = flip

    def get(self, model, output="probabilities"):
        key = (id(model), output)
        if key not in self._functions:
            self._functions[key] = predict_function(model, output, self.flip)
        return self._functions[key]


def weights_fingerprint(model):
    """The model and the sum of each of its variables: changes when any weight changes."""
    sums = tf.nest.map_structure(lambda v: tf.reduce_sum(tf.cast(v, tf.float64)),
                                 [v.value for v in model.variables])
    return id(model), tuple(float(x) for x in sums)


def predict_with_labels(model, split, batch_size, image_size, channels,
                        output="probabilities", call=None, augment=False):
    """``(model(images)[output], labels)`` over `split` in order, float32 / int NumPy.

    The labels come from the input batches, so an unreadable image that the
    pipeline skipped is left out of both. `call` reuses a `predict_function`.
    """
    call = call or predict_function(model, output)
    outputs, labels = [], []
    for batch in inputs.eval_dataset(split, batch_size, image_size, channels, augment):
        outputs.append(call(batch["images"]).numpy().astype(np.float32))
        labels.append(batch["labels"].numpy().astype(np.int64))
    if not outputs:
        return np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(outputs, axis=0), np.concatenate(labels, axis=0)


def predict(model, split, batch_size, image_size, channels, output="probabilities", call=None,
            augment=False):
    """``model(images)[output]`` over `split`, aligned with ``split.labels``.

    Raises:
        ValueError: an image of `split` could not be read (the rows would not align).
    """
    values, labels = predict_with_labels(model, split, batch_size, image_size, channels, output,
                                         call, augment)
    if len(labels) != len(split):
        raise ValueError(f"{len(split) - len(labels)} unreadable image(s) were skipped; use "
                         "predict_with_labels to get the labels of the rows that remain.")
    return values


def _scalars(result):
    """The float entries of a metrics result (dict or object with `as_dict`)."""
    if hasattr(result, "as_dict"):
        result = result.as_dict()
    out = {}
    for key, value in dict(result).items():
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def evaluate(task, labels, probabilities, full=False):
    """Metrics of `probabilities` against `labels` for `task`.

    Returns the scalar metrics (dict of floats), or with `full` everything
    `keras_fgvc.metrics` reports (per-class lists, head / tail breakdown of
    Table 4.4 for tasks without background), JSON-safe.
    """
    from keras_fgvc import metrics

    if task.has_background:
        result = metrics.evaluate_background_task(probabilities, labels)
    else:
        result = metrics.evaluate_classification(probabilities, labels,
                                                 train_counts=task.class_counts("train"))
    return result if full else _scalars(result)


def thresholds(task, labels, probabilities):
    """``{"class_names": foreground names, "thresholds": per-class F1-optimal scores}``."""
    from keras_fgvc import metrics

    names = task.class_names[1:] if task.has_background else task.class_names
    values = metrics.best_f1_thresholds(probabilities, labels,
                                        has_background=task.has_background)
    values = [float(v) for v in np.asarray(values).reshape(-1)]
    if len(values) != len(names):
        raise ValueError(f"best_f1_thresholds gave {len(values)} thresholds for "
                         f"{len(names)} classes.")
    return {"class_names": list(names), "thresholds": values}


def served_layout(task, flip=False):
    """``W/preprocessing.json``'s class keys: ``has_background``, where the task has
    any, ``absorbed_classes``, and with `flip` (``Config.eval_flip``) ``"flip_average":
    true``, so the export serves the flip-averaged scores that were evaluated.

    Absorbed classes are the classes of a task whose ``metadata["category_columns"]``
    names its categories' columns (a bootstrapping round,
    `keras_fgvc.data.bootstrap_manifest`) that are neither background nor a
    category: Softmax + HNS / HNM's hard-negative classes, which only absorb
    probability mass. The export folds them into background and serves the
    category columns alone (`keras_fgvc.export.saved_model`); their scores are
    the probabilities `thresholds` chose the category thresholds on.
    """
    layout = {"has_background": bool(task.has_background)}
    columns = (task.metadata or {}).get("category_columns")
    if columns is not None:
        kept = set(columns) | ({0} if task.has_background else set())
        absorbed = [n for c, n in enumerate(task.class_names) if c not in kept]
        if absorbed:
            layout["absorbed_classes"] = absorbed
    if flip:
        layout["flip_average"] = True
    return layout

