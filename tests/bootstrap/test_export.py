"""`export`: the grown folder (S_k, background, H_k), TFRecords, decisions, lineage; atomic."""

import csv
import json
import os
import shutil

import pytest

from keras_fgvc.bootstrap import export as export_module
from keras_fgvc.bootstrap.export import export_project
from keras_fgvc.bootstrap.project import init_project, read_seed
from keras_fgvc.bootstrap.store import open_store
from keras_fgvc.data.folder_task import load_folder_task
from keras_fgvc.data.tfrecords import read_tfrecords
from tests.bootstrap.loop_data import CATEGORIES, make_pool, make_seed_dir, write_png


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_FGVC_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def grown(tmp_path):
    """Round 1 ingested (2 accepted, 1 hard negative, 1 uniform rejection), round 2 open."""
    root = str(tmp_path)
    seed = make_seed_dir(os.path.join(root, "seed"), per_class=3, background=2,
                         definitions={"bag": ("README.txt", "A bag: handles.")})
    # a second 's000.png' of bag, deeper: the export must keep both
    twin = write_png(os.path.join(root, "seed", "rare", "bag", "deeper", "s000.png"),
                     open_image(seed["bag"][1]))
    make_pool(os.path.join(root, "pool"), per_class=3, outside=3)
    db = os.path.join(root, "p.db")
    init_project(db, os.path.join(root, "seed"), os.path.join(root, "pool"), 2, verbose=False)
    with open_store(db) as store:
        ids = {c.name: c.id for c in store.categories()}
        pool = [(i, p) for i, p, _ in store.images(origin="pool", subset=1)]
        plan = [("bag", True, False, "accept"), ("coat", True, False, "accept"),
                ("coat", True, False, "reject"), ("bag", False, True, "reject")]
        store.start_round(1, model_version="r1-abc")
        store.update_round(1, lineage={"round": 1, "model_version": "r1-abc"},
                           model_path="/models/r1.keras")
        store.open_tasks(1, [{"image_id": i, "category_id": ids[c], "score": 0.8 if s else 0.3,
                              "selected": s, "uniform": u}
                             for (i, _), (c, s, u, _) in zip(pool, plan)])
        tasks = {t["image_id"]: t["task_id"] for t, _ in store.outcomes(1)}
        store.record_decisions([{"task_id": tasks[i], "labeler": "ann", "decision": d,
                                 "seconds": 2.0} for (i, _), (_, _, _, d) in zip(pool, plan)])
        store.ingest(1)
        store.start_round(2, model_version="r2-def")
    return {"db": db, "seed": seed, "twin": twin, "pool": pool}


def open_image(path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path))


def _files(out):
    with open(os.path.join(out, "files.csv")) as f:
        return list(csv.DictReader(f))


def test_export_writes_the_grown_folder_records_decisions_and_lineage(grown, tmp_path):
    out = str(tmp_path / "grown")
    summary = export_project(grown["db"], out, verbose=False)
    pool = grown["pool"]
    assert summary["round"] == 1 and summary["decisions"] == 4
    assert summary["positives"] == {"ankle_boot": 3, "bag": 5, "coat": 4}
    assert summary["hard_negatives"] == {"ankle_boot": 0, "bag": 0, "coat": 1}
    rows = _files(out)
    by_original = {r["original_path"]: r for r in rows}
    assert by_original[pool[0][1]]["file"].startswith("rare/bag/")
    assert by_original[pool[1][1]]["file"].startswith("rare/coat/")
    assert by_original[pool[2][1]]["file"] == f"hard_negatives/coat/{os.path.basename(pool[2][1])}"
    assert pool[3][1] not in by_original  # a uniform-sample rejection is no hard negative
    twins = sorted(by_original[p]["file"] for p in (grown["seed"]["bag"][0], grown["twin"]))
    assert twins[0] != twins[1] and twins[0].startswith("rare/bag/s000")
    for row in rows:  # byte for byte
        with open(os.path.join(out, row["file"]), "rb") as a, open(row["original_path"], "rb") as b:
            assert a.read() == b.read()
    assert sorted(os.listdir(os.path.join(out, "background"))) == ["b000.png", "b001.png"]
    # the definitions travel with the folder: `init --seed_dir OUT` reads them back
    categories, background = read_seed(out)
    assert {c: d for c, (d, _) in categories.items()} == {
        "ankle_boot": "ankle_boot", "bag": "A bag: handles.", "coat": "coat"}
    assert os.listdir(os.path.join(out, "rare", "coat")).count("DEFINITION.txt") == 0
    assert {c: len(p) for c, (_, p) in categories.items()} == summary["positives"]
    task = load_folder_task(out, channels=1, val_fraction=0.0, test_fraction=0.0)
    assert task.class_names == ["background", *CATEGORIES]  # the folder task reads it back
    assert task.class_counts("train").tolist() == [2, 3, 5, 4]
    labels = sorted(int(x["label"]) for x in read_tfrecords(os.path.join(
        out, "tfrecords", "train-*.tfrecord")).as_numpy_iterator())
    assert labels == [0] * 2 + [1] * 3 + [2] * 5 + [3] * 4
    negatives = [int(x["label"]) for x in read_tfrecords(os.path.join(
        out, "tfrecords", "hard_negatives-*.tfrecord")).as_numpy_iterator()]
    assert negatives == [3]  # the category it was rejected for
    with open(os.path.join(out, "decisions.jsonl")) as f:
        decisions = [json.loads(line) for line in f]
    assert [d["decision"] for d in decisions] == ["accept", "accept", "reject", "reject"]
    assert {d["model_version"] for d in decisions} == {"r1-abc"}
    with open(os.path.join(out, "lineage.json")) as f:
        lineage = json.load(f)
    assert lineage["last_ingested_round"] == 1 and lineage["open_rounds_left_out"] == [2]
    assert lineage["rounds"] == [{"round": 1, "model_version": "r1-abc"}]
    assert lineage["model"] == "/models/r1.keras" and lineage["model_round"] == 1
    assert lineage["settings"]["rounds"] == 2
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_a_name_made_free_is_checked_again(tmp_path):
    """a-7.png (image 3), a.png (5), a.png (7), a-7.png (9): four files, none overwritten."""
    sources = []
    for i, name in enumerate(["a-7.png", "a.png", "a.png", "a-7.png"]):
        folder = tmp_path / "src" / str(i)
        folder.mkdir(parents=True)
        (folder / name).write_bytes(f"image {i}".encode())
        sources.append(str(folder / name))
    out, taken = str(tmp_path / "out"), {}
    for link in (False, True):
        placed = [export_module._place(path, os.path.join(out, str(link)), image_id, taken, link)
                  for path, image_id in zip(sources, [3, 5, 7, 9])]
        assert [os.path.basename(p) for p in placed] == ["a-7.png", "a.png", "a-7-2.png",
                                                         "a-7-9.png"]
        assert [open(p, "rb").read() for p in placed] == [b"image 0", b"image 1", b"image 2",
                                                          b"image 3"]


def test_link_mode_hard_links(grown, tmp_path):
    out = str(tmp_path / "linked")
    export_project(grown["db"], out, link=True, verbose=False)
    row = _files(out)[0]
    assert os.stat(os.path.join(out, row["file"])).st_ino == os.stat(row["original_path"]).st_ino


def test_never_overwrites_and_a_failed_export_leaves_nothing(grown, tmp_path, monkeypatch):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="never overwrites"):
        export_project(grown["db"], str(taken), verbose=False)
    assert os.listdir(taken) == ["keep.txt"]
    stale = tmp_path / "fresh.tmp-999999"
    stale.mkdir()
    running = tmp_path / f"fresh.tmp-{os.getppid()}"  # another export, still running
    running.mkdir()
    (tmp_path / f"fresh.tmp-{os.getpid()}").mkdir()  # ours, left by a killed run (same PID)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "_write_records", fail)
    with pytest.raises(OSError, match="disk full"):
        export_project(grown["db"], str(tmp_path / "fresh"), verbose=False)
    # the stale one is gone too; the running export's folder is left alone
    assert [p for p in os.listdir(tmp_path) if p.startswith("fresh")] == [running.name]
    monkeypatch.undo()
    empty = tmp_path / "empty"
    empty.mkdir()
    export_project(grown["db"], str(empty), verbose=False)
    assert os.path.isdir(empty / "rare" / "bag")
    shutil.rmtree(empty)
