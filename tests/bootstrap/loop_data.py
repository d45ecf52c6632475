"""Tiny image folders for the bootstrapping-loop tests: 28 x 28 grey PNGs a small CNN tells apart.

Category k has a bright horizontal band at rows 6k..6k+5; images of an
"outside" class (none of the categories) have a vertical band; background
images are noise.
"""

import csv
import os

import numpy as np
from PIL import Image

CATEGORIES = ("ankle_boot", "bag", "coat")
SIZE = 28


def image(rng, kind):
    """kind: a category index, "outside" or "background"."""
    pixels = rng.integers(0, 70, (SIZE, SIZE)).astype(np.uint8)
    if kind == "outside":
        pixels[:, 10:16] = 230
    elif kind != "background":
        pixels[6 * kind:6 * kind + 6, :] = 230
    return pixels


def write_png(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_seed_dir(root, per_class=8, background=0, categories=CATEGORIES, seed=0,
                  definitions=None):
    """``root/rare/<category>/...`` (+ ``root/background/...``); returns {category: [paths]}."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, name in enumerate(categories):
        out[name] = [write_png(os.path.join(root, "rare", name, f"s{i:03d}.png"), image(rng, k))
                     for i in range(per_class)]
        if definitions and name in definitions:
            file, text = definitions[name]
            with open(os.path.join(root, "rare", name, file), "w") as f:
                f.write(text)
    if background:
        out["background"] = [write_png(os.path.join(root, "background", f"b{i:03d}.png"),
                                       image(rng, "background")) for i in range(background)]
    return out


def make_pool(root, per_class=6, outside=6, categories=CATEGORIES, seed=1, nested=True):
    """A pool folder (nested folders) and its truth rows ``(path, label)`` ('none' = outside)."""
    rng = np.random.default_rng(seed)
    truth = []
    kinds = [(k, name) for k, name in enumerate(categories) for _ in range(per_class)]
    kinds += [("outside", "none")] * outside
    for i, (kind, label) in enumerate(kinds):
        sub = os.path.join(root, f"batch{i % 3}", "deeper" if nested and i % 2 else "")
        truth.append((write_png(os.path.join(sub, f"p{i:04d}.png"), image(rng, kind)), label))
    return truth


def write_truth(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def write_manifest(path, rows):
    """rows: ``(path, label, hard_negative_for, split)``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "hard_negative_for", "split"])
        writer.writerows(rows)
    return path


def round_manifest(root, per_class=10, hard_negatives=None, background=0, seed=0):
    """A manifest of S (``per_class`` per category) and hard negatives.

    hard_negatives: {category: count} of outside-class images rejected for it.
    Returns (manifest path, rows).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for k, name in enumerate(CATEGORIES):
        for i in range(per_class):
            path = write_png(os.path.join(root, "s", name, f"{i:03d}.png"), image(rng, k))
            rows.append((path, name, "", ""))
    for i in range(background):
        path = write_png(os.path.join(root, "bg", f"{i:03d}.png"), image(rng, "background"))
        rows.append((path, "background", "", ""))
    for name, count in (hard_negatives or {}).items():
        for i in range(count):
            path = write_png(os.path.join(root, "h", name, f"{i:03d}.png"), image(rng, "outside"))
            rows.append((path, "", name, ""))
    return write_manifest(os.path.join(root, "manifest.csv"), rows), rows
