"""Integer versions and the atomic write-then-rename of a version directory."""

import os

import pytest

from keras_fgvc.export import versions


def _make_version(model_dir, version):
    path = os.path.join(model_dir, str(version))
    os.makedirs(path)
    open(os.path.join(path, "saved_model.pb"), "wb").close()


def test_list_and_next_version(tmp_path):
    model_dir = str(tmp_path / "m")
    assert versions.list_versions(model_dir) == []
    assert versions.next_version(model_dir) == 1
    for v in (1, 10, 2):
        _make_version(model_dir, v)
    os.makedirs(os.path.join(model_dir, "11"))  # no saved_model.pb: not a version, but taken
    os.makedirs(os.path.join(model_dir, ".tmp-12-abc"))
    os.makedirs(os.path.join(model_dir, "notes"))
    assert versions.list_versions(model_dir) == [1, 2, 10]
    assert versions.next_version(model_dir) == 12


def test_atomic_version_dir_publishes_on_success(tmp_path):
    model_dir = str(tmp_path / "m")
    _make_version(model_dir, 3)
    with versions.atomic_version_dir(model_dir) as result:
        temp_dir, version = result
        assert version == 4
        assert os.path.basename(temp_dir).startswith(versions.TEMP_PREFIX)
        assert not os.path.exists(os.path.join(model_dir, "4"))  # not visible while writing
        open(os.path.join(temp_dir, "saved_model.pb"), "wb").close()
    assert result == [os.path.join(model_dir, "4"), 4]
    assert versions.list_versions(model_dir) == [3, 4]
    assert sorted(os.listdir(model_dir)) == ["3", "4"]


def test_atomic_version_dir_failure_leaves_nothing(tmp_path):
    model_dir = str(tmp_path / "m")
    _make_version(model_dir, 1)
    with pytest.raises(RuntimeError, match="disk full"):
        with versions.atomic_version_dir(model_dir) as result:
            open(os.path.join(result[0], "saved_model.pb"), "wb").close()
            raise RuntimeError("disk full")
    assert sorted(os.listdir(model_dir)) == ["1"]


def test_version_taken_meanwhile_moves_to_next(tmp_path):
    model_dir = str(tmp_path / "m")
    with versions.atomic_version_dir(model_dir) as result:
        assert result[1] == 1
        open(os.path.join(result[0], "saved_model.pb"), "wb").close()
        _make_version(model_dir, 1)  # a concurrent exporter published 1 first
    assert result[1] == 2
    assert versions.list_versions(model_dir) == [1, 2]


def test_explicit_version(tmp_path):
    model_dir = str(tmp_path / "m")
    with versions.atomic_version_dir(model_dir, version=7) as result:
        pass
    assert result[1] == 7 and os.path.isdir(os.path.join(model_dir, "7"))
    with pytest.raises(ValueError, match="Version 7 already exists"):
        with versions.atomic_version_dir(model_dir, version=7):
            pass
    for bad in (0, -1, "3", 1.5):
        with pytest.raises(ValueError, match="positive int"):
            with versions.atomic_version_dir(model_dir, version=bad):
                pass
    assert sorted(os.listdir(model_dir)) == ["7"]
