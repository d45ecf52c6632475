"""Strategy factory: one_device / mirrored here, clear fast failures for tpu and multi_worker."""

import json
import os
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from keras_fgvc.training import strategy as strategy_lib
from keras_fgvc.training.strategy import StrategyError, make_strategy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_one_device_and_mirrored():
    assert make_strategy("one_device").num_replicas_in_sync == 1
    mirrored = make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2  # the two logical CPUs of tests/conftest.py
    assert strategy_lib.is_chief(mirrored) and strategy_lib.worker_index(mirrored) == 0
    assert strategy_lib.default_precision(mirrored) == "float32"  # CPU


def test_unknown_strategy():
    with pytest.raises(ValueError, match="Unknown strategy 'gpu'"):
        make_strategy("gpu")


def test_tpu_without_a_tpu_fails_fast_with_a_clear_message():
    start = time.monotonic()
    with pytest.raises(StrategyError, match="No TPU reachable for --tpu='local'"):
        make_strategy("tpu", tpu="local")
    with pytest.raises(StrategyError, match="needs --tpu"):
        make_strategy("tpu", tpu=None)
    assert time.monotonic() - start < 60


def test_tpu_address_is_probed_before_the_resolver(monkeypatch):
    # An unreachable grpc:// address must fail before TPUClusterResolver (which would hang).
    # No network is touched: the connection attempt is mocked.
    calls = []

    def refuse(address, timeout):
        calls.append(address)
        raise ConnectionRefusedError("refused")

    def resolver_must_not_run(*args, **kwargs):
        raise AssertionError("the resolver was reached")

    monkeypatch.setattr(strategy_lib.socket, "create_connection", refuse)
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver",
                        resolver_must_not_run)
    with pytest.raises(StrategyError, match="No TPU reachable at grpc://10.0.0.2:8470"):
        make_strategy("tpu", tpu="grpc://10.0.0.2:8470")
    assert calls == [("10.0.0.2", 8470)]


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="needs the TF_CONFIG environment variable"):
        make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {}}))
    with pytest.raises(StrategyError, match="TF_CONFIG is not valid"):
        make_strategy("multi_worker")


def _fit(*args, timeout=120):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, os.path.join(REPO, "train", "fit.py"), *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def test_cli_errors_before_training(tmp_path):
    # These fail while parsing the config, before TensorFlow is even imported.
    result = _fit("--config", "nope", "--workdir", str(tmp_path))
    assert result.returncode != 0 and "Unknown config 'nope'" in result.stderr
    result = _fit("--config", "fashion_bg_ft", "--workdir", str(tmp_path), "--set", "bogus=1")
    assert result.returncode != 0 and "Unknown config key 'bogus'" in result.stderr
    result = _fit("--config", "fashion_lt10_cb", "--workdir", str(tmp_path),
                  "--set", "loss_kwargs.beta=1.0")
    assert result.returncode != 0 and "outside [0, 1)" in result.stderr
    help_text = _fit("--helpfull").stdout
    assert "fashion_bg_split_fixed" in help_text and "inat_bg_n5089_ft" in help_text
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_cli_tpu_exits_with_a_message(tmp_path):
    # (A paper config without data_dir fails the same way: see test_experiments.py.)
    start = time.monotonic()
    result = _fit("--config", "fashion_bg_ft", "--strategy", "tpu", "--tpu", "local",
                  "--workdir", str(tmp_path))
    assert result.returncode == 1 and "error: No TPU reachable for --tpu='local'" in result.stderr
    assert time.monotonic() - start < 90
    assert not os.listdir(tmp_path)
