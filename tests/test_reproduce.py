"""benchmarks/reproduce_*.py: every script runs end to end with --quick; the JSON is complete.

The quick runs import each script's ``main(argv)`` in this process (one
TensorFlow import for all seven) and write into ``tmp_path``. They check the
structure (every method present, finite metrics, seeds recorded, a PNG), never
which method wins. The fast tests check the shared helpers: selection on the
validation split only, mean ± std aggregation, the table.
"""

import importlib.util
import json
import math
import os

import pytest

from keras_fgvc.training import checkpointing, sweep, sweep_report

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")

# script -> (settings run by --quick, methods every such setting must hold)
EXPECTED = {
    "bg_splitting": (["bg98"], {"FT", "Focal", "LDAM-DRW", "LWS", "FT-down1%", "FT-down5%",
                                "FT-down25%", "BG-split", "BG-split+fixed-bg",
                                "FT (scratch)"}),
    "class_balanced": (["imb100"], {"softmax", "sigmoid", "focal_g0.5", "focal_g1.0",
                                    "focal_g2.0", "class-balanced"}),
    "pooling": (["fashion_mnist"], {"GAP", "CBP", "KP"}),
    "metric_learning": (["fashion_mnist"], {"Softmax", "Triplet-Naive", "Triplet-HN",
                                            "Triplet-M", "Triplet-A"}),
    "two_stage": (["fashion_lt200"], {"two-stage", "two-stage, BN stats from stage-1 data"}),
    "feature_generalisation": (["S2"], {"last layer on FT(S1) features",
                                        "last layer on BG-split(S1) features",
                                        "BG-split full on S2 (upper bound)"}),
    "batch_size": (["batch128", "batch1024"], {"FT", "BG-split"}),
}


def _load(name):
    path = os.path.join(BENCHMARKS, f"reproduce_{name}.py")
    spec = importlib.util.spec_from_file_location(f"reproduce_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.fixture(scope="module", autouse=True)
def _teacher_cache(tmp_path_factory):
    """One fresh teacher cache for all quick runs (never the user's ~/.cache)."""
    old = os.environ.get("KERAS_FGVC_CACHE")
    os.environ["KERAS_FGVC_CACHE"] = str(tmp_path_factory.mktemp("teacher_cache"))
    yield
    if old is None:
        os.environ.pop("KERAS_FGVC_CACHE", None)
    else:
        os.environ["KERAS_FGVC_CACHE"] = old


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_quick_run_writes_complete_json(name, tmp_path):
    output = tmp_path / f"reproduce_{name}.json"
    returned = _load(name).main(["--quick", "--output", str(output)])
    report = json.loads(output.read_text())
    assert returned["benchmark"] == f"reproduce_{name}"
    settings, methods = EXPECTED[name]
    assert report["benchmark"] == f"reproduce_{name}"
    assert report["quick"] is True
    assert report["seeds"] == [0]
    assert report["settings"] == settings
    assert "validation" in report["selection"] and report["split_reported"] == "test"
    assert report["paper_results"] and report["notes"]
    for setting in settings:
        entries = report["results"][setting]
        assert methods <= set(entries), f"{name}/{setting}: missing {methods - set(entries)}"
        assert set(entries) == set(report["methods"][setting])
        for method, entry in entries.items():
            where = f"{name}/{setting}/{method}"
            assert entry["seeds"] == [0], where
            assert [run["seed"] for run in entry["runs"]] == [0], where
            assert all(run["steps"] >= 1 for run in entry["runs"]), where
            assert entry["selected_overrides"] in [c["overrides"] for c in entry["candidates"]]
            select_key = report["select_metric"].split()[1]
            assert _finite(entry["val"][select_key]["mean"]), where
            for metric in report["metrics"]:
                stats = entry["test"][metric]
                assert _finite(stats["mean"]) and stats["std"] == 0.0, (where, metric)
                assert stats["values"] == [stats["mean"]], (where, metric)
                assert 0.0 <= stats["mean"] <= 1.0, (where, metric)
    png = output.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# === Shared helpers (fast) ===


def _candidate(overrides, val, test):
    runs = [{"seed": i, "val": {"mAP": v}, "test": {"mAP": t}} for i, (v, t) in
            enumerate(zip(val, test))]
    return {"overrides": overrides, "val": sweep.aggregate(runs, "val"),
            "test": sweep.aggregate(runs, "test")}


def test_select_uses_validation_never_test():
    candidates = [_candidate(["lr=1"], [0.5, 0.7], [0.9, 0.9]),   # best on test
                  _candidate(["lr=2"], [0.8, 0.6], [0.1, 0.1])]   # best on val (mean 0.7 > 0.6)
    assert sweep.select(candidates, "mAP", "max") == 1
    assert sweep.select(candidates, "mAP", "min") == 0


def test_select_skips_undefined_scores():
    candidates = [_candidate(["a"], [float("nan")], [1.0]), _candidate(["b"], [0.2], [0.0])]
    assert sweep.select(candidates, "mAP", "max") == 1
    assert sweep.select(candidates, "mAP", "min") == 1
    with pytest.raises(ValueError, match="mode"):
        sweep.select(candidates, "mAP", "best")


def test_aggregate_mean_and_sample_std():
    runs = [{"test": {"m": 0.1}}, {"test": {"m": 0.3}}, {"test": {"m": 0.5}}]
    stats = sweep.aggregate(runs, "test")["m"]
    assert stats["mean"] == pytest.approx(0.3)
    assert stats["std"] == pytest.approx(0.2)  # sample std (ddof = 1)
    assert stats["values"] == [0.1, 0.3, 0.5]
    one = sweep.aggregate(runs[:1], "test")["m"]
    assert one["std"] == 0.0 and one["mean"] == pytest.approx(0.1)


def test_flat_metrics_nested_and_non_numeric():
    flat = sweep.flat_metrics({"top1_error": 0.25, "head": {"top1_error": 0.5,
                                                                 "num_examples": 3},
                                    "f1": [0.1, 0.2], "name": "x", "flag": True})
    assert flat == {"top1_error": 0.25, "head.top1_error": 0.5, "head.num_examples": 3.0}


def test_parse_args_quick_forces_one_seed_and_rejects_bad_seeds():
    args = sweep.parse_args(["--quick", "--seeds", "5"], "d", "x")
    assert args.quick and args.seeds == 1
    assert args.output.endswith(os.path.join("results", "reproduce_x.json"))
    with pytest.raises(SystemExit):
        sweep.parse_args(["--seeds", "0"], "d", "x")


def test_format_table_shows_percent_mean_and_std():
    report = {"benchmark": "reproduce_x", "settings": ["s"], "metrics": ["mAP"], "seeds": [0, 1],
              "results": {"s": {"FT": {"test": {"mAP": {"mean": 0.4, "std": 0.05}}}}}}
    table = sweep_report.format_table(report)
    assert "s:mAP" in table and "40.0±5.0" in table and "FT" in table
    markdown = sweep_report.format_table(report, markdown=True).splitlines()
    assert markdown[2:] == ["| method | s:mAP |", "| --- | --- |", "| FT | 40.0±5.0 |"]


# === Library paths the scripts rely on (fast) ===


def _flat_close(a, b):
    a, b = sweep.flat_metrics(a), sweep.flat_metrics(b)
    assert a and a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7, nan_ok=True), key


@pytest.fixture
def toy_model():
    """The toy model of the training tests, registered for one test only."""
    from keras_fgvc.models import register_model, registry
    from tests.training import conftest

    added = conftest.TOY_MODEL not in registry._REGISTRY
    if added:
        register_model(conftest.TOY_MODEL)(conftest._toy_mlp)
    yield
    if added:
        registry._REGISTRY.pop(conftest.TOY_MODEL, None)


def test_trainer_reports_end_of_stage_metrics_and_keeps_them_across_resume(tmp_path, toy_model):
    """metrics["stages"][i] = the model at the end of stage i (two_stage's 'before.*')."""
    import dataclasses

    from keras_fgvc.training.loop import Trainer
    from tests.training.conftest import make_toy_task, toy_config

    task = make_toy_task(n_train=64, n_eval=32)
    config = toy_config(epochs=1, steps_per_epoch=2, finetune_epochs=1,
                        finetune_learning_rate=0.5, checkpoint_every_steps=1)
    one_stage = Trainer(dataclasses.replace(config, finetune_epochs=0), task=task,
                        verbose=0).run()
    assert [s["name"] for s in one_stage["stages"]] == ["train"]
    two = Trainer(config, task=task, verbose=0).run()
    assert [(s["index"], s["name"], s["end_step"]) for s in two["stages"]] == [
        (0, "train", 2), (1, "finetune", 4)]
    # Stage 1 of the two-stage run is the one-stage run (constant schedule, same seed).
    for split in ("val", "test"):
        _flat_close(two["stages"][0][split], one_stage[split])
        _flat_close(two["stages"][1][split], two[split])
    # Stopped inside stage 2, then resumed: stage 1's metrics come from W/stage_metrics.json.
    workdir = str(tmp_path / "w")
    first = Trainer(config, workdir=workdir, task=task, verbose=0)
    assert first.run(max_steps=3)["stopped"]
    _flat_close(first.stage_metrics[0]["val"], one_stage["val"])
    resumed = Trainer(config, workdir=workdir, task=task, verbose=0).run()
    assert resumed["resumed_from_step"] == 3
    for split in ("val", "test"):
        _flat_close(resumed["stages"][0][split], one_stage[split])
    with open(os.path.join(workdir, "metrics.json")) as f:
        saved = json.load(f)
    _flat_close(saved["stages"][0]["test"], one_stage["test"])
    assert saved["stages"][1]["end_step"] == 4


def test_share_stage1_resumes_a_sibling_and_matches_a_fresh_run(tmp_path, toy_model):
    """A stage-2 grid trains stage 1 once: the shared start gives the fresh run's numbers."""
    import dataclasses

    from keras_fgvc.training.loop import Trainer
    from tests.training.conftest import make_toy_task, toy_config

    task = make_toy_task(n_train=64, n_eval=32)
    # Stage 1: steps 1-3 (checkpoints at 2 and 4: the newest at or before its end is 2).
    first = toy_config(epochs=1, steps_per_epoch=3, finetune_epochs=1,
                       finetune_learning_rate=0.5, checkpoint_every_steps=2)
    root = str(tmp_path / "runs")
    source = os.path.join(root, "s", "m", "lr-0.5", "seed0")
    Trainer(first, workdir=source, task=task, verbose=0).run()
    assert checkpointing.checkpoint_steps(source) == [2, 4, 6]

    # A sibling: same stage 1, another stage-2 learning rate (and another printed description).
    second = dataclasses.replace(first, finetune_learning_rate=0.05, description="other")
    fields = ("finetune_learning_rate",)
    target = os.path.join(root, "s", "m2", "lr-0.05", "seed0")
    assert sweep.share_stage1(target, second, fields, root, "s") == source
    assert checkpointing.checkpoint_steps(target) == [2]
    shared = Trainer(second, workdir=target, task=task, verbose=0).run()
    assert shared["resumed_from_step"] == 2
    fresh = Trainer(second, task=task, verbose=0).run()
    for split in ("val", "test"):
        _flat_close(shared["stages"][0][split], fresh["stages"][0][split])
        _flat_close(shared[split], fresh[split])
    # The stage-2 learning rate did change the outcome (so the check above can fail).
    with open(os.path.join(source, "metrics.json")) as f:
        first_test = sweep.flat_metrics(json.load(f)["test"])
    assert first_test != pytest.approx(sweep.flat_metrics(fresh["test"]))

    # Never across another seed, a field outside `fields`, or into a started run.
    other_seed = os.path.join(root, "s", "m2", "lr-0.05", "seed1")
    assert sweep.share_stage1(other_seed, dataclasses.replace(second, seed=1), fields,
                                   root, "s") is None
    other_lr = os.path.join(root, "s", "m3", "x", "seed0")
    assert sweep.share_stage1(other_lr, dataclasses.replace(second, learning_rate=0.2),
                                   fields, root, "s") is None
    assert not os.path.exists(os.path.join(other_lr, "checkpoints"))
    assert sweep.share_stage1(target, second, fields, root, "s") is None
    # Another setting's runs are not looked at.
    assert sweep.share_stage1(os.path.join(root, "t", "m", "y", "seed0"), second, fields,
                                   root, "t") is None


def test_two_stage_shares_stage_1_across_its_grid_and_rows():
    from keras_fgvc.training import resolve_config
    from keras_fgvc.training.config import config_changes

    module = _load("two_stage")
    for method in module.METHODS:
        assert set(method.stage2_only) == {"finetune_max_per_class", "finetune_learning_rate",
                                           "bn_reestimate_data"}
        for candidate in method.grid:  # the grid varies only what acts after stage 1
            assert {c.split("=")[0] for c in candidate} <= set(method.stage2_only)
    configs = [resolve_config(m.config, [*m.overrides, *c]) for m in module.METHODS
               for c in m.grid]
    assert all(set(config_changes(configs[0], c)) <= set(module.STAGE2_ONLY)
               for c in configs)


def test_two_stage_post_reads_stage_metrics():
    module = _load("two_stage")
    assert not module.METHODS[0].hooks  # the built-in end-of-stage evaluation, no custom hook
    result = {"stages": [{"val": {"top1_error": 0.3, "head": {"top1_error": 0.2}},
                          "test": {"top1_error": 0.4, "tail": {"top5_error": 0.1}}},
                         {"val": {}, "test": {}}]}
    record = {"val": {"top1_error": 0.1}, "test": {"top1_error": 0.2}}
    module._merge_before(None, record, {"result": result})
    assert record["val"] == {"top1_error": 0.1, "before.top1_error": 0.3,
                             "before.head.top1_error": 0.2}
    assert record["test"] == {"top1_error": 0.2, "before.top1_error": 0.4,
                              "before.tail.top5_error": 0.1}
    result["stages"][0] = {"val": None, "test": None}
    with pytest.raises(RuntimeError, match="stage-1 metrics"):
        module._merge_before(None, record, {"result": result})


def test_metric_learning_uses_public_triplet_recipe_and_naive_mining():
    from keras_fgvc.losses import TripletLoss
    from keras_fgvc.training import loss_recipes
    from keras_fgvc.training.experiments import resolve_config
    from tests.training.conftest import make_toy_task

    path = os.path.join(BENCHMARKS, "reproduce_metric_learning.py")
    with open(path) as f:
        assert "_RECIPES" not in f.read()  # no monkeypatching of private state
    module = _load("metric_learning")
    expected = {"Triplet-Naive": ("naive", 1.0), "Triplet-HN": ("hard", 1.0),
                "Triplet-M": ("hard", 0.6)}
    for method in module.METHODS:
        if method.name not in expected:
            continue
        config = resolve_config(method.config, list(method.overrides))
        recipe = loss_recipes.build_loss(config, make_toy_task())
        (term,) = recipe.terms
        assert term.output == "embedding" and isinstance(term.loss, TripletLoss)
        assert (term.loss.mining, term.loss.positive_fraction) == expected[method.name]


def test_feature_generalisation_s1_teacher_never_sees_s2():
    from keras_fgvc.training.experiments import resolve_config

    module = _load("feature_generalisation")
    config = resolve_config("fashion_bg_split", list(module.S1_TASK))
    assert config.task_kwargs["rare_classes"] == [3, 6, 8]
    assert config.task_kwargs["teacher_classes"] == [0, 1, 5, 9]
    assert not set(module.S1_TEACHER) & (set(module.S1) | set(module.S2))


def test_feature_generalisation_probe_keeps_the_s1_trunk(monkeypatch):
    # The probe is a frozen S1 trunk + a new last layer. The fashion_bg configs start the
    # trunk from the task's teacher (init_trunk="teacher"), which would replace the S1 trunk:
    # both probes then measured the same teacher features (identical rows).
    from keras_fgvc.training.experiments import resolve_config

    module = _load("feature_generalisation")
    for method in module.METHODS[:2]:
        s1_config = method.name.split("(S1)")[0].split()[-1]
        weights = f"/tmp/s1_{s1_config}.backbone.weights.h5"
        monkeypatch.setitem(module._S1_RUNS, ("fashion_bg_ft" if s1_config == "FT" else
                                              "fashion_bg_split", 0),
                            {"backbone_weights": weights})
        overrides = method.overrides("S2", 0, None)
        config = resolve_config(method.config, overrides)
        assert config.init_trunk == "" and config.model_kwargs["weights"] == weights
        assert config.model_kwargs["trainable_backbone"] is False
        with pytest.raises(ValueError, match="would overwrite the trunk weights"):
            resolve_config(method.config, [o for o in overrides if o != "init_trunk="])


# === Budget overrides, --set, --full-scale ===


def _fake_run(seen):
    def run_one(method, setting, seed, args, candidate=()):
        seen.append((sweep.budget_for(args, setting), tuple(args.set)))
        return {"seed": seed, "overrides": [], "steps": 1, "val": {"acc": 0.5},
                "test": {"acc": 0.5}}

    return run_one


@pytest.mark.parametrize("extra,budget", [([], ["a=1"]), (["--full-scale"], []),
                                          (["--quick"], [])])
def test_budget_overrides_apply_to_full_runs_only(extra, budget, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sweep, "run_one", _fake_run(seen))
    monkeypatch.setattr(sweep_report, "plot", lambda report, png: None)
    report = sweep.reproduce(
        ["--seeds", "1", "--output", str(tmp_path / "r.json"), "--set", "b=2", *extra],
        name="x", description="d", paper="p", settings=("s",),
        methods=[sweep.Method("m", "fashion_bg_ft")], metrics=("acc",),
        select_metric="acc", mode="max", budget=("a=1",))
    assert report["budget_overrides"] == budget and report["extra_overrides"] == ["b=2"]
    assert seen == [(tuple(budget), ("b=2",))]
    assert json.loads((tmp_path / "r.json").read_text())["budget_overrides"] == budget


def test_budget_per_setting(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(sweep, "run_one", _fake_run(seen))
    monkeypatch.setattr(sweep_report, "plot", lambda report, png: None)
    report = sweep.reproduce(
        ["--seeds", "1", "--output", str(tmp_path / "r.json")],
        name="x", description="d", paper="p", settings=("b128", "b256", "b512"),
        methods=[sweep.Method("m", "fashion_bg_ft")], metrics=("acc",),
        select_metric="acc", mode="max",
        budget={"b128": ("steps_per_epoch=100",), "b256": ("steps_per_epoch=50",)})
    assert seen == [(("steps_per_epoch=100",), ()), (("steps_per_epoch=50",), ()), ((), ())]
    assert report["budget_overrides"] == {"b128": ["steps_per_epoch=100"],
                                          "b256": ["steps_per_epoch=50"]}
    assert "Budget overrides for b256: steps_per_epoch=50" in capsys.readouterr().out


def test_set_needs_key_value():
    with pytest.raises(SystemExit):
        sweep.parse_args(["--set", "novalue"], "d", "x")


def test_run_one_orders_budget_method_candidate_then_set(tmp_path, monkeypatch):
    captured = {}

    class Stop(Exception):
        pass

    def resolve(config_name, overrides, seed, quick):
        captured["overrides"] = overrides
        raise Stop

    monkeypatch.setattr(sweep, "resolve", resolve)
    args = sweep.parse_args(["--set", "d=4"], "d", "x")
    args.budget = ("a=1",)
    with pytest.raises(Stop):
        sweep.run_one(sweep.Method("m", "fashion_bg_ft", ("b=2",)), "s", 0, args,
                           ("c=3",))
    assert captured["overrides"] == [sweep.EVAL_AT_END, "a=1", "b=2", "c=3", "d=4"]


def test_resuming_a_workdir_of_another_config_is_refused(tmp_path):
    from keras_fgvc.training import resolve_config

    config = resolve_config("fashion_bg_ft")
    sweep.check_workdir(str(tmp_path), config)  # no config.json yet: fine
    (tmp_path / "config.json").write_text(config.to_json())
    sweep.check_workdir(str(tmp_path), config)
    other = resolve_config("fashion_bg_ft", ["task_kwargs.num_background=5000"])
    with pytest.raises(ValueError, match="task_kwargs.*another --workdir"):
        sweep.check_workdir(str(tmp_path), other)
    # A config.json written before a field existed: the field takes its default there.
    older = json.loads(config.to_json())
    older.pop("bn_reestimate_data")
    (tmp_path / "config.json").write_text(json.dumps(older))
    sweep.check_workdir(str(tmp_path), config)
    with pytest.raises(ValueError, match="bn_reestimate_data"):
        sweep.check_workdir(
            str(tmp_path), resolve_config("fashion_bg_ft", ["bn_reestimate_data=train"]))


def test_batch_size_budget_keeps_the_examples_per_epoch():
    module = _load("batch_size")
    assert set(module.BUDGET) == {f"batch{b}" for b in module.BATCHES}
    for batch in module.BATCHES:
        (override,) = module.BUDGET[f"batch{batch}"]
        steps = int(override.removeprefix("steps_per_epoch="))
        assert 12288 <= steps * batch <= module.EXAMPLES_PER_EPOCH
    assert module.BUDGET["batch128"] == ("steps_per_epoch=100",)  # = study 1's budget


def test_quick_keeps_bn_reestimation_but_cheap():
    # The smoke run still exercises re-estimation (2 batches instead of the configs' 100);
    # a config without it is left without it, and full runs keep the registered count.
    assert sweep.resolve("fashion_bg_ft", [], 0, quick=True).bn_reestimate_batches == 2
    assert sweep.resolve("fashion_bg_ft", [], 0, quick=False).bn_reestimate_batches == 100
    assert sweep.resolve("inat_bg_n5089_ft", [], 0, quick=True).bn_reestimate_batches == 0


def test_grid_with_runs_only_the_matching_sub_grid_and_selects_on_val(monkeypatch):
    module = _load("class_balanced")
    method = [m for m in module.methods("imb100") if m.name == "class-balanced"][0]
    assert len(method.grid) == 12
    ran = []

    def run_one(method, setting, seed, args, candidate):
        ran.append(candidate)
        beta = float([c for c in candidate if "beta" in c][0].split("=")[1])
        # val prefers beta 0.99, test would prefer 0.9: selection must follow val.
        return {"val": {"top1_error": abs(beta - 0.99)}, "test": {"top1_error": beta}}

    monkeypatch.setattr(sweep, "run_one", run_one)
    args = sweep.parse_args(["--grid-with", "loss=cb_focal"], "d", "x")
    summary = sweep.evaluate_method(method, "imb100", [0, 1], args, "top1_error", "min")
    assert len(ran) == 4 * 2 and all("loss=cb_focal" in c for c in ran)
    assert sorted({c[-1] for c in ran}) == [f"loss_kwargs.beta={b}" for b in module.BETAS]
    assert "loss_kwargs.beta=0.99" in summary["selected_overrides"]
    assert len(summary["candidates"]) == 4

    # A plain method (a single candidate, no grid) is left alone: its one run, as is.
    plain = [m for m in module.methods("imb100") if m.name == "softmax"][0]
    ran.clear()

    def run_plain(method, setting, seed, args, candidate):
        ran.append(candidate)
        return {"val": {"top1_error": 0.1}, "test": {"top1_error": 0.2}}

    monkeypatch.setattr(sweep, "run_one", run_plain)
    summary = sweep.evaluate_method(plain, "imb100", [0], args, "top1_error", "min")
    assert ran == [()] and summary["selected_overrides"] == []

    bad = sweep.parse_args(["--grid-with", "loss=nothing"], "d", "x")
    with pytest.raises(ValueError, match="matches no grid candidate of 'class-balanced'"):
        sweep.evaluate_method(method, "imb100", [0], bad, "top1_error", "min")
    for argv in (["--grid-with", "novalue"], ["--grid-with", "a=1", "--no-grid"],
                 ["--grid-with", "a=1", "--quick"]):
        with pytest.raises(SystemExit):
            sweep.parse_args(argv, "d", "x")


def test_grid_with_on_methods_without_a_grid_is_refused_before_any_training(monkeypatch):
    def run_one(*args):
        raise AssertionError("nothing may train")

    monkeypatch.setattr(sweep, "run_one", run_one)
    with pytest.raises(ValueError, match="none of the methods run has a grid"):
        _load("class_balanced").main(["--methods", "softmax", "--grid-with", "loss=cb_focal"])
