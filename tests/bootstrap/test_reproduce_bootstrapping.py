"""benchmarks/reproduce_bootstrapping.py --quick and bootstrap_scoring.py --quick run end to end."""

import importlib.util
import json
import math
import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "benchmarks")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}",
                                                  os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fraction(value):
    return isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.mark.slow
def test_quick_reproduction_writes_table_2_3(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_FGVC_CACHE", str(tmp_path / "cache"))
    output = tmp_path / "repro.json"
    workdir = tmp_path / "work"
    module = _load("reproduce_bootstrapping")
    args = ["--quick", "--quiet", "--workdir", str(workdir), "--output", str(output),
            "--first-seed", "1"]  # a cell of its own, as a second process would run it
    module.main(args)
    report = json.loads(output.read_text())
    assert report["settings"]["rounds"] == 2 and report["settings"]["test_images"] == 400
    assert report["settings"]["seeds"] == [1]
    (run,) = report["runs"]
    assert run["seed"] == 1 and os.listdir(workdir / "runs") == ["seed1_err0.05"]
    assert os.listdir(workdir / "data") == ["seed1"]
    assert set(run["accuracy"]) == _load_methods()
    assert all(_fraction(v) for v in run["accuracy"].values())
    assert [r["round"] for r in run["rounds"]] == [1, 2]
    for entry in run["rounds"]:  # threshold 0: every candidate is a task, labelled once
        assert entry["tasks"] == entry["candidates"] == entry["selected"] == entry["decisions"]
        assert _fraction(entry["precision"]) and entry["hard_negatives"] > 0
        assert entry["decisions_per_accepted"] == entry["decisions"] / entry["accepted"]
    summary = report["summary"]["0.05"]
    gain = summary["gain_triplet_a"]
    assert math.isclose(gain["hard_negatives"]["mean"],
                        run["accuracy"]["Triplet-A + HN"] - run["accuracy"]["Triplet-A (Sk)"])
    assert set(summary["rounds"]) == {"1", "2"}
    # resumable: a second run reuses every result (and rewrites the same table)
    again = module.main(args)
    assert again["runs"] == report["runs"]
    # killed after its rounds, before its result: the rounds are not started again
    os.remove(os.path.join(workdir, "runs", "seed1_err0.05", "result.json"))
    resumed = module.main(args)
    assert resumed["runs"][0]["rounds"] == report["runs"][0]["rounds"]


def test_a_negative_first_seed_is_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _load("reproduce_bootstrapping").main(["--first-seed", "-1", "--workdir",
                                               str(tmp_path / "work")])
    assert "--first-seed must be >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def _load_methods():
    from keras_fgvc.bootstrap.experiment import METHODS

    return set(METHODS)


@pytest.mark.slow
def test_quick_scoring_benchmark(tmp_path):
    output = tmp_path / "scoring.json"
    report = _load("bootstrap_scoring").main(["--quick", "--output", str(output)])
    assert json.loads(output.read_text())["images"] == 256
    for key in ("scoring", "predict", "predict_memory"):
        assert report["images_per_s"][key] > 0 and report["images_per_cpu_s"][key] > 0
    assert report["ratio_scoring_vs_predict"] > 0 and report["goal"] == 0.9


def test_seed_data_appears_whole_once_even_when_two_processes_write_it(tmp_path, monkeypatch):
    """write_data renames a finished copy into place: a partial folder of an older run is
    rewritten, and a copy finished second gives way to the first (same data)."""
    import numpy as np

    module = _load("reproduce_bootstrapping")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (60, 28, 28), dtype=np.uint8)
    y = np.arange(60) % 10
    folder = str(tmp_path / "data" / "seed0")
    args = (x, y, list(range(8)), [8, 9], 2, 5, 0)
    os.makedirs(os.path.join(folder, "pool"))  # an older version, killed mid-write
    assert module.write_data(folder, *args) == folder
    files = sorted(os.path.relpath(os.path.join(d, f), folder)
                   for d, _, fs in os.walk(folder) for f in fs)
    assert len([f for f in files if f.startswith("seed/")]) == 16
    assert len([f for f in files if f.startswith("pool/")]) == 5
    with open(os.path.join(folder, "truth.csv")) as f:
        paths = [line.split(",")[0] for line in f.read().splitlines()[1:]]
    assert all(p.startswith(folder + os.sep) and os.path.isfile(p) for p in paths)
    # Another process renamed its copy first: this one's is dropped, theirs kept.
    shutil = module.shutil
    shutil.rmtree(folder)

    def lose_the_race(src, dst):  # theirs lands first (a copy of the same data)
        shutil.copytree(src, dst)
        raise OSError("Directory not empty")

    from keras_fgvc.training import artifacts

    write_text, visible = artifacts.write_text, []

    def spy(path, text):  # truth.csv and DONE: is a half-written folder visible?
        visible.append(os.path.exists(folder))
        return write_text(path, text)

    monkeypatch.setattr(artifacts, "write_text", spy)
    monkeypatch.setattr(module.os, "rename", lose_the_race)
    assert module.write_data(folder, *args) == folder
    assert visible == [False, False]
    assert os.path.exists(os.path.join(folder, "DONE"))
    assert sorted(os.listdir(tmp_path / "data")) == ["seed0"]


def _cell_report(seed, error_rate, accuracy, **settings):
    base = {"categories": ["a", "b"], "outside": ["c"], "rounds": 3, "seed_per_class": 50,
            "pool_size": "all", "uniform_share": 0.1, "threshold": 0.5, "quick": False,
            "round_overrides": [], "final_overrides": [], "test_images": 8000,
            "seeds": 1, "error_rates": [error_rate]}  # as the seed-0 reports wrote them
    rounds = [{"round": 1, "precision": 0.5, "recall": 0.8, "decisions_per_accepted": 2.0,
               "selected": 10, "accepted": 5, "hard_negatives": 5, "decisions": 10,
               "uniform_estimate": None}]
    return {"benchmark": "reproduce_bootstrapping", "settings": {**base, **settings},
            "seconds": 10.0,
            "runs": [{"seed": seed, "error_rate": error_rate, "rounds": rounds,
                      "accuracy": {"Softmax (S0)": accuracy, "Softmax (Sk)": accuracy + 0.1}}]}


def test_merge_puts_cells_run_apart_into_one_table_with_sample_std(tmp_path):
    module = _load("reproduce_bootstrapping")
    paths = []
    for seed, rate, acc in [(1, 0.0, 0.7), (0, 0.0, 0.5), (0, 0.05, 0.4), (2, 0.0, 0.6)]:
        paths.append(tmp_path / f"s{seed}_e{rate}.json")
        # the seed-0 reports predate probe_share; later ones record its default
        extra = {} if seed == 0 else {"probe_share": 0.0}
        paths[-1].write_text(json.dumps(_cell_report(seed, rate, acc, **extra)))
    out = tmp_path / "merged.json"
    merged = module.main(["--merge", *map(str, paths), "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(merged))
    assert [(r["seed"], r["error_rate"]) for r in merged["runs"]] == [
        (0, 0.0), (0, 0.05), (1, 0.0), (2, 0.0)]
    assert merged["settings"]["seeds"] == [0, 1, 2]
    assert merged["settings"]["error_rates"] == [0.0, 0.05]
    assert merged["seconds"] == 40.0
    s0 = merged["summary"]["0"]["accuracy"]["Softmax (S0)"]
    assert s0["values"] == [0.5, 0.7, 0.6] and math.isclose(s0["mean"], 0.6)
    assert math.isclose(s0["std"], 0.1)  # sample std of 0.5, 0.7, 0.6 (population: 0.0816)
    gain = merged["summary"]["0"]["gain_softmax"]["new_positives"]
    assert gain["n"] == 3 and math.isclose(gain["mean"], 0.1)
    assert merged["summary"]["0.05"]["accuracy"]["Softmax (S0)"] == {
        "mean": 0.4, "std": 0.0, "n": 1, "values": [0.4]}


def test_merge_refuses_disagreeing_settings_a_cell_twice_and_other_files(tmp_path, capsys):
    module = _load("reproduce_bootstrapping")
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_cell_report(0, 0.0, 0.5)))
    b.write_text(json.dumps(_cell_report(1, 0.0, 0.5, threshold=0.3)))
    c.write_text(json.dumps(_cell_report(0, 0.0, 0.6)))
    out = tmp_path / "merged.json"
    cases = [([a, b], "setting 'threshold' differs: a.json: 0.5, b.json: 0.3"),
             ([a, c], "seed 0 at error rate 0 is in both a.json and c.json"),
             ([a, tmp_path / "missing.json"], "missing.json not found")]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cases.append(([a, bad], "bad.json is not JSON"))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "reproduce_pooling", "runs": []}))
    cases.append(([a, other], "other.json is not a reproduce_bootstrapping report"))
    for paths, message in cases:
        with pytest.raises(SystemExit) as raised:
            module.main(["--merge", *map(str, paths), "--output", str(out)])
        assert message in str(raised.value)
    assert not out.exists()
