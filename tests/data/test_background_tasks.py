"""iNat-BG / Places-BG construction (appendix A) and background downsampling (appendix F)."""

import numpy as np
import pytest

from keras_fgvc.data import (
    BackgroundSpec,
    background_task,
    downsample_background,
    inat_bg_tasks,
    mean_background_fraction,
    places_bg_tasks,
)
from keras_fgvc.data.task import Split, Task


def _all_categories(specs):
    return [c for s in specs for c in s.categories]


def test_inat_bg_paper_scale_structure():
    n5089 = inat_bg_tasks(n=5089)
    assert len(n5089) == 1 and n5089[0].categories == tuple(range(5089))
    n100 = inat_bg_tasks(n=100)
    assert len(n100) == 1 and len(set(n100[0].categories)) == 100
    test = set(n100[0].categories)
    n1100 = inat_bg_tasks(n=1100)
    assert len(n1100) == 1 and len(set(n1100[0].categories)) == 1100
    assert test <= set(n1100[0].categories)  # "with the 100 test categories included"
    n10 = inat_bg_tasks(n=10)
    assert len(n10) == 10 and all(s.num_foreground == 10 for s in n10)
    assert sorted(_all_categories(n10)) == sorted(test)  # a partition of the test categories
    n1 = inat_bg_tasks(n=1)
    assert len(n1) == 10 and all(s.num_foreground == 1 for s in n1)
    assert set(_all_categories(n1)) <= test and len(set(_all_categories(n1))) == 10
    assert all(0 <= c < 5089 for c in _all_categories(n1100))


def test_inat_bg_background_fractions_on_a_synthetic_label_space():
    # With equal class counts the background share is 1 - N / 5089 exactly.
    counts = np.full(5089, 100)
    for n, expected in ((5089, 0.0), (1100, 1 - 1100 / 5089), (100, 1 - 100 / 5089),
                        (10, 1 - 10 / 5089), (1, 1 - 1 / 5089)):
        fraction = mean_background_fraction(inat_bg_tasks(n=n), counts)
        assert fraction == pytest.approx(expected, abs=1e-12)
    # A long-tailed label space: the fraction is computed from the counts.
    rng = np.random.default_rng(0)
    counts = rng.integers(2, 1000, size=5089)
    spec = inat_bg_tasks(n=100)[0]
    expected = 1 - counts[list(spec.categories)].sum() / counts.sum()
    assert spec.background_fraction(counts) == pytest.approx(expected)


def test_inat_bg_seeded_and_scaled_down():
    a = inat_bg_tasks(num_categories=40, n=2, num_test_categories=8, num_train_categories=20,
                      num_models=4, seed=5)
    b = inat_bg_tasks(num_categories=40, n=2, num_test_categories=8, num_train_categories=20,
                      num_models=4, seed=5)
    c = inat_bg_tasks(num_categories=40, n=2, num_test_categories=8, num_train_categories=20,
                      num_models=4, seed=6)
    assert a == b and a != c
    test = inat_bg_tasks(num_categories=40, n=8, num_test_categories=8,
                         num_train_categories=20, seed=5)[0].categories
    assert sorted(_all_categories(a)) == sorted(test)
    with pytest.raises(ValueError, match="no setting N=3"):
        inat_bg_tasks(num_categories=40, n=3, num_test_categories=8, num_train_categories=20,
                      num_models=4)
    with pytest.raises(ValueError, match="must include"):
        inat_bg_tasks(num_categories=40, n=8, num_test_categories=8, num_train_categories=5)


def test_places_bg_paper_scale_structure():
    n10 = places_bg_tasks(n=10)
    assert len(n10) == 5 and all(s.num_foreground == 10 for s in n10)
    pool = _all_categories(n10)
    assert len(set(pool)) == 50 and all(0 <= c < 365 for c in pool)
    n1 = places_bg_tasks(n=1)
    assert len(n1) == 10 and set(_all_categories(n1)) <= set(pool)
    assert len(set(_all_categories(n1))) == 10
    counts = np.full(365, 4000)
    assert mean_background_fraction(n10, counts) == pytest.approx(1 - 10 / 365)
    with pytest.raises(ValueError, match="no setting N=5"):
        places_bg_tasks(n=5)


def test_relabel_matches_a_lookup():
    spec = BackgroundSpec("t", (4, 1))
    labels = np.array([0, 1, 2, 3, 4, 4, 1])
    np.testing.assert_array_equal(spec.relabel(labels), [0, 2, 0, 0, 1, 1, 2])


def test_relabel_and_spec_reject_bad_values():
    spec = BackgroundSpec("t", (4, 1))
    # A negative label used to wrap around NumPy indexing (-1 -> the last category).
    with pytest.raises(ValueError, match="source label -1 is negative"):
        spec.relabel(np.array([0, -1, 4]))
    with pytest.raises(ValueError, match="source label 7 is outside the class range .0, 4."):
        spec.relabel(np.array([0, 7]), num_source_classes=5)
    np.testing.assert_array_equal(spec.relabel(np.zeros(0, np.int64)), [])
    with pytest.raises(ValueError, match="category -2 is negative"):
        BackgroundSpec("neg", (3, -2))
    with pytest.raises(ValueError, match="categories repeat"):
        BackgroundSpec("rep", (3, 3))
    with pytest.raises(ValueError, match="at least one category"):
        BackgroundSpec("empty", ())
    assert BackgroundSpec("np", np.array([2, 0])).categories == (2, 0)


def _full_task(num_classes=6, per_class=(5, 5, 5, 5, 5, 5)):
    y = np.repeat(np.arange(num_classes), per_class)
    images = np.arange(len(y), dtype=np.uint8).reshape(-1, 1, 1, 1).repeat(2, 1)
    split = Split(labels=y, images=images)
    return Task("full", [f"c{i}" for i in range(num_classes)], split, split, split,
                has_background=False)


def test_background_task_relabels_all_splits():
    task = _full_task()
    bg = background_task(task, BackgroundSpec("s", (2, 5)))
    assert bg.class_names == ["background", "c2", "c5"] and bg.has_background
    np.testing.assert_array_equal(bg.class_counts(), [20, 5, 5])
    assert bg.background_fraction() == pytest.approx(20 / 30)
    assert "background 66.67% of train" in bg.summary()
    np.testing.assert_array_equal(bg.train.images, task.train.images)  # images untouched


def test_background_task_bad_input():
    task = _full_task()
    with pytest.raises(ValueError, match="category 6 is outside the class range"):
        background_task(task, BackgroundSpec("s", (1, 6)))
    empty = _full_task(per_class=(5, 5, 0, 5, 5, 5))
    with pytest.raises(ValueError, match="rare category 2 .'c2'. has no training examples"):
        background_task(empty, BackgroundSpec("s", (1, 2)))


def _bg_task(n_bg, n_fg):
    y = np.concatenate([np.zeros(n_bg, np.int64), np.ones(n_fg, np.int64)])
    split = Split(labels=y, images=np.zeros((len(y), 1, 1, 1), np.uint8))
    return Task("bg", ["background", "rare"], split, split, split)


@pytest.mark.parametrize("keep,paper", [(0.01, 0.3664), (0.05, 0.7430), (0.25, 0.9352),
                                        (1.0, 0.9830)])
def test_downsampling_reproduces_table_4_fractions(keep, paper):
    # iNat-BG N=100 has 98.3% background; Table 4 lists the fraction after keeping
    # 1/5/25/100% of the background: 36.64%, 74.30%, 93.52%, 98.30%.
    task = _bg_task(98300, 1700)
    down = downsample_background(task, keep, seed=0)
    assert down.background_fraction() == pytest.approx(paper, abs=6e-4)
    assert down.class_counts()[1] == 1700  # every positive kept
    assert down.class_counts()[0] == round(keep * 98300)
    assert len(down.val) == len(task.val)  # evaluation untouched


def test_downsampling_seeded_and_checked():
    task = _bg_task(100, 3)
    a = downsample_background(task, 0.1, seed=1).train.images
    b = downsample_background(task, 0.1, seed=1).train.images
    np.testing.assert_array_equal(a, b)
    one = downsample_background(task, 0.001, seed=0)
    assert one.class_counts().tolist() == [1, 3]
    with pytest.raises(ValueError, match="keep_fraction"):
        downsample_background(task, 0.0)
    with pytest.raises(ValueError, match="no background"):
        downsample_background(_full_task(), 0.5)
