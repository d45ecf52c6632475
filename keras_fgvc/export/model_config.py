"""``models.config``: the ModelServerConfig text proto TF Serving reads with --model_config_file.

Example file::

    model_config_list {
      config {
        name: "detector"
        base_path: "/models/detector"
        model_platform: "tensorflow"
      }
    }
"""

import os

from google.protobuf import text_format

from keras_fgvc.files import write_text

MODEL_CONFIG_FILE = "models.config"


def _config_pb2():
    try:
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "models.config needs tensorflow-serving-api: pip install 'keras-fgvc[serving]'."
        ) from err
    return model_server_config_pb2


def read_model_config(path):
    """Parse a models.config file into a ``tensorflow.serving.ModelServerConfig``."""
    pb2 = _config_pb2()
    with open(path) as f:
        text = f.read()
    try:
        return text_format.Parse(text, pb2.ModelServerConfig())
    except text_format.ParseError as err:
        raise ValueError(f"{path!r} is not a ModelServerConfig text proto: {err}") from err


def model_entries(config):
    """``[(name, base_path, ModelConfig)]`` of a ModelServerConfig, in file order."""
    return [(c.name, c.base_path, c) for c in config.model_config_list.config]


def write_model_config(path, models):
    """Atomically write a models.config listing `models`.

    Args:
        path: file to write.
        models: iterable of ``(name, base_path)``; base paths are written as given.

    Returns:
        The ModelServerConfig written.
    """
    pb2 = _config_pb2()
    config = pb2.ModelServerConfig()
    seen = set()
    for name, base_path in models:
        if not name or name in seen:
            raise ValueError(f"Model names must be non-empty and unique, got {name!r}.")
        seen.add(name)
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = base_path
        entry.model_platform = "tensorflow"
    write_text(path, text_format.MessageToString(config))
    return config


def add_to_model_config(path, name, base_path):
    """Add (or update) one model in the models.config at `path`, keeping the other entries.

    Other entries keep all their fields (version policies, labels); an
    existing entry for `name` gets the new `base_path` and keeps the rest.

    Returns:
        The ModelServerConfig written.
    """
    pb2 = _config_pb2()
    config = read_model_config(path) if os.path.exists(path) else pb2.ModelServerConfig()
    entries = config.model_config_list.config
    for entry in entries:
        if entry.name == name:
            entry.base_path = base_path
            break
    else:
        entry = entries.add()
        entry.name = name
        entry.base_path = base_path
        entry.model_platform = "tensorflow"
    write_text(path, text_format.MessageToString(config))
    return config
