"""tf.distribute strategy factory: one_device | mirrored | multi_worker | tpu.

The trainer's loop (`loop.py`) is the same under every strategy; only this
factory differs. Strategies are looked up by name in `_FACTORIES`.

Example:

>>> strategy = make_strategy("one_device")
>>> with strategy.scope():
...     model = keras_fgvc.models.create_model("small_cnn", num_classes=10)
"""

import json
import os
import socket
import urllib.parse

import tensorflow as tf
from absl import logging


class StrategyError(RuntimeError):
    """The requested strategy cannot be built here (no TPU, no TF_CONFIG, ...)."""


def configure_logical_cpus(count=2):
    """Split the first physical CPU into `count` logical devices (for `mirrored` on CPU).

    Must run before TensorFlow initialises its devices; afterwards it is a
    no-op (the existing logical devices are kept) and returns False.
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * count
        )
        return True
    except RuntimeError:
        return False


def _one_device(tpu=None):
    device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)


def _mirrored(tpu=None):
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(cpus) < 2:
        logging.warning(
            "mirrored: only %d logical CPU device; call configure_logical_cpus() before "
            "TensorFlow starts to get 2.", len(cpus)
        )
    # Reduce through one device: CPU collectives of two MirroredStrategy objects in one
    # process can share instance keys and abort with a shape mismatch.
    return tf.distribute.MirroredStrategy(
        devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def _multi_worker(tpu=None):
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise StrategyError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable "
            '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}).'
        )
    try:
        tf_config = json.loads(text)
        workers = tf_config["cluster"]["worker"]
        tf_config["task"]["index"]
    except (ValueError, KeyError, TypeError) as error:
        raise StrategyError(f"TF_CONFIG is not valid ({error!r}): {text}") from None
    if not workers:
        raise StrategyError(f"TF_CONFIG lists no workers: {text}")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _check_reachable(address, timeout=5.0):
    """Fail fast on a grpc:// TPU address nobody listens on (the resolver would hang)."""
    parsed = urllib.parse.urlparse(address)
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise StrategyError(f"--tpu={address!r}: expected grpc://HOST:PORT.")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        raise StrategyError(
            f"No TPU reachable at {address} ({error}). Check --tpu or run with "
            "--strategy=one_device / mirrored."
        ) from None


def _tpu(tpu=None):
    if tpu is None or tpu == "":
        raise StrategyError(
            "--strategy=tpu needs --tpu (a TPU name, grpc://HOST:PORT, or 'local' on a TPU VM)."
        )
    if tpu.startswith("grpc://"):
        _check_reachable(tpu)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise StrategyError(f"No TPU reachable for --tpu={tpu!r}: {first_line}") from None
    return tf.distribute.TPUStrategy(resolver)


_FACTORIES = {
    "one_device": _one_device,
    "mirrored": _mirrored,
    "multi_worker": _multi_worker,
    "tpu": _tpu,
}

STRATEGIES = tuple(_FACTORIES)


def make_strategy(name, tpu=None):
    """Build the `tf.distribute.Strategy` called `name` (see `STRATEGIES`).

    Args:
        name: "one_device", "mirrored", "multi_worker" (reads TF_CONFIG) or "tpu".
        tpu: TPU name or address for "tpu".

    Raises:
        ValueError: unknown name.
        StrategyError: the strategy cannot run here (with the reason).
    """
    if name not in _FACTORIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
    return _FACTORIES[name](tpu=tpu)


def is_chief(strategy):
    """True on the worker that writes the workdir (worker 0; always true off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0)


def worker_index(strategy):
    """This worker's index (0 off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 0
    return int(resolver.task_id or 0)


def default_precision(strategy):
    """The mixed-precision policy "auto" resolves to: bf16 on TPU, f16 on GPU, f32 on CPU."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16"
    return "float32"
