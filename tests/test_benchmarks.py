"""Smoke tests of the benchmark scripts: each runs with --quick into tmp_path.

Timings are only checked for structure, finiteness and sign (never which case
is faster). The analysis benchmarks are also checked for the properties the
dissertation states: the kernel approximation error (Eq. 3.12) falls as the
sketch dimension d grows, and the effective number (Eq. 5.2-5.5) stays
between its bounds. All scripts except `serving.py` are run
in-process through their `main(argv)` (TensorFlow is imported once);
`serving.py` uses absl flags and starts a model-server subprocess, so it runs
in its own process group, which is killed whatever happens.
"""

import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from keras_fgvc.analysis import kernel_approximation as ka

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")
RESULTS = os.path.join(BENCHMARKS, "results")

pytestmark = pytest.mark.slow


def _load(name):
    """Import benchmarks/<name>.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_benchmark_{name}",
                                                  os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results_snapshot():
    if not os.path.isdir(RESULTS):
        return {}
    return {f: os.stat(os.path.join(RESULTS, f)).st_mtime_ns for f in os.listdir(RESULTS)}


@pytest.fixture(autouse=True)
def _offline_and_results_untouched(monkeypatch):
    """No connection except to loopback; committed results are left as they are."""
    connect = socket.socket.connect

    def loopback_only(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if host not in ("127.0.0.1", "::1", "localhost"):
                raise AssertionError(f"benchmark tried to reach the network: {address}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    before = _results_snapshot()
    yield
    assert _results_snapshot() == before, "a benchmark wrote into benchmarks/results"


def _positive(value, what):
    assert isinstance(value, (int, float)) and not isinstance(value, bool), (what, value)
    assert math.isfinite(value) and value > 0, (what, value)


def _finite(values, what):
    flat = values if isinstance(values, list) else [values]
    for v in flat:
        assert isinstance(v, (int, float)) and math.isfinite(v), (what, v)


def _read(path):
    assert os.path.isfile(path), path
    with open(path) as f:
        return json.load(f)


def test_kernel_pooling(tmp_path):
    out = tmp_path / "kernel_pooling.json"
    _load("kernel_pooling").main(["--quick", "--output", str(out)])
    report = _read(out)
    assert set(report) >= {"machine", "config", "results"}
    assert report["config"]["quick"] is True
    cases = {"kernel_pooling", "naive", "compact_bilinear", "compact_bilinear_gram",
             "compact_bilinear_fft", "global_average", "fft_lower_bound", "fft_rfft_irfft"}
    assert [e["shape"] for e in report["results"]] == [[4, 7, 7, 64], [4, 14, 14, 32]]
    for entry in report["results"]:
        for key in ("seconds_per_batch", "cpu_seconds_per_batch", "all_runs"):
            assert set(entry[key]) == cases, key
        for name in cases:
            _positive(entry["seconds_per_batch"][name], name)
            assert entry["cpu_seconds_per_batch"][name] >= 0
            assert len(entry["all_runs"][name]) == report["config"]["runs"]
            for t in entry["all_runs"][name]:
                _positive(t, name)
        for ratio in ("kernel_pooling_over_lower_bound", "naive_over_kernel_pooling",
                      "compact_bilinear_fft_over_gram"):
            _positive(entry[ratio], ratio)


def test_input_pipeline(tmp_path):
    out = tmp_path / "input_pipeline.json"
    assert _load("input_pipeline").main(["--quick", "--output", str(out)]) == 0
    report = _read(out)
    assert report["benchmark"] == "input_pipeline" and report["quick"] is True
    assert set(report["steps_per_s"]) == {"pipeline", "memory", "cached"}
    for name, value in report["steps_per_s"].items():
        _positive(value, name)
        runs = report["steps_per_s_all_rounds"][name]
        assert len(runs) == report["rounds"]
        for v in runs:
            _positive(v, name)
    for key in ("ratio_pipeline_vs_cached", "ratio_memory_vs_cached",
                "pipeline_alone_batches_per_s"):
        _positive(report[key], key)
    assert isinstance(report["meets_goal"], bool)
    # Read from a live counter while prefetch threads still decode (seen - loaded),
    # so in-flight images show up here: only a sanity bound.
    assert 0 <= report["skipped_images"] <= report["images_on_disk"]


def test_folder_pipeline(tmp_path):
    out = tmp_path / "folder_pipeline.json"
    assert _load("folder_pipeline").main(["--quick", "--images", "40", "--output",
                                          str(out)]) == 0
    report = _read(out)
    assert report["benchmark"] == "folder_pipeline" and report["quick"] is True
    assert set(report["images_per_s"]) == {"pipeline", "bare", "pseudo_labels", "predict"}
    for key in ("pipeline_ratio", "pseudo_label_ratio", *report["images_per_s"]):
        _positive(report.get(key, report["images_per_s"].get(key)), key)
    assert isinstance(report["meets_goal"], bool)


def test_trainer_speed_and_profile(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    out = tmp_path / "speed.json"
    subprocess.run([sys.executable, os.path.join(BENCHMARKS, "trainer_speed.py"), "--quick",
                    "--steps", "3", "--eval_limit", "256",
                    "--variants", "plain,plain_val,ours,ours_no_onednn", "--output", str(out)],
                   cwd=REPO, env=env, check=True, timeout=600, capture_output=True)
    report = _read(out)
    assert report["steps"] == 3 and report["eval_limit"] == 256
    assert set(report["variants"]) == {"plain", "plain_val", "ours", "ours_no_onednn"}
    assert report["train_steps_per_s_vs_ours"]["ours"] == 1.0
    _positive(report["train_steps_per_s_vs_ours"]["ours_no_onednn"], "ours_no_onednn")
    for key in ("wall", "cpu"):
        _positive(report["ratio_to_plain_fit_same_evaluation"]["ours"][key], key)
    for side in report["variants"].values():
        for key in ("wall_s", "cpu_s", "train_s"):
            _positive(side[key], key)
    for key in ("wall", "cpu"):
        _positive(report["ratio_to_plain_fit"]["ours"][key], key)
    assert isinstance(report["meets_goal"], bool)

    out = tmp_path / "profile.json"
    subprocess.run([sys.executable, os.path.join(BENCHMARKS, "trainer_profile.py"), "--steps",
                    "3", "--eval_limit", "256", "--output", str(out)],
                   cwd=REPO, env=env, check=True, timeout=600, capture_output=True)
    report = _read(out)
    assert report["parts"]["input_pipeline"]["batches"] == 3
    assert report["parts"]["predict_test"]["examples"] == 256
    for part in ("step_compute_per_step", "step_loop_per_step", "checkpoint_save"):
        _positive(report["parts"][part]["wall_s"], part)


def test_serving(tmp_path):
    out = tmp_path / "serving.json"
    cmd = [sys.executable, os.path.join(BENCHMARKS, "serving.py"), "--quick",
           f"--output={out}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    # Own session: the model server (a child of the benchmark) is in the same
    # process group, so killing the group cleans both up even on a timeout.
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=240)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, log[-4000:]
    report = _read(out)
    assert set(report) >= {"configs", "requests_per_client", "goal_added_p50_ms",
                           "added_p50_ms_batch1", "goal_met", "machine"}
    assert sorted((r["batch"], r["clients"]) for r in report["configs"]) == [
        (1, 1), (1, 8), (32, 1), (32, 8)]
    for row in report["configs"]:
        for side in ("in_process", "grpc"):
            for key in ("p50_ms", "p99_ms", "requests_per_s"):
                _positive(row[side][key], f"{side} {key}")
            assert row[side]["p99_ms"] >= row[side]["p50_ms"]
        _positive(row["images_per_s_in_process"], "images_per_s_in_process")
        _positive(row["images_per_s_grpc"], "images_per_s_grpc")
        _finite(row["added_p50_ms"], "added_p50_ms")  # a difference: may be negative
    _finite(report["added_p50_ms_batch1"], "added_p50_ms_batch1")
    assert isinstance(report["goal_met"], bool)
    # --quick measures the first batching configuration at 1 and 8 clients.
    assert sorted(r["clients"] for r in report["batching"]) == [1, 8]
    for row in report["batching"]:
        assert "max_batch_size" in row["batching_parameters"]
        _positive(row["ratio_to_in_process"], "ratio_to_in_process")
        assert row["grpc"]["p99_ms"] >= row["grpc"]["p50_ms"] > 0
    best = report["batching_best_8_clients"]
    assert best["parameters"] == report["batching"][0]["parameters"]
    assert isinstance(best["goal_met"], bool)
    # The no-op server's requests/s bound what a server can answer over this transport.
    noop = report["grpc_noop_ceiling_8_clients"]
    _positive(noop["requests_per_s"], "no-op requests_per_s")
    assert noop["p99_ms"] >= noop["p50_ms"] > 0
    assert best["share_of_noop_ceiling"] == pytest.approx(
        best["ratio_to_in_process"] / noop["ratio_to_in_process"], abs=2e-3)
    # Our server with the model call answered from a cache, without and with the best batching.
    stack = report["server_stack_ceiling_8_clients"]
    assert [r["batching"] for r in stack] == ["none", best["parameters"]]
    for row in stack:
        _positive(row["requests_per_s"], "server stack requests_per_s")
        assert row["p99_ms"] >= row["p50_ms"] > 0
    # The 8 clients x batch 1 figures are medians over rounds (one with --quick); each
    # target run is paired with the in-process run made just before it.
    head = report["head_to_head_8_clients"]
    name = best["parameters"]
    assert set(head) == {"in_process", "handler:none", f"handler:{name}", "grpc",
                         f"batching:{name}", "noop", "stack:none", f"stack:{name}"}
    assert report["rounds_8_clients"] == 1
    baselines = []
    for target, row in head.items():
        if target == "in_process":
            continue
        (only,) = row["rounds"]
        baselines.append(only["in_process"]["requests_per_s"])
        assert row["ratio_to_in_process"] == pytest.approx(
            only["requests_per_s"] / only["in_process"]["requests_per_s"], abs=1e-3), target
    assert head["in_process"]["requests_per_s"] == pytest.approx(np.median(baselines), abs=0.1)
    assert head["in_process"]["ratio_to_in_process"] == 1.0
    assert stack[0]["ratio_to_in_process"] == head["stack:none"]["ratio_to_in_process"]
    assert best["ratio_to_in_process"] == head[f"batching:{best['parameters']}"][
        "ratio_to_in_process"]
    one = report["head_to_head_1_client"]
    assert set(one) == {"in_process", "grpc"}
    (pair,) = one["grpc"]["rounds"]
    assert report["added_p50_ms_batch1"] == one["grpc"]["added_p50_ms"] == pytest.approx(
        pair["p50_ms"] - pair["in_process"]["p50_ms"], abs=2e-3)
    row18 = next(r for r in report["configs"] if (r["batch"], r["clients"]) == (1, 8))
    assert row18["images_per_s_in_process"] == head["in_process"]["requests_per_s"]
    assert row18["images_per_s_grpc"] == head["grpc"]["requests_per_s"]


def test_paired_medians_are_medians_of_pairs_not_ratios_of_medians():
    paired = _load("_paired")
    # Three rounds on a host whose speed moves: the pairs' median ratio is 0.5, while the
    # ratio of the two sides' medians (300 / 500 = 0.6) would say something else.
    pairs = [({"p50_ms": 2.0, "p99_ms": 5.0, "requests_per_s": 100.0},
              {"p50_ms": 1.0, "p99_ms": 2.0, "requests_per_s": 200.0}),
             ({"p50_ms": 4.0, "p99_ms": 9.0, "requests_per_s": 300.0},
              {"p50_ms": 1.5, "p99_ms": 3.0, "requests_per_s": 900.0}),
             ({"p50_ms": 3.0, "p99_ms": 7.0, "requests_per_s": 400.0},
              {"p50_ms": 2.5, "p99_ms": 4.0, "requests_per_s": 500.0})]
    row = paired.median_row(pairs)
    assert row["ratio_to_in_process"] == 0.5  # median of 0.5, 0.333, 0.8
    assert row["requests_per_s"] == 300.0 and row["in_process_requests_per_s"] == 500.0
    assert (row["p50_ms"], row["p99_ms"]) == (3.0, 7.0)
    assert row["added_p50_ms"] == 1.0  # median of 1.0, 2.5, 0.5
    assert [r["ratio_to_in_process"] for r in row["rounds"]] == [0.5, 0.333, 0.8]
    with pytest.raises(ValueError, match="at least one"):
        paired.median_row([])
    targets = [f"t{i}" for i in range(8)]
    orders = [paired.order(targets, r) for r in range(3)]
    assert all(sorted(o) == targets for o in orders)  # every target once a round
    assert len({tuple(o) for o in orders}) == 3  # rounds differ
    assert paired.order(targets, 1) == orders[1]  # reproducible


def test_granularity_speed(tmp_path):
    out = tmp_path / "granularity_speed.json"
    _load("granularity_speed").main(["--quick", "--output", str(out)])
    report = _read(out)
    assert (report["n"], report["k"], report["d"], report["repeats"]) == (20_000, 400, 512, 2)
    for key in ("matmul_seconds", "rank_m_seconds", "medoid_seconds",
                "ratio_rank_m_to_matmul", "rank_m_peak_extra_bytes", "input_bytes",
                "process_max_rss_bytes"):
        _positive(report[key], key)
    for key in ("matmul_cpu_seconds", "rank_m_cpu_seconds", "medoid_cpu_seconds"):
        _finite(report[key], key)
        assert report[key] >= 0, key
    _finite(report["rank_m"], "rank_m")
    assert os.path.isfile(tmp_path / "granularity_speed.png")


def _check_measures(measures, length, names):
    assert set(measures) == set(names)
    for name, stats in measures.items():
        assert len(stats["mean"]) == len(stats["std"]) == length, name
        _finite(stats["mean"], name)
        _finite(stats["std"], name)
        assert all(s >= 0 for s in stats["std"]), name


def test_granularity_simulation(tmp_path):
    out = tmp_path / "granularity_simulation.json"
    mod = _load("granularity_simulation")
    mod.main(["--quick", "--output", str(out), "--cache_dir", str(tmp_path / "cache")])
    report = _read(out)
    assert set(report) == {"settings", "simulation", "relabelling"}
    sim = report["simulation"]
    assert sim["m_values"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    _check_measures(sim["measures"], len(sim["m_values"]), mod.MEASURES)
    rel = report["relabelling"]
    assert rel["steps"] == [0, 1, 2, 3] and rel["feature_dim"] > 0
    _check_measures(rel["measures"], len(rel["steps"]), mod.MEASURES)
    for name, fraction in rel["fraction_of_repeats_strictly_increasing"].items():
        assert 0.0 <= fraction <= 1.0, name
    assert os.path.isfile(tmp_path / "granularity_simulation.png")
    assert len(os.listdir(tmp_path / "cache")) == 1  # features cached where asked


def test_kernel_approximation(tmp_path):
    out = tmp_path / "kernel_approximation.json"
    _load("kernel_approximation").main(
        ["--quick", "--output", str(out), "--cache_dir", str(tmp_path / "cache")])
    report = _read(out)
    orders, dims, multiples = report["orders"], report["dims"], report["gamma_multiples"]
    assert orders == [2, 3, 4] and len(dims) >= 2
    _positive(report["gamma_0"], "gamma_0")
    for g in report["gammas"]:
        _positive(g, "gamma")
    assert set(report["relative_error"]) == {f"p={p}" for p in orders}
    for p, per_gamma in report["relative_error"].items():
        assert set(per_gamma) == {f"gamma={m}x" for m in multiples}, p
        for errors in per_gamma.values():
            assert len(errors) == len(dims)
            for e in errors:
                _positive(e, p)
    best = report["best"]
    assert best["order"] in orders and best["dims"] in dims
    _positive(best["relative_error"], "best")
    assert os.path.isfile(tmp_path / "kernel_approximation.png")
    assert len(os.listdir(tmp_path / "cache")) == 1  # features cached where asked

    # Fig. 3.6: "higher feature pooling dimension gives better approximation". At the
    # smallest gamma (where the order-p Taylor truncation, which no d removes, is
    # smallest) the error at the largest d is well below the error at the smallest d,
    # for every order. At the larger gammas the truncation dominates, and as all pairs
    # share one set of hashes, a small sketch's collision error does not average out
    # over the pairs and can even offset it (d = 50 < C = 128 beats d = 5000 there for
    # p = 2), so those curves are not compared.
    assert dims == sorted(dims) and dims[-1] >= 20 * dims[0]
    small_gamma = f"gamma={min(multiples)}x"
    for p in orders:
        errors = report["relative_error"][f"p={p}"][small_gamma]
        assert errors[-1] < 0.5 * errors[0], (p, errors)
    # "approximation error also goes down with increasing order p" (same d and gamma).
    at_largest_d = [report["relative_error"][f"p={p}"][small_gamma][-1] for p in orders]
    assert at_largest_d[-1] < at_largest_d[0], at_largest_d
    # "close to 1% relative error" with enough dims and order and a proper gamma.
    grid = [e for per_gamma in report["relative_error"].values()
            for errors in per_gamma.values() for e in errors]
    assert best["relative_error"] == min(grid)
    assert best["relative_error"] < 0.02


def test_kernel_approximation_error_falls_with_dims():
    """Eq. 3.12 on a direct call: each 4x in d roughly halves the error (Count Sketch ~ 1/sqrt(d)).

    ReLU-like features and gamma = gamma_0 / 4 keep the Taylor truncation of
    orders 3 and 4 far below the sketch error; one seed (pairs and hashes)
    and 4000 pairs. Order 2 nears its truncation floor (~2%) at large d, so
    it is only required to keep falling, not at that rate.
    """
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(400, 64)), 0.0) / 8.0
    dims = [32, 128, 512, 2048]
    grid = ka.relative_error_grid(x, [2, 3, 4], dims, [ka.default_gamma(x) / 4],
                                  num_pairs=4000, seed=0)[:, :, 0]
    assert np.all(np.diff(grid[0]) < 0), grid[0]
    for errors in grid[1:]:
        ratios = errors[1:] / errors[:-1]
        assert np.all(ratios < 0.7), (errors, ratios)  # ~0.5 = 1 / sqrt(4)
    assert grid[2, -1] < 0.03


def test_effective_number(tmp_path):
    out = tmp_path / "effective_number.json"
    _load("effective_number").main(["--quick", "--output", str(out)])
    report = _read(out)
    assert set(report) >= {"betas", "n", "class_balanced_term", "long_tailed"}
    assert report["n"][0] == 1 and report["n"][-1] == 100_000
    assert set(report["class_balanced_term"]) == {str(b) for b in report["betas"]}
    for beta, values in report["class_balanced_term"].items():
        assert len(values) == len(report["n"])
        for v in values:
            _positive(v, beta)
    assert set(report["long_tailed"]) == {"fashion_mnist_lt", "cifar100_lt_shape"}
    for name, entry in report["long_tailed"].items():
        assert len(entry["counts"]) == entry["num_classes"], name
        for c in entry["counts"]:
            _positive(c, name)
        for beta, values in entry["effective_number"].items():
            assert len(values) == entry["num_classes"], (name, beta)
            for v in values:
                _positive(v, (name, beta))
    assert os.path.isfile(tmp_path / "effective_number.png")

    # Sec. 5.2 on the values written. E_n = sum_{j=1..n} beta^(j-1) (Eq. 5.3), so
    # E_1 = 1, n beta^(n-1) <= E_n <= min(n, N) with N = 1 / (1 - beta) (Eq. 5.4),
    # E_n grows with n, and with beta; E_n = 1 at beta = 0 and E_n -> n as beta -> 1
    # (Implication 1, Eq. 5.5).
    rel = 1e-9
    n = np.asarray(report["n"], float)
    assert np.all(np.diff(n) > 0)
    betas = sorted(report["betas"])
    assert betas[0] == 0.0 and betas[-1] >= 0.999
    effective = {}
    for beta in betas:
        term = np.asarray(report["class_balanced_term"][str(beta)])  # 1 / E_n (Eq. 5.6)
        e = 1.0 / term
        effective[beta] = e
        assert e[0] == pytest.approx(1.0, rel=rel), beta
        assert np.all(e >= 1.0 - rel), beta
        assert np.all(e <= np.minimum(n, 1.0 / (1.0 - beta)) * (1 + rel)), beta
        assert np.all(e >= n * beta ** (n - 1) * (1 - rel)), beta
        assert np.all(np.diff(e) >= -rel * e[1:]), beta  # non-decreasing in n
        if beta == 0.0:
            np.testing.assert_allclose(e, 1.0, rtol=rel)  # no re-weighting
        else:  # strictly growing while beta^n is not negligible
            growing = beta ** n[1:] > 1e-6
            assert np.all(np.diff(e)[growing] > 0), beta
    for low, high in zip(betas, betas[1:]):  # larger beta (more prototypes N): larger E_n
        assert np.all(effective[high] >= effective[low] * (1 - rel)), (low, high)
        assert np.all(effective[high][n > 1] > effective[low][n > 1]), (low, high)
    # beta -> 1: E_n ~ n while n (1 - beta) is small.
    close = n * (1.0 - betas[-1]) <= 0.01
    assert close.sum() >= 3
    np.testing.assert_allclose(effective[betas[-1]][close], n[close], rtol=0.01)

    # Fig. 5.6: per class of the long-tailed sets, 1 <= E_n <= min(n, N), ordered as the
    # counts; as beta -> 1 E_n -> n, and the smaller beta, the more similar the classes.
    for name, entry in report["long_tailed"].items():
        counts = np.asarray(entry["counts"], float)
        assert np.all(np.diff(counts) <= 0) and counts[0] / counts[-1] == pytest.approx(
            entry["imbalance"], rel=0.05), name
        spread = {}
        for beta_key, values in entry["effective_number"].items():
            beta, e = float(beta_key), np.asarray(values)
            assert 0.0 < beta < 1.0, (name, beta)
            assert np.all(e >= 1.0 - rel), (name, beta)
            assert np.all(e <= np.minimum(counts, 1.0 / (1.0 - beta)) * (1 + rel)), (name, beta)
            assert np.all(e >= counts * beta ** (counts - 1) * (1 - rel)), (name, beta)
            assert np.all(np.diff(e) <= rel * e[:-1]), (name, beta)  # the counts' order
            spread[beta] = e[0] / e[-1]
        ordered = [spread[b] for b in sorted(spread)]
        assert all(a <= b * (1 + rel) for a, b in zip(ordered, ordered[1:])), (name, spread)
        assert ordered[0] < ordered[-1] <= counts[0] / counts[-1] * (1 + rel), (name, spread)


def test_bootstrap_recall_estimate_property():
    """benchmarks/bootstrap_recall.py's simulation on a synthetic population: with recall
    probes the estimate is centred on the true recall and its 95% interval covers it;
    asking the argmax only overestimates it (the images placed elsewhere drop out)."""
    module = _load("bootstrap_recall")
    rng = np.random.default_rng(0)
    truth = rng.integers(-1, 4, 5000)
    p = rng.dirichlet(np.ones(4), size=5000)
    right = (truth >= 0) & (rng.random(5000) < 0.7)
    p[right, truth[right]] += 2.0
    p[truth >= 0, np.maximum(truth, 0)[truth >= 0]] += 0.3  # the true class ranks high
    p /= p.sum(axis=1, keepdims=True)
    probed = module.summarise(*module.simulate(p, truth, 0.5, 0.5, 0.1, 0.0, 300))
    argmax = module.summarise(*module.simulate(p, truth, 0.5, 0.0, 0.1, 0.0, 100))
    recall = probed["recall"]
    assert abs(recall["bias"]) < 3 * recall["std"] / np.sqrt(300) + 0.003
    assert recall["coverage_95"] > 0.88 and 0 < recall["mean_width"] < 0.3
    assert argmax["recall"]["bias"] > 0.1 and argmax["recall"]["true"] == recall["true"]
    assert abs(probed["precision"]["bias"]) < 0.01
    # 5% of the answers flipped: the raw recall is far off, the gold-corrected one is not.
    flipped = module.summarise(*module.simulate(p, truth, 0.5, 0.5, 0.1, 0.05, 200, gold=200))
    assert flipped["recall"]["bias"] < -0.1
    for key in ("recall_corrected", "precision_corrected"):
        assert abs(flipped[key]["bias"]) < 3 * flipped[key]["std"] / np.sqrt(200) + 0.01, key
        assert flipped[key]["coverage_95"] > 0.88, key
