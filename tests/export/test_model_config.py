"""models.config: the ModelServerConfig text proto TF Serving reads."""

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from keras_fgvc.export import model_config


def test_write_read_round_trip(tmp_path):
    path = str(tmp_path / "models.config")
    model_config.write_model_config(path, [("a", "/models/a"), ("b", "/models/b")])
    with open(path) as f:
        parsed = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path, c.model_platform) for c in parsed.model_config_list.config] == [
        ("a", "/models/a", "tensorflow"),
        ("b", "/models/b", "tensorflow"),
    ]
    entries = model_config.model_entries(model_config.read_model_config(path))
    assert [(n, b) for n, b, _ in entries] == [("a", "/models/a"), ("b", "/models/b")]


def test_add_keeps_other_entries_and_their_policies(tmp_path):
    path = str(tmp_path / "models.config")
    with open(path, "w") as f:
        f.write('model_config_list { config { name: "old" base_path: "/m/old" '
                'model_platform: "tensorflow" model_version_policy { all {} } } }')
    model_config.add_to_model_config(path, "new", "/m/new")
    model_config.add_to_model_config(path, "old", "/m/old2")  # update in place
    config = model_config.read_model_config(path)
    by_name = {c.name: c for c in config.model_config_list.config}
    assert sorted(by_name) == ["new", "old"]
    assert by_name["old"].base_path == "/m/old2"
    assert by_name["old"].model_version_policy.HasField("all")
    assert by_name["new"].base_path == "/m/new"


def test_bad_input(tmp_path):
    path = str(tmp_path / "models.config")
    with pytest.raises(ValueError, match="unique"):
        model_config.write_model_config(path, [("a", "/x"), ("a", "/y")])
    with pytest.raises(ValueError, match="non-empty"):
        model_config.write_model_config(path, [("", "/x")])
    with open(path, "w") as f:
        f.write("this is not a proto {")
    with pytest.raises(ValueError, match="not a ModelServerConfig"):
        model_config.read_model_config(path)
