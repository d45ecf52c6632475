"""`init`: categories and definitions from the seed folder, the pool in k seeded subsets, truth."""

import os

import numpy as np
import pytest

from keras_fgvc.bootstrap.project import default_workdir, init_project, split_pool
from keras_fgvc.bootstrap.store import open_store
from tests.bootstrap.loop_data import (
    CATEGORIES,
    image,
    make_pool,
    make_seed_dir,
    write_png,
    write_truth,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_FGVC_CACHE", str(tmp_path / "cache"))


def _folders(root, background=3):
    seed = make_seed_dir(os.path.join(root, "seed"), per_class=4, background=background,
                         definitions={"bag": ("DEFINITION.txt", "  A bag: handles, no sleeves.\n"),
                                      "coat": ("README.txt", "Long sleeves, buttons.")})
    truth = make_pool(os.path.join(root, "pool"), per_class=5, outside=5)
    return seed, truth


def test_init_records_categories_images_subsets_s0_and_truth(db, tmp_path):
    seed, truth = _folders(str(tmp_path))
    pool_paths = sorted(p for p, _ in truth)
    truth_csv = write_truth(str(tmp_path / "truth.csv"),
                            [(os.path.relpath(p, tmp_path), t) for p, t in truth[::2]]
                            + [("elsewhere.png", "bag"), (truth[1][0], "a_dog")])
    workdir = str(tmp_path / "rounds")
    summary = init_project(db, str(tmp_path / "seed"), str(tmp_path / "pool"), 3,
                           truth=truth_csv, workdir=workdir, seed=5, verbose=False)
    assert summary["categories"] == {c: 4 for c in CATEGORIES} and summary["pool"] == 20
    assert sorted(summary["subsets"]) == [6, 7, 7] and summary["skipped"] == []
    assert summary["truth"] == {"rows": 11, "not_in_project": 1, "other_labels_as_none": 1}
    store = open_store(db)
    try:
        settings = store.settings()
        assert (settings["rounds"], settings["config"], settings["seed"]) == (
            3, "bootstrap_triplet_a_hn", 5)
        assert settings["workdir"] == workdir and settings["channels"] == 1
        categories = store.categories()
        assert [(c.index, c.name) for c in categories] == list(enumerate(CATEGORIES))
        assert [c.definition for c in categories] == [
            "ankle_boot", "A bag: handles, no sleeves.", "Long sleeves, buttons."]
        pool = store.images(origin="pool")
        assert sorted(p for _, p, _ in pool) == pool_paths
        subsets = {k: {p for _, p, _ in store.images(origin="pool", subset=k)}
                   for k in (1, 2, 3)}
        assert subsets == {k: {p for p, s in split_pool(pool_paths, 3, 5).items() if s == k}
                           for k in (1, 2, 3)}
        assert set.union(*subsets.values()) == set(pool_paths)
        recorded = {p: t for _, p, t in pool if t is not None}
        assert recorded == {**{p: t for p, t in truth[::2]}, truth[1][0]: "none"}
        s0 = store.members(0, "positive")
        assert len(s0) == 12 and all(r[4] == 0 for r in s0)
        by_index = {}
        for _, path, index, _, _ in s0:
            by_index.setdefault(index, set()).add(path)
        assert by_index == {i: set(seed[c]) for i, c in enumerate(CATEGORIES)}
        assert sorted(r[1] for r in store.members(0, "background")) == seed["background"]
    finally:
        store.close()


def test_subsets_are_seeded_and_near_equal():
    paths = [f"/p/{i:03d}.png" for i in range(100)]
    a, b = split_pool(paths, 3, 0), split_pool(list(reversed(paths)), 3, 0)
    assert a == b and sorted(list(a.values()).count(k) for k in (1, 2, 3)) == [33, 33, 34]
    assert split_pool(paths, 3, 1) != a


def test_init_twice_resumes_the_same_and_refuses_another(tmp_path):
    _folders(str(tmp_path))
    db = str(tmp_path / "p.db")
    args = (db, str(tmp_path / "seed"), str(tmp_path / "pool"))
    init_project(*args, 2, verbose=False)
    assert default_workdir(db) == str(tmp_path / "p.rounds")
    assert os.path.isdir(tmp_path / "p.rounds")
    init_project(*args, 2, verbose=False)  # a killed init reruns: nothing twice
    store = open_store(db)
    assert store.count("image") == 12 + 3 + 20 and store.count("member") == 15
    store.close()
    with pytest.raises(ValueError, match="already initialised"):
        init_project(*args, 3, verbose=False)


def test_unreadable_files_are_skipped_and_reported(tmp_path):
    _folders(str(tmp_path))
    (tmp_path / "pool" / "broken.png").write_bytes(b"no image")
    (tmp_path / "seed" / "rare" / "bag" / "broken.jpg").write_bytes(b"no image")
    summary = init_project(str(tmp_path / "p.db"), str(tmp_path / "seed"),
                           str(tmp_path / "pool"), 2, verbose=False)
    assert summary["skipped"] == sorted([str(tmp_path / "pool" / "broken.png"),
                                         str(tmp_path / "seed" / "rare" / "bag" / "broken.jpg")])
    assert summary["pool"] == 20 and summary["categories"]["bag"] == 4


def _init(tmp_path, seed="seed", pool="pool", **kwargs):
    return init_project(str(tmp_path / "p.db"), str(tmp_path / seed), str(tmp_path / pool), 2,
                        verbose=False, **kwargs)


def test_clear_errors(tmp_path):
    _folders(str(tmp_path))
    os.makedirs(tmp_path / "empty" / "rare")
    # The layout's rules and messages are the folder task's (`folder_task.read_layout`).
    with pytest.raises(ValueError, match="seed_dir .*empty: .*rare has no class sub-folders"):
        _init(tmp_path, seed="empty")
    rng = np.random.default_rng(0)
    write_png(str(tmp_path / "named" / "rare" / "background" / "a.png"), image(rng, 1))
    with pytest.raises(ValueError, match="may not be named 'background'"):
        _init(tmp_path, seed="named")
    write_png(str(tmp_path / "reserved" / "rare" / "hard_negative" / "a.png"), image(rng, 1))
    with pytest.raises(ValueError, match="'hard_negative' is reserved"):
        _init(tmp_path, seed="reserved")
    os.makedirs(tmp_path / "flat" / "bag")
    with pytest.raises(ValueError, match="no 'rare' folder"):
        _init(tmp_path, seed="flat")
    with pytest.raises(FileNotFoundError, match="pool_dir not found"):
        _init(tmp_path, pool="nowhere")
    with pytest.raises(ValueError, match="overlap"):
        _init(tmp_path, pool=".")
    os.link(tmp_path / "seed" / "rare" / "bag" / "s000.png", tmp_path / "pool" / "copy.png")
    with pytest.raises(ValueError, match="1 pool image.*are seed images"):
        _init(tmp_path)
    os.remove(tmp_path / "pool" / "copy.png")
    with pytest.raises(ValueError, match="gold_share > 0"):
        _init(tmp_path, gold_share=0.1)
    with pytest.raises(ValueError, match="Unknown config 'nope'"):
        _init(tmp_path, config="nope")
    with pytest.raises(ValueError, match="'fashion_lt10_softmax' trains task 'fashion_lt'.*"
                                         "needs a config of task 'bootstrap'"):
        _init(tmp_path, config="fashion_lt10_softmax")
    with pytest.raises(ValueError, match="--workdir is needed"):
        init_project("postgresql://u@/x", str(tmp_path / "seed"), str(tmp_path / "pool"), 2)
    os.makedirs(tmp_path / "seed" / "rare" / "dress")
    (tmp_path / "seed" / "rare" / "dress" / "bad.png").write_bytes(b"no image")
    with pytest.raises(ValueError, match="category 'dress' has no readable images"):
        _init(tmp_path)
    write_png(str(tmp_path / "seed" / "rare" / "dress" / "one.png"), image(
        np.random.default_rng(0), 1))
    with pytest.raises(ValueError, match="category 'dress' has 1 readable image in .* at least 2"):
        _init(tmp_path)
    assert not os.path.exists(tmp_path / "p.db")  # every check runs before anything is written
