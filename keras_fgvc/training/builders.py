"""What a `Trainer` is given: task, model, loss recipe, optimizer and hooks.

Model Garden's ``base_task.Task`` is the example (``build_model``,
``build_inputs``, ``build_losses``): each builder reads only the fields of
`Config` its docstring names, and the trainer runs stages and steps with
what they return. Builders that create variables are called inside
``strategy.scope()`` by the trainer.

Example:

>>> task = prepare_task(config)
>>> image_size, channels = input_shape(config, task.train)
>>> with strategy.scope():
...     model = build_model(config, task, image_size, channels)
>>> recipe = build_loss(config, task)
"""

import inspect

import tensorflow as tf

from keras_fgvc.training import components, inputs, tasks
from keras_fgvc.training.hooks import default_hooks

_DEFAULT_IMAGE_SIZE = 224  # file-based tasks: the size when Config.image_size is 0


# === Run settings ===


def check_strategy(config, strategy):
    """Refuse what `strategy` cannot run: ``jit_compile``, ``batch_size`` per replica."""
    replicas = strategy.num_replicas_in_sync
    tpu = isinstance(strategy, tf.distribute.TPUStrategy)
    if config.jit_compile and replicas > 1 and not tpu:
        raise ValueError(
            f"jit_compile=true needs one replica; this strategy has {replicas}. XLA cannot "
            "compile one step function for several devices' variables (Keras turns XLA off "
            "under tf.distribute too); drop --set jit_compile=true, or use one_device (a TPU "
            "strategy compiles with XLA by itself).")
    if config.batch_size % replicas:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by the "
                         f"{replicas} replicas of the strategy.")
    if config.jit_compile and not tpu and not tf.config.list_logical_devices("GPU"):
        print(CPU_XLA_NOTE, flush=True)


# Printed when jit_compile=true runs on a CPU (measured: benchmarks/results/trainer_speed.json).
CPU_XLA_NOTE = (
    "Note: jit_compile=true on a CPU. XLA's CPU backend does not use the oneDNN kernels "
    "TensorFlow runs convolutions with; on a 2-core AVX-512 host the small CNN trained at 0.6x "
    "the steps/s of jit_compile=false. XLA pays on GPUs and TPUs.")


def resolve_precision(config, strategy):
    """The Keras dtype policy `config.mixed_precision` names ("auto": the strategy's)."""
    if config.mixed_precision != "auto":
        return config.mixed_precision
    from keras_fgvc.training.strategy import default_precision

    return default_precision(strategy)


def build_hooks(config, verbose=1, extra=()):
    """The hooks `config` asks for (`hooks.default_hooks`), then `extra` in order."""
    return default_hooks(config, verbose) + list(extra)


# === Task and inputs ===


def prepare_task(config, task=None):
    """`task` (default: built from ``config.task``), checked and cut to
    ``max_train_examples`` / ``max_eval_examples`` (seeded by ``seed``)."""
    task = task if task is not None else tasks.build_task(config)
    tasks.check_task(task)
    return tasks.limit_task(task, config.max_train_examples, config.max_eval_examples,
                            config.seed)


def input_shape(config, split):
    """``(image_size, channels)`` of the model input: ``image_size`` / ``channels`` of
    `config`, or the in-memory images' own size and channels."""
    if split.images is None:
        return config.image_size or _DEFAULT_IMAGE_SIZE, config.channels
    images = split.images
    return config.image_size or images.shape[1], images.shape[3] if images.ndim == 4 else 1


# === Model ===


def _accepts(model_name, argument):
    from keras_fgvc.models import get_builder

    return argument in inspect.signature(get_builder(model_name)).parameters


def build_model(config, task, image_size, channels):
    """The model ``config.model`` names for `task` (call inside ``strategy.scope()``).

    Reads ``model``, ``model_kwargs``, ``weight_decay``, ``adapt_examples`` and
    ``seed``. A model with a teacher head gets the task's teacher classes; one
    that adapts to data (``adapt_examples``) gets a seeded sample of train.
    """
    from keras_fgvc.models import create_model

    kwargs = dict(config.model_kwargs)
    if task.teacher_class_names and _accepts(config.model, "num_teacher_classes"):
        kwargs.setdefault("num_teacher_classes", len(task.teacher_class_names))
    if config.weight_decay:
        kwargs.setdefault("weight_decay", config.weight_decay)
    if config.adapt_examples:
        kwargs["sample"] = _adapt_sample(config, task, image_size, channels)
    model = create_model(config.model, num_classes=task.num_classes,
                         input_shape=(image_size, image_size, channels), **kwargs)
    check_head_matches_loss(config, model)
    return model


# The activation of the ``probabilities`` output each loss trains (Eq. 5.8 vs 5.11 / 5.13).
HEAD_OF_LOSS = {"softmax": "softmax", "cb_softmax": "softmax", "sigmoid": "sigmoid",
                "focal": "sigmoid", "cb_sigmoid": "sigmoid", "cb_focal": "sigmoid"}


def check_head_matches_loss(config, model):
    """A sigmoid loss on a softmax head (or the reverse) trains one model and evaluates,
    thresholds and serves another, without the sigmoid head's prior bias; LDAM on logits
    that are not cosines scales unbounded logits by s = 30: both refused."""
    from keras_fgvc.layers import NormalizedLinear

    cosine = any(isinstance(layer, NormalizedLinear)
                 for layer in model._flatten_layers(include_self=False))
    if config.loss == "ldam" and not cosine:
        raise ValueError(
            f"Config loss=ldam needs cosine logits in [-1, 1] (Cao et al.: normalised "
            f"features and class weights), but model={config.model} has no "
            "NormalizedLinear head: use model=classifier with model_kwargs.head=cosine.")
    want = HEAD_OF_LOSS.get(config.loss)
    if want == "softmax" and cosine:
        raise ValueError(
            f"Config loss={config.loss} trains on the logits, but model={config.model} "
            "has a cosine head, whose logits are unscaled cosines while its probabilities "
            "are softmax(scale x cosine): use loss=ldam with it, or a softmax head.")
    try:
        layer = model.get_layer("probabilities")
    except ValueError:
        return
    got = getattr(getattr(layer, "activation", None), "__name__", None)
    if want and got in ("softmax", "sigmoid") and got != want:
        raise ValueError(
            f"Config loss={config.loss} trains {want} probabilities, but model="
            f"{config.model} outputs {got} probabilities: pick a model with a {want} head "
            f"(e.g. small_cnn{'_sigmoid' if want == 'sigmoid' else ''}, or model=classifier "
            f"with model_kwargs.head={want}).")


def load_trunk(config, task):
    """``(path, model)`` whose trunk the new model starts from (`trunk_path`), or
    ``("", None)``. Loaded outside ``strategy.scope()``: it is only read from."""
    path = trunk_path(config, task)
    if not path:
        return path, None
    from keras_fgvc.models.transfer import load_trunk_source

    return path, load_trunk_source(path)


def _adapt_sample(config, task, image_size, channels):
    """The seeded batch of ``adapt_examples`` training images (in [0, 255]) that kernel
    pooling's gamma is estimated on."""
    sample = tasks.limit_split(task.train, config.adapt_examples, config.seed)
    batch = next(iter(inputs.eval_dataset(sample, config.adapt_examples, image_size,
                                          channels)))
    return batch["images"].numpy()


def copy_trunk(source, model, path, verbose=True, config=None, task=None):
    """Copy `source`'s trunk into `model` (`models.transfer.copy_trunk`); say which layers.

    With `config` and `task`, a model that adapted kernel pooling's gamma to its
    freshly built trunk (``adapt_examples``, no explicit gamma) adapts it again
    to the copied trunk's features, on the same sample (Sec. 3.3.2: gamma from
    the features the training starts from).
    """
    from keras_fgvc.models.pooling import adapt_kernel_pooling
    from keras_fgvc.models.transfer import copy_trunk as copy

    copied = copy(source, model)
    if verbose:
        print(f"Trunk ({', '.join(copied)}) initialised from {path}.", flush=True)
    adapted = (config is not None and config.adapt_examples  # as build_model / apply_pooling
               and config.model_kwargs.get("pooling_kwargs", {}).get("gamma") is None)
    if adapted:
        _, image_size, _, channels = model.input_shape
        gammas = adapt_kernel_pooling(model, _adapt_sample(config, task, image_size, channels))
        if verbose and gammas:
            print(f"Kernel pooling's gamma re-estimated on the copied trunk's features: "
                  f"{', '.join(f'{g:.4g}' for g in gammas)}.", flush=True)
    return copied


def trunk_path(config, task):
    """The ``.keras`` file ``config.init_trunk`` starts the trunk from ("" for none;
    "teacher": the task's saved teacher model)."""
    source = config.init_trunk
    if source != "teacher":
        return source
    if not task.teacher_model:
        raise ValueError(
            f"init_trunk='teacher': task {task.name!r} has no saved teacher model to "
            "start the trunk from; set init_trunk='' (train from the builder's "
            "initialisation) or a path to a .keras model.")
    return task.teacher_model


# === Loss and optimizer ===


def build_loss(config, task, class_weights=None):
    """The `LossRecipe` ``config.loss`` names (`loss_recipes.build_loss`), checked
    against what `task` provides (teacher labels)."""
    from keras_fgvc.training.loss_recipes import build_loss as build_recipe

    recipe = build_recipe(config, task, class_weights)
    if "teacher_labels" in recipe.targets and task.train.teacher_labels is None:
        raise ValueError(f"Loss {config.loss!r} needs teacher labels; task "
                         f"{task.name!r} has none.")
    return recipe


def trainable_variables(model, stage):
    """The variables `stage` trains (``stage.trainable``: path substrings; empty: all)."""
    variables = model.trainable_variables
    if stage.trainable:
        variables = [v for v in variables if any(p in v.path for p in stage.trainable)]
    if not variables:
        setting = {"head": "the variables named classifier",
                   "finetune": f"finetune_trainable={stage.trainable}"}.get(stage.name, "")
        raise ValueError(f"Stage {stage.name!r} has no trainable variables ({setting}).")
    return variables


def build_optimizer(config, stage, precision, clip_in_optimizer=True):
    """A fresh optimizer for `stage`: its learning rate and schedule, ``optimizer``,
    ``momentum`` ... (`components.build_optimizer`); call inside ``strategy.scope()``."""
    schedule = components.build_schedule(config, stage.steps_per_epoch, stage.learning_rate,
                                         stage.schedule)
    return components.build_optimizer(config, schedule, precision,
                                      clip_in_optimizer=clip_in_optimizer)
