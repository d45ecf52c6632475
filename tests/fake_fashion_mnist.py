"""A tiny fake Fashion-MNIST for the Fashion-BG tests (data and teacher)."""

import os

import numpy as np
import pytest

from keras_fgvc.data.idx import write_idx


def write_fake_fashion_mnist(folder):
    """600 train / 100 test fake images in IDX files; class c is a bright band at rows 2c..2c+3."""
    rng = np.random.default_rng(0)
    for part, n in (("train", 600), ("t10k", 100)):
        y = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 4] = 250
        write_idx(os.path.join(folder, f"{part}-images-idx3-ubyte.gz"), x)
        write_idx(os.path.join(folder, f"{part}-labels-idx1-ubyte.gz"), y)
    return folder


def assert_fashion_bg_layout(task, folder, rare):
    """What every Fashion-BG task built from `folder` must hold, teacher or not: balanced rare
    classes, ~90% background, disjoint train / val / teacher sources, a teacher source without
    rare classes, and test labels 0 (background) or 1..N in `rare` order."""
    from keras_fgvc.data import fashion_mnist

    counts = task.class_counts()
    assert counts[1] == counts[2] == counts[3] > 0
    assert task.background_fraction() == pytest.approx(0.9, abs=0.02)
    idx = task.metadata["source_indices"]
    parts = [set(idx[k].tolist()) for k in ("train", "val", "teacher")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    (_, y), (_, yt) = fashion_mnist.load_fashion_mnist(folder)
    assert not np.isin(y[idx["teacher"]], rare).any()  # the teacher never sees a rare class
    np.testing.assert_array_equal(task.test.labels, np.searchsorted(
        [-1, *rare], yt[idx["test"]]) * np.isin(yt[idx["test"]], rare))
