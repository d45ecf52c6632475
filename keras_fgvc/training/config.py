"""Experiment configs: one frozen dataclass, a registry of named experiments, `--set` overrides.

An experiment is a registered `Config` (STYLE.md: "Every experiment is a
registered config name; `--set key=value` overrides"). Overrides are parsed
with the type of the dataclass field they replace (``int``, ``float``,
``bool``, ``str``, tuples, and ``dict`` fields addressed with a dotted key:
``--set model_kwargs.pooling=kernel``). An unknown experiment name or an
unknown key is a `ValueError` raised before anything is built.

Example:

>>> config = get_config("fashion_bg_ft")
>>> config = apply_overrides(config, ["steps_per_epoch=2", "learning_rate=0.01"])
>>> config.steps_per_epoch
2
"""

import ast
import dataclasses
import json
import typing

_REGISTRY = {}


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one training run needs; see `keras_fgvc.training.experiments_*` for values.

    Data:
        task: registered task name (`keras_fgvc.training.tasks.list_tasks()`).
        data_dir: local data root; paper-scale tasks fail clearly when missing.
        task_kwargs: keyword arguments of the task builder (N, imbalance, ...).
        image_size: model input resolution (0 = the task's native size).
        channels: image channels the model takes.
        augment: random-resized crop + flip for path-based tasks.
        max_train_examples / max_eval_examples: keep a prefix (0 = all);
            used by smoke tests.
        sampling: "instance" (shuffle) or "class_balanced" (uniform over classes).
    Model:
        model: registered model name; model_kwargs: its builder's arguments;
        adapt_examples: training images passed to the builder as ``sample``
        (kernel pooling sets gamma from them; 0 = none);
        init_trunk: where the trunk's weights start: "" (the builder's own
        initialisation: random, or ``model_kwargs.weights``), "teacher" (the
        trunk of the task's teacher model, whose predictions split the
        background: the background-splitting protocol, every method fine-tunes
        that pretrained network with fresh heads), or a path to a ``.keras``
        model with the same trunk (`keras_fgvc.models.transfer.copy_trunk`).
    Loss:
        loss: registered loss recipe (`components.list_losses()`);
        loss_kwargs: its arguments (beta, gamma, margin ...);
        label_smoothing; aux_loss_weight: background-splitting auxiliary
        weight (0.1 in the authors' code); drw_epoch: epoch at which
        deferred class re-weighting starts (-1 = off), drw_beta.
    Optimisation:
        optimizer: "sgd" (momentum) or "rmsprop"; learning_rate; momentum;
        rmsprop_rho / rmsprop_epsilon; weight_decay (L2 on kernels, passed
        to the model builder, which keeps it off biases, BatchNorm and the
        sigmoid prior bias);
        clip_value: clip every gradient element to [-v, v] (0 = off, Ch. 3
        uses 1); schedule: "constant" | "warmup_step" | "exponential";
        warmup_epochs; decay_epochs (step-decay boundaries); decay_rate;
        decay_every_epochs (exponential: multiply by decay_rate every this
        many epochs, staircase; Ch. 4 uses 0.94 every 2).
    Loop:
        batch_size (global, over all replicas); epochs; steps_per_epoch
        (0 = examples // batch_size); eval_batch_size; eval_every_epochs;
        checkpoint_every_steps; keep_checkpoints; steps_per_execution: K
        train steps per call of the compiled step function (a `tf.while_loop`
        over the iterator: one host sync per K steps; never across an epoch end,
        a checkpoint or a hook's step period); jit_compile: compile the
        per-replica train step with XLA (what TPUs run); mixed_precision: "auto"
        (bfloat16 on TPU, float16 on GPU, float32 on CPU) or a Keras policy
        name; seed; log_every_steps; bn_reestimate_batches: at the end of
        every stage, before evaluation and export, set each trainable BatchNorm layer's
        moving mean / variance to the average batch statistics of this many
        training batches (0 = off; keeps what the moving averages reached, which
        after a short run still carries their mean-0 / variance-1 start; see
        `keras_fgvc.models.batchnorm`); bn_reestimate_data: "stage" (the
        batches come from the stage's own split and sampling) or "train" (from
        the first stage's: the task's training split; for a fine-tuning stage
        too short for the weights to adapt to its subset's statistics).
    Two-stage fine-tuning (Ch. 4.2.2) / decoupled re-training (LWS):
        finetune_epochs (0 = one stage); finetune_learning_rate;
        finetune_max_per_class (balanced subset cap); finetune_sampling;
        finetune_trainable (variable-path substrings trained in stage 2;
        empty = all); finetune_transform: "" or "lws" (wrap the trained
        model in learnable per-class logit scales, everything else frozen).
    Metric learning (Sec. 2.4.1):
        refresh_every_steps: every M steps re-compute embeddings of the
        training set and re-mine triplets (0 = off); the anchors are
        initialised by k-means once, before the first step, then learned
        (Sec. 2.3.5); refresh_max_examples: embeddings computed on this many
        training examples (a new random subset at every refresh);
        refresh_anchors: also re-initialise the anchors by k-means at every
        refresh (not the paper's procedure; default off).
    """

    name: str = ""
    description: str = ""
    # Data.
    task: str = "fashion_bg"
    data_dir: str = ""
    task_kwargs: dict = dataclasses.field(default_factory=dict)
    image_size: int = 0
    channels: int = 1
    augment: bool = False
    max_train_examples: int = 0
    max_eval_examples: int = 0
    sampling: str = "instance"
    # Model.
    model: str = "small_cnn"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    adapt_examples: int = 0
    init_trunk: str = ""
    # Loss.
    loss: str = "softmax"
    loss_kwargs: dict = dataclasses.field(default_factory=dict)
    label_smoothing: float = 0.0
    aux_loss_weight: float = 0.1
    drw_epoch: int = -1
    drw_beta: float = 0.9999
    # Optimisation.
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    rmsprop_rho: float = 0.9
    rmsprop_epsilon: float = 1.0
    weight_decay: float = 0.0
    clip_value: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    decay_epochs: tuple = ()
    decay_rate: float = 0.1
    decay_every_epochs: float = 2.0
    # Loop.
    batch_size: int = 128
    epochs: int = 1
    steps_per_epoch: int = 0
    eval_batch_size: int = 256
    eval_every_epochs: int = 1
    checkpoint_every_steps: int = 100
    keep_checkpoints: int = 3
    mixed_precision: str = "auto"
    seed: int = 0
    log_every_steps: int = 10
    steps_per_execution: int = 1
    jit_compile: bool = False
    bn_reestimate_batches: int = 0
    bn_reestimate_data: str = "stage"
    # Two-stage fine-tuning.
    finetune_epochs: int = 0
    finetune_learning_rate: float = 1e-3
    finetune_max_per_class: int = 0
    finetune_sampling: str = "instance"
    finetune_trainable: tuple = ()
    finetune_transform: str = ""
    # Metric learning.
    refresh_every_steps: int = 0
    refresh_max_examples: int = 2048
    refresh_anchors: bool = False

    def to_json(self):
        """The resolved config as a JSON string (what W/config.json holds)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        """Inverse of `dataclasses.asdict` (lists become tuples where the field is a tuple)."""
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in hints:
                raise ValueError(f"Unknown config key {key!r}.")
            kwargs[key] = tuple(value) if hints[key] is tuple else value
        return cls(**kwargs)


# Fields that only change how a run is executed, watched or logged, not what it trains:
# a workdir may be resumed with them changed (e.g. a larger eval batch on another machine).
RESUME_SAFE_FIELDS = frozenset({
    "description", "data_dir", "eval_batch_size", "eval_every_epochs",
    "checkpoint_every_steps", "keep_checkpoints", "log_every_steps", "steps_per_execution",
    "jit_compile"})


def config_changes(old, new, ignore=()):
    """Sorted keys whose values differ between two configs (`Config` or its JSON dict).

    A key present in one only counts as changed; keys in `ignore` are skipped.
    """
    old, new = (json.loads(c.to_json()) if isinstance(c, Config) else c for c in (old, new))
    return sorted(k for k in set(old) | set(new)
                  if k not in ignore and (k not in old or k not in new or old[k] != new[k]))


def with_defaults(values):
    """A config JSON dict (e.g. an older ``W/config.json``) with every field it lacks at
    its `Config` default: a field added after the file was written did not exist then."""
    return {**json.loads(Config().to_json()), **values}


def register_config(config):
    """Register `config` under `config.name`; returns it."""
    if not config.name:
        raise ValueError("A registered config needs a name.")
    if config.name in _REGISTRY:
        raise ValueError(f"Config {config.name!r} is already registered.")
    _REGISTRY[config.name] = config
    return config


def _ensure_registered():
    # The experiment modules register on import.
    from keras_fgvc.training import (  # noqa: F401
        experiments_bootstrap,
        experiments_fashion,
        experiments_folder,
        experiments_paper,
    )


def list_configs():
    """Sorted names of every registered experiment."""
    _ensure_registered()
    return sorted(_REGISTRY)


def get_config(name):
    """The registered experiment `name`; a clear `ValueError` when unknown."""
    _ensure_registered()
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown config {name!r}. Registered configs: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def _parse_scalar(text):
    """A dict value or a tuple element: JSON / Python literal, else the string itself."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            pass
    return text


def _parse_bool(key, text):
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"Override {key}={text!r}: expected a boolean (true/false).")


def _parse_value(key, field_type, text):
    try:
        if field_type is bool:
            return _parse_bool(key, text)
        if field_type is int:
            return int(text)
        if field_type is float:
            return float(text)
        if field_type is str:
            return text
        if field_type is tuple:
            text = text.strip()
            if not text:
                return ()
            value = _parse_scalar(text if text[0] in "[(" else f"[{text}]")
            if isinstance(value, str):  # a bare comma-separated list of words
                value = [v.strip() for v in text.split(",") if v.strip()]
            return tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if field_type is dict:
            value = _parse_scalar(text)
            if not isinstance(value, dict):
                raise ValueError("not a dict")
            return value
    except ValueError as error:
        raise ValueError(
            f"Override {key}={text!r}: cannot parse as {field_type.__name__} ({error})."
        ) from None
    raise ValueError(f"Override {key!r}: unsupported field type {field_type}.")


def apply_overrides(config, overrides):
    """A copy of `config` with each ``key=value`` of `overrides` applied.

    Keys name `Config` fields; ``field.sub=value`` sets one entry of a dict
    field (``model_kwargs.pooling=kernel``). Values are parsed with the
    field's type. Unknown keys raise `ValueError` listing the valid ones.
    """
    hints = typing.get_type_hints(Config)
    changes = {}
    for item in overrides or ():
        if "=" not in item:
            raise ValueError(f"Override {item!r} is not of the form key=value.")
        key, text = item.split("=", 1)
        key = key.strip()
        field, _, sub = key.partition(".")
        if field not in hints or field == "name":
            raise ValueError(
                f"Unknown config key {key!r} in --set. Valid keys: "
                f"{', '.join(k for k in hints if k != 'name')}."
            )
        if sub:
            if hints[field] is not dict:
                raise ValueError(f"Config key {field!r} is not a dict; cannot set {key!r}.")
            current = dict(changes.get(field, getattr(config, field)))
            current[sub] = _parse_scalar(text)
            changes[field] = current
        else:
            changes[field] = _parse_value(key, hints[field], text)
    return dataclasses.replace(config, **changes)


def resolve_config(name, overrides=()):
    """`get_config(name)` with `overrides` applied and checked (`validate_config`)."""
    config = apply_overrides(get_config(name), overrides)
    validate_config(config)
    return config


_CHOICES = {
    "optimizer": ("sgd", "rmsprop"),
    "schedule": ("constant", "warmup_step", "exponential"),
    "sampling": ("instance", "class_balanced"),
    "finetune_sampling": ("instance", "class_balanced"),
    "mixed_precision": ("auto", "float32", "mixed_float16", "mixed_bfloat16"),
    "finetune_transform": ("", "lws"),
    "bn_reestimate_data": ("stage", "train"),
}


def validate_config(config):
    """Checks that need no data: choices, ranges, loss beta in [0, 1)."""
    for key, choices in _CHOICES.items():
        value = getattr(config, key)
        if value not in choices:
            raise ValueError(f"Config {key}={value!r} is not one of {', '.join(choices)}.")
    positive = ("batch_size", "epochs", "eval_batch_size", "checkpoint_every_steps",
                "steps_per_execution")
    for key in positive:
        if getattr(config, key) <= 0:
            raise ValueError(f"Config {key}={getattr(config, key)} must be > 0.")
    for key in ("steps_per_epoch", "finetune_epochs", "refresh_every_steps", "warmup_epochs",
                "bn_reestimate_batches"):
        if getattr(config, key) < 0:
            raise ValueError(f"Config {key}={getattr(config, key)} must be >= 0.")
    if config.learning_rate <= 0:
        raise ValueError(f"Config learning_rate={config.learning_rate} must be > 0.")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f"Config label_smoothing={config.label_smoothing} must be in [0, 1).")
    for key, value in (("loss_kwargs.beta", config.loss_kwargs.get("beta")),
                       ("drw_beta", config.drw_beta)):
        if value is not None and not 0.0 <= float(value) < 1.0:
            raise ValueError(f"Config {key}={value} is outside [0, 1): beta must be in [0, 1).")
    if config.init_trunk not in ("", "teacher") and not config.init_trunk.endswith(".keras"):
        raise ValueError(f"Config init_trunk={config.init_trunk!r} must be '', 'teacher' or a "
                         "path to a .keras model.")
    if config.clip_value < 0:
        raise ValueError(f"Config clip_value={config.clip_value} must be >= 0 (0 = off).")
    if list(config.decay_epochs) != sorted(config.decay_epochs):
        raise ValueError(f"Config decay_epochs={config.decay_epochs} must be increasing.")
