"""A tiny fake Fashion-MNIST for the Fashion-BG tests (data and teacher)."""

import os

import numpy as np

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
