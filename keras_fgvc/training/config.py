"""Experiment configs: one frozen dataclass, its registry, `--set` overrides and their checks.

An experiment is a `Config` registered under its name (`register_config`).
The experiments themselves and their lookup by name (`get_config`,
`list_configs`, `resolve_config`) live in `keras_fgvc.training.experiments`,
which this module does not import. Overrides are parsed with the type of the
dataclass field they replace (``int``, ``float``, ``bool``, ``str``, tuples,
and ``dict`` fields addressed with a dotted key: ``--set
model_kwargs.pooling=kernel``). An unknown key or a value out of range is a
`ValueError` raised before anything is built.

Example:

>>> config = Config(task="fashion_bg", learning_rate=0.05)
>>> config = apply_overrides(config, ["steps_per_epoch=2", "learning_rate=0.01"])
>>> config.steps_per_epoch
2
"""

import ast
import dataclasses
import json
import typing

# name -> Config, filled by `register_config` as each `keras_fgvc.training.experiments`
# module is imported; read through that package's `get_config` / `list_configs`.
_REGISTRY = {}


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one training run needs, its fields grouped by the part of the run that reads them.

    The registered experiments' values are in `keras_fgvc.training.experiments`;
    ``--set key=value`` changes any field but ``name`` (`apply_overrides`).
    """

    name: str = ""  # the registered name (``--config NAME``)
    description: str = ""  # what the experiment trains and the command that runs it

    # === Task: the data and how it is read ===
    task: str = "fashion_bg"  # registered task name (`tasks.list_tasks()`)
    data_dir: str = ""  # local data root; paper-scale tasks fail clearly without it
    task_kwargs: dict = dataclasses.field(default_factory=dict)  # task builder's (N, imbalance)
    image_size: int = 0  # model input resolution (0 = the task's native size)
    channels: int = 1  # image channels the model takes
    augment: bool = False  # random-resized crop + flip, for path-based tasks
    max_train_examples: int = 0  # seeded subset of the training split, every class kept (0 = all)
    max_eval_examples: int = 0  # the same for the validation and test splits (smoke tests)
    sampling: str = "instance"  # "instance" (shuffle) or "class_balanced" (uniform over classes)

    # === Model ===
    model: str = "small_cnn"  # registered model name (`keras_fgvc.models.list_models()`)
    model_kwargs: dict = dataclasses.field(default_factory=dict)  # its builder's arguments
    # Training images passed to the builder as ``sample`` (kernel pooling sets gamma from them;
    # 0 = none).
    adapt_examples: int = 0
    # Where the trunk's weights start: "" (the builder's own initialisation: random, or
    # ``model_kwargs.weights``), "teacher" (the trunk of the task's teacher model, whose
    # predictions split the background: the background-splitting protocol, every method
    # fine-tunes that pretrained network with fresh heads), or a path to a ``.keras`` model
    # with the same trunk (`keras_fgvc.models.transfer.copy_trunk`).
    init_trunk: str = ""

    # === Loss ===
    loss: str = "softmax"  # registered loss recipe (`loss_recipes.list_losses()`)
    loss_kwargs: dict = dataclasses.field(default_factory=dict)  # its arguments (beta, gamma...)
    label_smoothing: float = 0.0  # in [0, 1)
    aux_loss_weight: float = 0.1  # background splitting's auxiliary loss (0.1: authors' code)
    drw_epoch: int = -1  # epoch at which deferred class re-weighting starts (-1 = off)
    drw_beta: float = 0.9999  # its class-balanced beta, in [0, 1) (= losses.class_balanced.BETA)

    # === Optimizer and learning-rate schedule ===
    optimizer: str = "sgd"  # `components.list_optimizers()`: "sgd" (momentum) or "rmsprop"
    learning_rate: float = 0.1  # base rate of the first stage
    momentum: float = 0.9  # SGD's and RMSProp's momentum
    rmsprop_rho: float = 0.9  # RMSProp's moving-average decay
    rmsprop_epsilon: float = 1.0  # RMSProp's epsilon
    # L2 on kernels, passed to the model builder, which keeps it off biases, BatchNorm and the
    # sigmoid prior bias. Keras's L2 factor: loss += weight_decay * ||w||^2, a gradient of
    # 2 * weight_decay * w; a paper's (SGD) weight decay lam is lam / 2
    # (`experiments.paper.sgd_weight_decay`).
    weight_decay: float = 0.0
    clip_value: float = 0.0  # clip every gradient element to [-v, v] (0 = off; Ch. 3 uses 1)
    schedule: str = "constant"  # `components.list_schedules()`: constant, warmup_step, ...
    warmup_epochs: float = 0.0  # linear warm-up length, for every schedule
    decay_epochs: tuple = ()  # "warmup_step": increasing epochs at which the rate decays
    decay_rate: float = 0.1  # the factor of each step ("warmup_step") or period ("exponential")
    # "exponential": multiply by decay_rate every this many epochs, staircase (Ch. 4: 0.94
    # every 2).
    decay_every_epochs: float = 2.0

    # === Stages: their length, data and what changes between them ===
    batch_size: int = 128  # global, over all replicas
    # Stage 0, before "train" (Ch. 3.4: the classifier starts as "a logistic regression
    # classifier on the ... pooling of pre-trained CNN features"): only the variables whose
    # path has "classifier" train (every head: also BG-split's aux_classifier), the model in
    # inference mode (fixed features, BatchNorm untouched). Its epochs count in drw_epoch.
    head_epochs: int = 0  # its length (0 = no such stage)
    head_learning_rate: float = 0.1  # its (constant) learning rate
    epochs: int = 1  # length of the main stage ("train")
    steps_per_epoch: int = 0  # 0 = training examples // batch_size
    # Stage 2: two-stage fine-tuning (Ch. 4.2.2) or decoupled re-training (LWS).
    finetune_epochs: int = 0  # its length (0 = one stage only)
    finetune_learning_rate: float = 1e-3  # its learning rate
    finetune_max_per_class: int = 0  # cap per class of its balanced subset (0 = no cap)
    finetune_sampling: str = "instance"  # its sampling, as `sampling`
    finetune_trainable: tuple = ()  # variable-path substrings trained in it (empty = all)
    # "" or "lws": wrap the trained model in learnable per-class logit scales, everything
    # else frozen.
    finetune_transform: str = ""
    # At the end of every stage, before evaluation and export, set each trainable BatchNorm
    # layer's moving mean / variance to the average batch statistics of this many training
    # batches (0 = off: keep what the moving averages reached, which after a short run still
    # carries their mean-0 / variance-1 start; see `keras_fgvc.training.batchnorm`).
    bn_reestimate_batches: int = 0
    # Where those batches come from: "stage" (the stage's own split and sampling) or "train"
    # (the first stage's: for a fine-tuning stage too short for the weights to adapt to its
    # subset's statistics).
    bn_reestimate_data: str = "stage"
    # Metric learning (Sec. 2.4.1): every this many steps re-compute the training set's
    # embeddings and re-mine triplets (0 = off). The anchors are initialised by k-means once,
    # before the first step, then learned (Sec. 2.3.5).
    refresh_every_steps: int = 0
    refresh_max_examples: int = 2048  # embeddings of a new random subset this large each time
    refresh_anchors: bool = False  # also re-run k-means on the anchors (not the paper's; off)

    # === Evaluation ===
    eval_batch_size: int = 256  # global batch of evaluation and prediction
    eval_every_epochs: int = 1  # evaluate every this many epochs and at the end of each stage
    # Score each image as the mean of the model's outputs on it and on its mirror image (Ch.
    # 3.4); W/preprocessing.json says so and the export serves `models.flip_averaged`.
    eval_flip: bool = False

    # === Checkpointing ===
    checkpoint_every_steps: int = 100  # save a checkpoint (W/checkpoints) every this many steps
    keep_checkpoints: int = 3  # how many of the newest checkpoints are kept

    # === Runtime: how the steps run, not what they compute ===
    # "auto" (bfloat16 on TPU, float16 on GPU, float32 on CPU) or a Keras policy name.
    mixed_precision: str = "auto"
    seed: int = 0  # seeds initialisation, data order and subsets
    log_every_steps: int = 10  # TensorBoard scalars every this many steps
    # K train steps per call of the compiled step function (a `tf.while_loop` over the
    # iterator: one host sync per K steps; never across an epoch end, a checkpoint or a
    # hook's step period).
    steps_per_execution: int = 1
    jit_compile: bool = False  # compile the per-replica train step with XLA (what TPUs run)

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
    """Register `config` under `config.name` (`experiments.get_config` finds it); returns it."""
    if not config.name:
        raise ValueError("A registered config needs a name.")
    if config.name in _REGISTRY:
        raise ValueError(f"Config {config.name!r} is already registered.")
    _REGISTRY[config.name] = config
    return config


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


# Valid values of the fields that pick one of a fixed set; `optimizer` and `schedule` are
# whatever their registries hold (`_choices`), so a new one is added in one place.
_CHOICES = {
    "sampling": ("instance", "class_balanced"),
    "finetune_sampling": ("instance", "class_balanced"),
    "mixed_precision": ("auto", "float32", "mixed_float16", "mixed_bfloat16"),
    "finetune_transform": ("", "lws"),
    "bn_reestimate_data": ("stage", "train"),
}


def _choices():
    """`_CHOICES` and the names the optimizer and schedule registries hold."""
    # Imported here: `components` imports Keras, which this module does not need otherwise.
    from keras_fgvc.training.components import list_optimizers, list_schedules

    return {"optimizer": list_optimizers(), "schedule": list_schedules(), **_CHOICES}


def validate_config(config):
    """Checks that need no data: choices, ranges, loss beta in [0, 1)."""
    for key, choices in _choices().items():
        value = getattr(config, key)
        if value not in choices:
            raise ValueError(f"Config {key}={value!r} is not one of {', '.join(choices)}.")
    positive = ("batch_size", "epochs", "eval_batch_size", "checkpoint_every_steps",
                "steps_per_execution")
    for key in positive:
        if getattr(config, key) <= 0:
            raise ValueError(f"Config {key}={getattr(config, key)} must be > 0.")
    for key in ("steps_per_epoch", "head_epochs", "finetune_epochs", "refresh_every_steps",
                "warmup_epochs",
                "bn_reestimate_batches"):
        if getattr(config, key) < 0:
            raise ValueError(f"Config {key}={getattr(config, key)} must be >= 0.")
    for key in ("learning_rate", "head_learning_rate"):
        if getattr(config, key) <= 0:
            raise ValueError(f"Config {key}={getattr(config, key)} must be > 0.")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f"Config label_smoothing={config.label_smoothing} must be in [0, 1).")
    for key, value in (("loss_kwargs.beta", config.loss_kwargs.get("beta")),
                       ("drw_beta", config.drw_beta)):
        if value is not None and not 0.0 <= float(value) < 1.0:
            raise ValueError(f"Config {key}={value} is outside [0, 1): beta must be in [0, 1).")
    if config.init_trunk not in ("", "teacher") and not config.init_trunk.endswith(".keras"):
        raise ValueError(f"Config init_trunk={config.init_trunk!r} must be '', 'teacher' or a "
                         "path to a .keras model.")
    loaded = {k: config.model_kwargs.get(k) for k in ("weights", "base_weights")}
    loaded = {k: v for k, v in loaded.items() if v}
    if config.init_trunk and loaded:
        key, value = next(iter(loaded.items()))
        raise ValueError(f"Config init_trunk={config.init_trunk!r} would overwrite the trunk "
                         f"weights loaded from model_kwargs.{key}={value!r}: set "
                         "init_trunk='' to keep them (or drop the weights).")
    if config.clip_value < 0:
        raise ValueError(f"Config clip_value={config.clip_value} must be >= 0 (0 = off).")
    if list(config.decay_epochs) != sorted(config.decay_epochs):
        raise ValueError(f"Config decay_epochs={config.decay_epochs} must be increasing.")
