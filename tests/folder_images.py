"""Small image folders for the folder-task tests: every format, mode and size, a corrupt file."""

import os

import numpy as np
from PIL import Image

FORMATS = ("jpg", "png", "gif", "bmp", "webp")
MODES = ("RGB", "L", "RGBA")


def _image(rng, kind, size):
    """A picture whose colour says its class: rare classes are bright red / blue blobs."""
    h, w = size
    base = rng.integers(60, 140, (h, w, 3)).astype(np.float32)
    if kind:
        colour = np.array([[230, 30, 30], [30, 30, 230], [30, 200, 30]][kind - 1], np.float32)
        base[h // 4:3 * h // 4, w // 4:3 * w // 4] = colour
    return base.astype(np.uint8)


def write_image(path, array, index):
    fmt, mode = FORMATS[index % len(FORMATS)], MODES[(index // len(FORMATS)) % len(MODES)]
    path = f"{path}.{fmt}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array).convert(mode)
    if fmt in ("jpg", "bmp", "gif") and mode == "RGBA":
        image = image.convert("RGB")
    image.save(path, lossless=True) if fmt == "webp" else image.save(path)
    return path


def make_folder(root, counts=None, seed=0, corrupt=True, parts=("",)):
    """``root/rare/<class>/...`` and ``root/background/...`` (nested), varied images.

    Args:
        counts: {class name: images}; "background" is the background.
        parts: "" (the training tree) and optionally "val", "test".

    Returns:
        {"paths": {class: [files]}, "corrupt": path or None}
    """
    counts = counts or {"background": 40, "red_spot": 12, "blue_spot": 10}
    rng = np.random.default_rng(seed)
    written = {}
    index = 0
    for part in parts:
        base = os.path.join(root, part)
        ordered = sorted(counts.items(), key=lambda kv: kv[0] != "background")
        for kind, (name, n) in enumerate(ordered):
            folder = (os.path.join(base, "background") if name == "background"
                      else os.path.join(base, "rare", name))
            for i in range(n):
                size = (int(rng.integers(24, 90)), int(rng.integers(24, 90)))
                sub = os.path.join(folder, f"group{i % 3}", "deeper" if i % 2 else "")
                written.setdefault(name, []).append(
                    write_image(os.path.join(sub, f"img{i:03d}"), _image(rng, kind, size), index))
                index += 1
    bad = None
    if corrupt:
        bad = os.path.join(root, parts[0], "background", "broken.jpg")
        with open(bad, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return {"paths": written, "corrupt": bad}


def make_teacher(path, num_classes=5, size=32, seed=0):
    """A tiny classifier (probabilities) over `num_classes` saved as a .keras file."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.save(path)
    return path
