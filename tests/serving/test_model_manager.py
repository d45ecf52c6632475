"""Version policy, hot swap and failed loads of the ModelManager (fake servables, no TF)."""

import os
import time

import grpc
import pytest

from keras_fgvc.serving import errors
from keras_fgvc.serving.model_manager import AVAILABLE, END, ModelManager, ModelSpec


class _Fake:
    def __init__(self, name, version, path):
        if os.path.exists(os.path.join(path, "broken")):
            raise ValueError("corrupt saved_model.pb")
        self.name, self.version, self.path = name, version, path
        self.closed = False

    def close(self):
        self.closed = True


def _version(base, v, broken=False):
    os.makedirs(os.path.join(base, str(v)))
    open(os.path.join(base, str(v), "saved_model.pb"), "wb").close()
    if broken:
        open(os.path.join(base, str(v), "broken"), "wb").close()


def test_latest_version_swapped_in_and_old_unloaded(tmp_path):
    base = str(tmp_path / "det")
    _version(base, 1)
    manager = ModelManager([ModelSpec("det", base)], _Fake, poll_wait_seconds=0)
    manager.poll_once()
    v1 = manager.get("det")
    assert v1.version == 1
    _version(base, 2)
    os.makedirs(os.path.join(base, ".tmp-3-x"))  # an export in progress: ignored
    manager.poll_once()
    assert manager.get("det").version == 2
    assert v1.closed  # unloaded; a request still holding it would finish on it
    assert [(s.version, s.state) for s in manager.status("det")] == [(2, AVAILABLE), (1, END)]
    with pytest.raises(errors.ServingError) as info:
        manager.get("det", 1)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.message == "Servable not found for request: Specific(det, 1)"


def test_failed_new_version_keeps_old_one_serving(tmp_path):
    base = str(tmp_path / "det")
    _version(base, 1)
    manager = ModelManager([ModelSpec("det", base)], _Fake, poll_wait_seconds=0)
    manager.poll_once()
    _version(base, 2, broken=True)
    manager.poll_once()
    manager.poll_once()  # not retried, still serving 1
    assert manager.get("det").version == 1
    status = {s.version: s for s in manager.status("det")}
    assert status[1].state == AVAILABLE
    assert status[2].state == END
    assert status[2].error_code == grpc.StatusCode.UNKNOWN
    assert "corrupt saved_model.pb" in status[2].error_message
    _version(base, 3)
    manager.poll_once()
    assert manager.get("det").version == 3


def test_policies_and_unknown_models(tmp_path):
    base = str(tmp_path / "det")
    for v in (1, 2, 3):
        _version(base, v)
    specs = [ModelSpec("all", base, "all"), ModelSpec("two", base, "latest", num_versions=2),
             ModelSpec("one", base, "specific", versions=(2,))]
    manager = ModelManager(specs, _Fake, poll_wait_seconds=0)
    manager.poll_once()
    assert [s.version for s in manager.status("all")] == [3, 2, 1]
    assert [s.version for s in manager.status("two")] == [3, 2]
    assert manager.get("one").version == 2 and manager.get("all", 1).version == 1
    with pytest.raises(errors.ServingError, match=r"Servable not found for request: Latest\(x\)"):
        manager.get("x")
    with pytest.raises(errors.ServingError, match="Could not find any versions of model x"):
        manager.status("x")
    with pytest.raises(errors.ServingError, match="Could not find version 9 of model all"):
        manager.status("all", 9)
    with pytest.raises(ValueError, match="unique"):
        ModelManager([ModelSpec("a", base), ModelSpec("a", base)], _Fake)


def test_update_specs_adds_and_removes_models(tmp_path):
    base_a, base_b = str(tmp_path / "a"), str(tmp_path / "b")
    _version(base_a, 1)
    _version(base_b, 5)
    manager = ModelManager([ModelSpec("a", base_a)], _Fake, poll_wait_seconds=0)
    manager.poll_once()
    a1 = manager.get("a")
    manager.update_specs([ModelSpec("a", base_a), ModelSpec("b", base_b)])
    manager.poll_once()
    assert manager.get("a") is a1 and manager.get("b").version == 5
    manager.update_specs([ModelSpec("b", base_b)])
    assert a1.closed and manager.model_names == ["b"]
    with pytest.raises(errors.ServingError, match="Latest\\(a\\)"):
        manager.get("a")
    with pytest.raises(ValueError, match="unique"):
        manager.update_specs([ModelSpec("b", base_b), ModelSpec("b", base_a)])


def test_model_spec_from_model_config():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(
        'model_config_list { config { name: "a" base_path: "/a" } '
        'config { name: "b" base_path: "/b" model_version_policy { specific { versions: 4 } } } '
        'config { name: "c" base_path: "/c" model_version_policy { latest { num_versions: 2 } } } '
        'config { name: "d" base_path: "/d" model_version_policy { all {} } } }',
        model_server_config_pb2.ModelServerConfig())
    specs = [ModelSpec.from_model_config(c) for c in config.model_config_list.config]
    assert specs == [ModelSpec("a", "/a"), ModelSpec("b", "/b", "specific", versions=(4,)),
                     ModelSpec("c", "/c", "latest", num_versions=2), ModelSpec("d", "/d", "all")]


class _NeedsVariables(_Fake):
    def __init__(self, name, version, path):
        if not os.path.isdir(os.path.join(path, "variables")):
            raise ValueError("no variables/ yet")
        super().__init__(name, version, path)


def test_failed_load_is_retried_with_back_off_until_complete(tmp_path):
    base = str(tmp_path / "det")
    _version(base, 1)
    os.makedirs(os.path.join(base, "1", "variables"))
    manager = ModelManager([ModelSpec("det", base)], _NeedsVariables, poll_wait_seconds=0,
                           max_num_load_retries=2, load_retry_interval_s=0.2)
    manager.poll_once()
    _version(base, 2)  # saved_model.pb first; variables/ "arrives" later
    manager.poll_once()
    assert manager.status("det", 2)[0].state == END and manager.get("det").version == 1
    manager.poll_once()  # the retry is not due yet
    time.sleep(0.25)
    manager.poll_once()  # retry 1 of 2 fails, the next waits 0.4 s
    time.sleep(0.45)
    manager.poll_once()  # retry 2 of 2 fails: spent
    time.sleep(1.0)
    manager.poll_once()
    assert manager.status("det", 2)[0].state == END  # spent, directory unchanged: not retried
    os.makedirs(os.path.join(base, "2", "variables"))
    open(os.path.join(base, "2", "variables", "variables.index"), "wb").close()
    manager.poll_once()  # the directory changed: tried again, and it loads
    assert manager.get("det").version == 2
    assert manager.status("det", 2)[0].state == AVAILABLE
