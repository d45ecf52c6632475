"""`round`: which round runs, the training set S_{i-1} / H_{i-1}, a kill -9 mid-scoring."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_fgvc.bootstrap import rounds, scoring
from keras_fgvc.bootstrap.project import init_project
from keras_fgvc.bootstrap.store import open_store
from keras_fgvc.data.bootstrap_manifest import load_bootstrap_task
from tests.bootstrap.loop_data import CATEGORIES, make_pool, make_seed_dir, write_truth

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A few training steps: these tests are about the loop, not the model.
TINY = ["epochs=1", "steps_per_epoch=2", "batch_size=16", "refresh_every_steps=2",
        "refresh_max_examples=64", "bn_reestimate_batches=1", "warmup_epochs=0",
        "decay_epochs=()", "eval_batch_size=64"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_FGVC_CACHE", str(tmp_path / "cache"))


def _project(root, k=2, pool_per_class=4, outside=4, **settings):
    make_seed_dir(os.path.join(root, "seed"), per_class=6, background=2)
    truth = make_pool(os.path.join(root, "pool"), per_class=pool_per_class, outside=outside)
    db = os.path.join(root, "p.db")
    init_project(db, os.path.join(root, "seed"), os.path.join(root, "pool"), k,
                 truth=write_truth(os.path.join(root, "truth.csv"), truth), verbose=False,
                 **settings)
    return db


def _open(store, index, decisions):
    """Round `index` with tasks on pool images: decisions [(image_id, category, selected,
    uniform, decision)]; then ingested."""
    ids = {c.name: c.id for c in store.categories()}
    store.start_round(index, model_version=f"r{index}-test")
    store.open_tasks(index, [{"image_id": i, "category_id": ids[c], "score": 0.9 if s else 0.2,
                              "selected": s, "uniform": u, "gold": False}
                             for i, c, s, u, _ in decisions])
    tasks = {t["image_id"]: t["task_id"] for t, _ in store.outcomes(index)}
    store.record_decisions([{"task_id": tasks[i], "labeler": "ann", "decision": d,
                             "seconds": 1.0} for i, _, _, _, d in decisions])
    store.update_round(index, status="labelling")


def test_which_round_runs_and_why_not(tmp_path):
    db = _project(str(tmp_path))
    with open_store(db) as store:
        assert rounds.next_round(store) == (1, False)
        store.start_round(1)
        assert rounds.next_round(store) == (1, True)  # killed while training: resume it
        pool = [i for i, _, _ in store.images(origin="pool", subset=1)]
        _open(store, 1, [(pool[0], "bag", True, False, "accept")])
        store.open_tasks(1, [{"image_id": pool[1], "category_id": store.categories()[0].id,
                              "score": 0.7, "selected": True}])
        with pytest.raises(rounds.RoundError, match=r"round 1 is open for labelling \(1 tasks "
                                                    r"pending\).*then run `ingest`"):
            rounds.next_round(store)
        store.ingest(1, allow_pending=True)
        assert rounds.next_round(store) == (2, False)
        store.start_round(2)
        store.update_round(2, status="closed")
        with pytest.raises(rounds.RoundError, match="all 2 rounds are done.*export"):
            rounds.next_round(store)


def test_training_set_is_s_and_h_of_the_decisions(tmp_path):
    db = _project(str(tmp_path))
    with open_store(db) as store:
        pool = {i: p for i, p, _ in store.images(origin="pool", subset=1)}
        a, b, c, d, e = sorted(pool)[:5]
        _open(store, 1, [(a, "bag", True, False, "accept"),     # S_1 (bag)
                         (b, "coat", True, True, "reject"),     # H_1 (coat)
                         (c, "bag", False, True, "reject"),     # uniform below 0.5: left out
                         (d, "coat", True, False, "unsure"),    # left out
                         (e, "ankle_boot", False, True, "accept")])  # S_1 (ankle_boot)
        store.ingest(1)
        rows, sizes = rounds.training_rows(store, 2, 0.25, seed=7)
        seed_rows, _ = rounds.training_rows(store, 1, 0.25, seed=7)
    by_path = {r[0]: r for r in rows}
    assert by_path[pool[a]][1:3] == ("bag", "") and by_path[pool[e]][1] == "ankle_boot"
    assert by_path[pool[b]] == (pool[b], "", "coat", "train")
    assert pool[c] not in by_path and pool[d] not in by_path
    assert len(rows) == 18 + 2 + 3 and len(seed_rows) == 18 + 2
    assert sizes["categories"]["bag"] == {"seed": 6, "positives": 7, "hard_negatives": 0}
    assert sizes["categories"]["coat"] == {"seed": 6, "positives": 6, "hard_negatives": 1}
    assert sizes["positives_from_decisions"] == 2 and sizes["hard_negatives_from_decisions"] == 1
    val = [r for r in rows if r[3] == "val"]
    assert len(val) == 2 + 2 + 2 + 1  # round(0.25 n) of each category, background
    assert all(r[1] for r in val)  # never a hard negative
    manifest = tmp_path / "m.csv"
    manifest.write_text(rounds.manifest_text(rows))
    task = load_bootstrap_task(str(manifest), hard_negatives="pairs", channels=1)
    negative = list(task.train.paths).index(pool[b])
    assert task.train.labels[negative] == -1
    assert task.class_names[task.train.hard_negative_for[negative]] == "coat"
    assert sorted(map(str, task.val.paths)) == sorted(r[0] for r in val)


def test_round_config_and_refusals(tmp_path):
    db = _project(str(tmp_path), image_size=32)
    with open_store(db) as store:
        settings = store.settings()
    config, overrides = rounds.round_config(settings, "/m.csv", ["epochs=2"])
    assert overrides == ["image_size=32", "epochs=2"] and config.image_size == 32
    assert config.task_kwargs["manifest"] == "/m.csv" and config.task_kwargs["hard_negatives"] \
        == "pairs"
    with pytest.raises(rounds.RoundError, match="task 'fashion_mnist'"):
        rounds.round_config({**settings, "config": "fashion_metric_softmax"}, "/m.csv", [])
    with pytest.raises(rounds.RoundError, match="eval_flip is not supported"):
        rounds.round_config(settings, "/m.csv", ["eval_flip=true"])
    with open_store(db) as store:
        store.start_round(1, model_version="r1-00000000")
    with pytest.raises(rounds.RoundError, match="started with model r1-00000000"):
        rounds.run_round(db, TINY, verbose=0)


def _scored(db):
    with open_store(db) as store:
        ids, categories, scores = store.scores(1)
        return (ids, categories, scores, store.scored_shards(1), store.count("score"),
                store.round(1), [i for i, _, _ in store.images(origin="pool", subset=1)])


@pytest.mark.slow
def test_kill_9_mid_scoring_then_rerun_scores_every_image_once(tmp_path):
    db = _project(str(tmp_path), k=1, pool_per_class=20, outside=20)
    command = [sys.executable, "-m", "keras_fgvc.bootstrap", "round", "--db", db,
               "--shard_size", "1", "--batch_size", "1", *[f"--set={o}" for o in TINY]]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.time() + 300
    with open_store(db) as store:
        while time.time() < deadline and process.poll() is None:
            if store.round(1) and len(store.scored_shards(1)) >= 3:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    process.wait(60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-3000:]
    _, _, _, done, count, state, pool = _scored(db)
    assert 3 <= len(done) < len(pool) == 80 and count == len(done)
    assert state["status"] == "scoring"
    model_file = os.path.join(state["workdir"], "train", "model.keras")
    trained_at = os.stat(model_file).st_mtime_ns

    summary = rounds.run_round(db, TINY, shard_size=1, batch_size=7, verbose=0)
    assert summary["skipped_shards"] == len(done) and summary["scored_now"] == 80 - len(done)
    assert os.stat(model_file).st_mtime_ns == trained_at  # the training was not redone
    ids, category_ids, scores, done, count, state, pool = _scored(db)
    assert sorted(ids) == pool and count == 80 and done == set(range(80))
    assert state["status"] == "labelling" and state["lineage"]["scored"] == 80

    # the same scores as an uninterrupted run of the round's model
    model, spec, labels = scoring.load_round_model(os.path.join(state["workdir"], "train"))
    with open_store(db) as store:
        categories = store.categories()
        rows = [(i, p) for i, p, _ in store.images(origin="pool", subset=1)]

    class Collect:
        written = {}

        def scored_shards(self, _):
            return set()

        def add_scores(self, _, shard, scored):
            self.written[shard] = scored

    call = scoring.confidence_call(model, scoring.category_columns(labels, categories))
    scoring.score_subset(Collect(), 1, rows, call, spec, categories, shard_size=64, verbose=0)
    reference = sorted(r for s in Collect.written.values() for r in s)
    assert [r[0] for r in reference] == ids and [r[1] for r in reference] == category_ids
    np.testing.assert_allclose(scores, [r[2] for r in reference], rtol=1e-5, atol=1e-6)
    assert set(CATEGORIES) == {c.name for c in categories}
