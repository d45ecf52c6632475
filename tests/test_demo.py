"""`python -m keras_fgvc.demo`: end to end (train, evaluate, export, serve) and its helpers."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from keras_fgvc import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(tmp_path):
    # Own teacher cache: the test does not depend on (or fill) the user's cache.
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                KERAS_FGVC_CACHE=str(tmp_path / "cache"))


def _run_demo(tmp_path, artifacts):
    proc = subprocess.run(
        [sys.executable, "-m", "keras_fgvc.demo", "--quick", "--artifacts", str(artifacts)],
        cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(artifacts / "results.json") as f:
        return json.load(f), proc.stdout


def _port_closed(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _server_pid(artifacts):
    text = (artifacts / "server.log").read_text()
    return int(text.split("(pid ", 1)[1].split(")", 1)[0])


def _check_run(results, artifacts, version):
    assert set(results["methods"]) == {method for method, _ in demo.METHODS}
    for metrics in results["methods"].values():
        for key in ("mAP", "f1", "f1_argmax"):
            assert math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 1.0, (key, metrics)
        assert len(metrics["average_precision"]) == 3
        assert abs(metrics["mAP"] - np.mean(metrics["average_precision"])) < 1e-9
    export = results["export"]
    assert export["version"] == version
    version_dir = artifacts / "models" / demo.MODEL_NAME / str(version)
    assert os.path.samefile(export["path"], version_dir)
    assert (version_dir / "saved_model.pb").is_file()
    rare = results["class_names"][1:]
    assert rare == ["Dress", "Shirt", "Bag"]
    plots = sorted((artifacts / "plots").glob("pr_*.png"))
    assert [p.name for p in plots] == sorted(f"pr_{name.lower()}.png" for name in rare)
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    serving = results["serving"]
    sent = sorted((artifacts / "samples").glob("*.png"))
    assert len(sent) == demo.SAMPLES_PER_CLASS * 4
    assert len(serving["predictions"]) == len(sent)
    assert sorted(p["file"] for p in serving["predictions"]) == [p.name for p in sent]
    assert serving["version"] == version
    assert serving["max_abs_diff_vs_keras"] < 1e-4
    # The server is gone: exited cleanly, port closed, no process left.
    assert serving["server_exit_code"] == 0
    assert serving["port_closed_after_stop"] and _port_closed(serving["port"])
    assert not os.path.exists(f"/proc/{_server_pid(artifacts)}")


@pytest.mark.slow
def test_quick_demo_end_to_end_and_rerun(tmp_path):
    artifacts = tmp_path / "artifacts"
    results, stdout = _run_demo(tmp_path, artifacts)
    _check_run(results, artifacts, version=1)
    assert "FT" in stdout and "BG-split" in stdout and "[6/6]" in stdout
    assert stdout.count("re-estimated from 2 training batches") == len(demo.METHODS)
    for _, config in demo.METHODS:
        workdir = artifacts / "workdirs" / config
        assert (workdir / "model.keras").is_file() and (workdir / "metrics.json").is_file()
    assert {m["workdir_state"] for m in results["methods"].values()} == {"new"}

    # A re-run reuses the finished workdirs (same metrics) and exports the next version.
    again, _ = _run_demo(tmp_path, artifacts)
    _check_run(again, artifacts, version=2)
    for method, metrics in again["methods"].items():
        assert metrics["workdir_state"].startswith("finished")
        assert metrics["steps"] == results["methods"][method]["steps"]
        assert metrics["mAP"] == pytest.approx(results["methods"][method]["mAP"], abs=1e-6)
    assert (artifacts / "models" / demo.MODEL_NAME / "1" / "saved_model.pb").is_file()


@pytest.mark.slow
def test_server_child_dies_with_the_demo(tmp_path):
    # The demo process is killed hard (no clean-up code runs): the server child still exits.
    script = textwrap.dedent(f"""
        import os, sys, time
        from keras_fgvc import demo
        server = demo.start_detector_server({str(tmp_path / 'models')!r}, 0,
                                            {str(tmp_path / 'server.log')!r})
        print(server.proc.pid, server.wait_until_listening(300), flush=True)
        time.sleep(600)
    """)
    (tmp_path / "models").mkdir()
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=_env(tmp_path),
                              stdout=subprocess.PIPE, text=True)
    try:
        pid, port = (int(v) for v in parent.stdout.readline().split())
        assert not _port_closed(port)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}")
    assert _port_closed(port)


def test_prepare_workdir_keeps_same_settings_and_deletes_others(tmp_path):
    from keras_fgvc.training import resolve_config

    config = resolve_config("fashion_bg_ft", demo.QUICK_OVERRIDES)
    workdir = tmp_path / "w"
    assert demo.prepare_workdir(str(workdir), config) == "new"
    workdir.mkdir()
    (workdir / "config.json").write_text(config.to_json() + "\n")
    assert demo.prepare_workdir(str(workdir), config) == "resumed"
    (workdir / "metrics.json").write_text("{}")
    assert demo.prepare_workdir(str(workdir), config).startswith("finished")
    other = resolve_config("fashion_bg_ft", demo.FULL_OVERRIDES)
    assert demo.prepare_workdir(str(workdir), other).startswith("new")
    assert not workdir.exists()


def test_pick_samples_two_per_class_seeded():
    labels = np.array([0] * 50 + [1] * 3 + [2] * 1 + [3] * 9)
    picks = demo.pick_samples(labels, 4, seed=0)
    assert picks == demo.pick_samples(labels, 4, seed=0)
    assert [int(labels[i]) for i in picks] == [0, 0, 1, 1, 2, 3, 3]
    assert len(set(picks)) == len(picks)


def test_bad_port_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "keras_fgvc.demo", "--port", "70000"],
                          cwd=REPO, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "--port=70000" in proc.stderr
