"""Training objectives by name: which loss reads which model output and target.

A recipe is a weighted sum of terms; each term applies a
`keras_fgvc.losses` loss (built with ``reduction=None``, so it returns the
per-example loss) to one model output (``logits``, ``aux_logits``,
``embedding``) and one target (``labels`` or ``teacher_labels``). The
trainer averages the per-example sum over the *global* batch.

The main term can be multiplied by a per-class weight vector (a variable the
trainer owns): deferred re-weighting (DRW, used with LDAM) switches it from
ones to class-balanced weights at `Config.drw_epoch`.

| recipe | terms |
| --- | --- |
| softmax | softmax cross-entropy (label smoothing) on logits |
| sigmoid / focal | sigmoid CE / sigmoid focal (beta = 0) on logits |
| cb_softmax / cb_sigmoid / cb_focal | class-balanced (Eq. 5.8-5.13, `beta`, `gamma`) |
| ldam | LDAM margins (`max_margin`, `scale`); DRW weights averaged as sum(w l) / sum(w) |
| bg_split | softmax on logits + aux_loss_weight * CE(teacher labels) on aux_logits |
| triplet | triplet loss (Eq. 2.1) on the embedding (`margin`, `positive_fraction`, `mining`) |
| triplet_anchor | (1 - omega) * softmax on soft-vote log-probs + omega * triplet (Eq. 2.5) |

Human hard negatives (dataset bootstrapping, Sec. 2.4.3): on a task whose
training split carries `Split.hard_negative_for`, the triplet terms read the
``(label, hard_negative_for)`` rows `TripletLoss` takes (target
``("labels", "hard_negative_for")``), so a rejected candidate is a negative for
the anchors of the class it was rejected for. Such a hard negative has label
-1: every term that reads ``labels`` gives it 0 (it has no class to classify)
and is averaged over the labelled rows only (Eq. 2.4's ``-log p_C(x)`` is a
mean over labelled images x; dividing by the whole batch would shrink the
classification term by the share of hard negatives and raise omega's effective
weight).

More recipes can be added with `register_loss_recipe`.

Example:

>>> recipe = build_loss(config, task)
>>> per_example = recipe(batch, model(batch["images"], training=True))
"""

import dataclasses

import keras
import tensorflow as tf
from keras import ops

from keras_fgvc.losses.mining import MARGIN


@dataclasses.dataclass
class Term:
    """One loss term: ``weight * loss(batch[target], outputs[output])``.

    ``target``: a batch key, or a tuple of keys whose int values are stacked as the
    columns of ``y_true`` (``("labels", "hard_negative_for")``: `TripletLoss` rows).

    ``class_weighted``: multiplied by the per-class weight w_y of each example (DRW);
    ``weighted_mean``: and then averaged as ``sum_i w_i l_i / sum_i w_i`` over the global
    batch instead of ``/ B`` (PyTorch's ``cross_entropy(weight=w)``, what LDAM-DRW's
    official code does).
    """

    loss: object
    output: str = "logits"
    target: str | tuple = "labels"
    weight: float = 1.0
    class_weighted: bool = False
    one_hot: bool = False
    weighted_mean: bool = False


def _global_sum(x):
    """``sum(x)`` over the global batch (all-reduced across replicas in a replica context)."""
    total = tf.reduce_sum(x)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, total)
    return total


class LossRecipe:
    """Sum of `Term`s -> per-example loss ``[B]`` (float32).

    Args:
        terms: list of `Term`.
        num_classes: classes of the main head (for one-hot targets).
        class_weights: optional ``[num_classes]`` variable multiplying class-weighted terms.
        unlabelled_rows: the batches may hold rows of label -1 (human hard negatives
            with no class): terms that read ``labels`` see label 0 there, are
            multiplied by 0 (no classification loss for them) and are averaged over the
            labelled rows of the global batch (the trainer's ``/ B`` times
            ``B / #labelled``).
    """

    def __init__(self, terms, num_classes, class_weights=None, unlabelled_rows=False):
        self.terms = list(terms)
        self.num_classes = int(num_classes)
        self.class_weights = class_weights
        self.unlabelled_rows = bool(unlabelled_rows)

    @property
    def targets(self):
        """Batch keys the recipe reads."""
        keys = set()
        for term in self.terms:
            keys.update(term.target if isinstance(term.target, tuple) else (term.target,))
        return sorted(keys)

    def _target(self, batch, term):
        if isinstance(term.target, tuple):
            return ops.stack([ops.cast(batch[k], "int32") for k in term.target], axis=-1), None
        target = batch[term.target]
        if term.target != "labels" or not self.unlabelled_rows:
            return target, None
        labelled = ops.greater_equal(ops.cast(target, "int32"), 0)
        return ops.where(labelled, target, ops.zeros_like(target)), ops.cast(labelled, "float32")

    def __call__(self, batch, outputs):
        total = 0.0
        for term in self.terms:
            labels, labelled = self._target(batch, term)
            target = labels
            if term.one_hot:
                target = ops.one_hot(ops.cast(target, "int32"), self.num_classes)
            value = ops.cast(term.loss(target, ops.cast(outputs[term.output], "float32")),
                             "float32")
            # The trainer divides the per-example sum by the global batch size B; B / sum(m)
            # turns that into a mean over the rows the term is about: m = the labelled
            # rows (1 / 0), times w for weighted_mean (sum(w l) / sum(w) over them). m
            # depends on labels only.
            mask = labelled
            if labelled is not None:
                value = value * labelled
            if term.class_weighted and self.class_weights is not None:
                weights = ops.take(ops.cast(self.class_weights, "float32"),
                                   ops.cast(labels, "int32"))
                value = value * weights
                if term.weighted_mean:
                    mask = weights if mask is None else mask * weights
            if mask is not None:
                count = _global_sum(tf.ones_like(mask))
                value = value * tf.stop_gradient(count / tf.maximum(_global_sum(mask), 1e-12))
            total = total + term.weight * value
        return total


def _losses():
    import keras_fgvc.losses as losses

    return losses


def _softmax(config, task, num_classes):
    return [Term(keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=config.label_smoothing, reduction=None),
        class_weighted=True, one_hot=True)]


def _class_balanced(class_name, beta_default, with_gamma=False, gamma_default=0.5):
    def build(config, task, num_classes):
        kwargs = dict(beta=float(config.loss_kwargs.get("beta", beta_default)),
                      label_smoothing=config.label_smoothing, reduction=None)
        if with_gamma:
            kwargs["gamma"] = float(config.loss_kwargs.get("gamma", gamma_default))
        if kwargs["beta"] > 0 and config.drw_epoch >= 0:
            # Both would weight an example by its class: w_y^2 after the DRW epoch.
            raise ValueError(
                f"Config loss={config.loss} (class-balanced, beta {kwargs['beta']}) and "
                f"drw_epoch={config.drw_epoch} both re-weight each example by its class, so "
                "together they would square the weight. Use drw_epoch=-1, or a loss without "
                "class-balanced weights (softmax, ldam, or loss_kwargs.beta=0).")
        cls = getattr(_losses(), class_name)
        return [Term(cls(task.class_counts("train").tolist(), **kwargs), class_weighted=True)]

    return build


def _ldam(config, task, num_classes):
    kwargs = {k: config.loss_kwargs[k] for k in ("max_margin", "scale") if k in config.loss_kwargs}
    loss = _losses().LDAMLoss(task.class_counts("train").tolist(), reduction=None, **kwargs)
    # DRW weights averaged as the official code's cross_entropy(weight=w): sum(w l) / sum(w).
    return [Term(loss, class_weighted=True, weighted_mean=True)]


def _bg_split(config, task, num_classes):
    if not task.teacher_class_names:
        raise ValueError(
            f"Loss 'bg_split' needs a task with teacher labels; task {task.name!r} has none."
        )
    # Default: the mode the task's pseudo-labels were made for (task_kwargs.teacher_mode).
    mode = config.loss_kwargs.get("mode", (task.metadata or {}).get("teacher_mode", "hard"))
    # The loss applies lambda (= aux_loss_weight, 0.1 in the authors' code) itself.
    aux = _losses().BackgroundSplittingLoss(mode=mode, weight=config.aux_loss_weight,
                                            reduction=None)
    if mode == "soft" and task.train.teacher_probabilities is None:
        raise ValueError(f"Loss 'bg_split' with mode 'soft' needs teacher probabilities; task "
                         f"{task.name!r} has only hard labels (task_kwargs.teacher_mode=soft).")
    target = "teacher_probabilities" if mode == "soft" else "teacher_labels"
    return _softmax(config, task, num_classes) + [
        Term(aux, output="aux_logits", target=target)
    ]


def _triplet_target(task):
    """``("labels", "hard_negative_for")`` rows when the task carries human hard negatives."""
    return ("labels", "hard_negative_for") if task.train.hard_negative_for is not None \
        else "labels"


def _triplet_term(config, task, weight=1.0):
    triplet = _losses().TripletLoss(
        margin=float(config.loss_kwargs.get("margin", MARGIN)),
        positive_fraction=float(config.loss_kwargs.get("positive_fraction", 0.6)),
        mining=str(config.loss_kwargs.get("mining", "hard")),
        reduction=None,
    )
    return Term(triplet, output="embedding", target=_triplet_target(task), weight=weight)


def _triplet(config, task, num_classes):
    # Eq. 2.1 alone on the "embedding" output (Triplet-Naive / -HN / -M, Fig. 2.4).
    return [_triplet_term(config, task)]


def _triplet_anchor(config, task, num_classes):
    omega = float(config.loss_kwargs.get("omega", 0.1))
    if not 0.0 <= omega <= 1.0:
        raise ValueError(f"loss_kwargs.omega must be in [0, 1], got {omega}.")
    # Eq. 2.5: omega * triplet + (1 - omega) * classification (-log p_y of the soft vote;
    # softmax cross-entropy on the soft vote's log-probabilities is exactly -log p_y).
    (classification,) = _softmax(config, task, num_classes)
    classification.weight = 1.0 - omega
    return [classification, _triplet_term(config, task, weight=omega)]


_RECIPES = {
    "softmax": _softmax,
    "sigmoid": _class_balanced("ClassBalancedSigmoidCrossEntropy", 0.0),
    "focal": _class_balanced("ClassBalancedFocalLoss", 0.0, True, 2.0),
    "cb_softmax": _class_balanced("ClassBalancedSoftmaxCrossEntropy", 0.9999),
    "cb_sigmoid": _class_balanced("ClassBalancedSigmoidCrossEntropy", 0.9999),
    "cb_focal": _class_balanced("ClassBalancedFocalLoss", 0.9999, True, 0.5),
    "ldam": _ldam,
    "bg_split": _bg_split,
    "triplet": _triplet,
    "triplet_anchor": _triplet_anchor,
}


def register_loss_recipe(name, builder=None, *, overwrite=False):
    """Registers a loss recipe under `name` (usable as ``Config.loss``).

    Use as a decorator (``@register_loss_recipe("my_loss")``) or call it
    directly (``register_loss_recipe("my_loss", builder)``). A builder is
    ``builder(config, task, num_classes) -> list[Term]``.

    Args:
        name: non-empty recipe name.
        builder: the builder; omitted = return a decorator.
        overwrite: allow replacing an existing recipe (otherwise ValueError).

    Returns:
        The builder (or, without `builder`, a decorator returning it).

    Example:
        >>> @register_loss_recipe("triplet_only_m05")
        ... def _build(config, task, num_classes):
        ...     return [Term(TripletLoss(margin=0.5, reduction=None), output="embedding")]
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Loss recipe name must be a non-empty string; got {name!r}.")

    def register(fn):
        if not callable(fn):
            raise ValueError(f"Loss recipe {name!r} builder must be callable; got {fn!r}.")
        if name in _RECIPES and _RECIPES[name] is not fn and not overwrite:
            raise ValueError(f"Loss recipe {name!r} is already registered "
                             "(pass overwrite=True to replace it).")
        _RECIPES[name] = fn
        return fn

    return register if builder is None else register(builder)


def list_losses():
    """Names `Config.loss` accepts."""
    return sorted(_RECIPES)


def build_loss(config, task, class_weights=None):
    """The `LossRecipe` named by `config.loss` for `task`.

    Args:
        config: a `Config` (loss, loss_kwargs, label_smoothing, aux_loss_weight).
        task: the `Task` (class counts, teacher classes).
        class_weights: optional per-class weight variable (DRW).
    """
    if config.loss not in _RECIPES:
        raise ValueError(f"Unknown loss {config.loss!r}; choose one of {', '.join(list_losses())}.")
    terms = _RECIPES[config.loss](config, task, task.num_classes)
    unlabelled = bool(len(task.train) and task.train.labels.min() < 0)
    if unlabelled and not any(isinstance(t.target, tuple) for t in terms):
        raise ValueError(
            f"Task {task.name!r} has {int((task.train.labels < 0).sum())} human hard negatives "
            f"with no class (label -1), which only a triplet loss can use; loss "
            f"{config.loss!r} would ignore them. Use loss=triplet_anchor, or give them a class "
            "of their own (task_kwargs.hard_negatives=one_class or per_class).")
    return LossRecipe(terms, task.num_classes, class_weights, unlabelled_rows=unlabelled)
