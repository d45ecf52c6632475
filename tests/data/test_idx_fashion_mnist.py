"""IDX reader/writer and the Fashion-MNIST loader (real files + fake gzipped IDX files)."""

import os

import numpy as np
import pytest

from keras_fgvc.data import fashion_mnist
from keras_fgvc.data.idx import read_idx, write_idx


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = str(tmp_path / f"a-idx3{suffix}")
    write_idx(path, array)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


def test_idx_bytes_match_the_format(tmp_path):
    # Header from the IDX spec: 0, 0, type 0x08, ndim 1, size 3 (big-endian), data.
    path = str(tmp_path / "labels-idx1")
    write_idx(path, np.array([7, 8, 9], np.uint8))
    assert open(path, "rb").read() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])
    write_idx(path, np.array([1], np.int32))
    assert open(path, "rb").read() == bytes([0, 0, 0x0C, 1, 0, 0, 0, 1, 0, 0, 0, 1])


def test_idx_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing-idx"):
        read_idx(str(tmp_path / "missing-idx"))
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(str(bad))
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        read_idx(str(short))
    with pytest.raises(ValueError, match="dtype"):
        write_idx(str(tmp_path / "x"), np.zeros(2, np.complex64))


def _fake_fashion(folder, n_train=30, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    data = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(os.path.join(folder, f"{part}-images-idx3-ubyte.gz"), x)
        write_idx(os.path.join(folder, f"{part}-labels-idx1-ubyte.gz"), y)
        data[part] = (x, y)
    return data


def test_load_fake_fashion_mnist(tmp_path):
    data = _fake_fashion(str(tmp_path / "fm"))
    (x, y), (xt, yt) = fashion_mnist.load_fashion_mnist(str(tmp_path / "fm"))
    np.testing.assert_array_equal(x, data["train"][0])
    np.testing.assert_array_equal(y, data["train"][1])
    np.testing.assert_array_equal(xt, data["t10k"][0])
    assert y.dtype == np.int64 and yt.tolist() == list(range(10))


def test_env_and_keras_cache_locations(tmp_path, monkeypatch):
    _fake_fashion(str(tmp_path / "env"))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "env"))
    assert fashion_mnist.candidate_dirs()[0] == str(tmp_path / "env")
    paths = fashion_mnist.find_fashion_mnist()
    assert paths["train_images"].startswith(str(tmp_path / "env"))
    dirs = fashion_mnist.candidate_dirs()
    assert dirs.index(fashion_mnist.DEBIAN_DIR) < dirs.index(
        os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist"))


def test_missing_fashion_mnist_names_apt_get(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_fashion_mnist(str(tmp_path / "nothing"))


def test_mismatched_files(tmp_path):
    folder = str(tmp_path / "fm")
    _fake_fashion(folder)
    write_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"), np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="30 images but 5 labels"):
        fashion_mnist.load_fashion_mnist(folder)
    write_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"), np.full(30, 12, np.uint8))
    with pytest.raises(ValueError, match="outside 0..9"):
        fashion_mnist.load_fashion_mnist(folder)


@pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEBIAN_DIR),
                    reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    paths = fashion_mnist.find_fashion_mnist()
    assert paths["train_images"].endswith("train-images-idx3-ubyte.gz")
    (x, y), (xt, yt) = fashion_mnist.load_fashion_mnist()
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(yt), [1000] * 10)
    task = fashion_mnist.load_fashion_mnist_task(val_fraction=0.1)
    assert (len(task.train), len(task.val), len(task.test)) == (54000, 6000, 10000)
    np.testing.assert_array_equal(task.class_counts("val"), [600] * 10)
    assert task.train.images.shape[1:] == (28, 28, 1) and not task.has_background
