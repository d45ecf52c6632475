"""A tiny Fashion-MNIST rare-class detector for export / serving tests, benchmarks and demos.

Three rare classes (``sandal``, ``bag``, ``ankle_boot``) against a background of
the other seven Fashion-MNIST categories; a two-conv softmax classifier over
N + 1 = 4 classes (index 0 = background) taking 28x28x1 float32 in [0, 255],
trained for a few steps. It is written as a training workdir in the trainer's
layout so `export_from_workdir` can be exercised without the trainer.
"""

import gzip
import json
import os

import keras
import numpy as np

from keras_fgvc.data.preprocessing import make_spec

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
RARE_CLASSES = {5: "sandal", 8: "bag", 9: "ankle_boot"}


def load_fashion_mnist(split="train", limit=None, directory=FASHION_MNIST_DIR):
    """Fashion-MNIST images (uint8 [n, 28, 28, 1]) and labels from the local idx files.

    Returns None when the files are missing (no download happens).
    """
    prefix = "train" if split == "train" else "t10k"
    images_path = os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz")
    labels_path = os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz")
    if not (os.path.exists(images_path) and os.path.exists(labels_path)):
        return None
    with gzip.open(images_path) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(labels_path) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def to_detection_labels(labels):
    """Fashion-MNIST labels -> 0 (background) or 1..3 (the rare classes, in RARE_CLASSES order)."""
    out = np.zeros_like(labels)
    for i, original in enumerate(sorted(RARE_CLASSES), start=1):
        out[labels == original] = i
    return out


def build_example_detector(num_classes=4, embedding_dim=0, seed=0):
    """Keras functional model with dict outputs ``logits`` / ``probabilities`` (/ ``embedding``).

    Args:
        num_classes: classes including background (index 0).
        embedding_dim: when > 0, add an L2-normalised ``embedding`` output.
        seed: weight initialisation seed.
    """
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((28, 28, 1), name="images")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", kernel_initializer=init)(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", kernel_initializer=init)(x)
    features = keras.layers.Flatten()(x)
    logits = keras.layers.Dense(num_classes, kernel_initializer=init, name="logits")(features)
    outputs = {
        "logits": logits,
        "probabilities": keras.layers.Softmax(name="probabilities")(logits),
    }
    if embedding_dim:
        embedding = keras.layers.Dense(embedding_dim, kernel_initializer=init)(features)
        outputs["embedding"] = keras.layers.UnitNormalization(name="embedding")(embedding)
    return keras.Model(inputs, outputs, name="example_detector")


def train_example_detector(steps=40, batch_size=64, embedding_dim=0, seed=0):
    """Build and briefly train the detector on Fashion-MNIST (random data if it is missing).

    Returns:
        ``(model, images, labels)`` with the uint8 training images used.
    """
    keras.utils.set_random_seed(seed)
    data = load_fashion_mnist("train", limit=steps * batch_size)
    if data is None:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (steps * batch_size, 28, 28, 1), dtype=np.uint8)
        labels = rng.integers(0, 4, steps * batch_size)
    else:
        images, labels = data[0], to_detection_labels(data[1])
    model = build_example_detector(4, embedding_dim, seed)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    model.fit(images.astype("float32"), {"logits": labels}, batch_size=batch_size, epochs=1,
              verbose=0, shuffle=False)
    return model, images, labels


def write_example_workdir(model, workdir, thresholds=(0.5, 0.4, 0.6)):
    """Write ``model.keras``, ``labels.txt``, ``thresholds.json``, ``preprocessing.json``."""
    os.makedirs(workdir, exist_ok=True)
    model.save(os.path.join(workdir, "model.keras"))
    names = [RARE_CLASSES[k] for k in sorted(RARE_CLASSES)]
    with open(os.path.join(workdir, "labels.txt"), "w") as f:
        f.write("\n".join(["background", *names]) + "\n")
    with open(os.path.join(workdir, "thresholds.json"), "w") as f:
        json.dump({"class_names": names, "thresholds": [float(t) for t in thresholds]}, f)
    with open(os.path.join(workdir, "preprocessing.json"), "w") as f:
        # As the trainer writes it for in-memory Fashion-MNIST: the whole image, no crop.
        json.dump({**make_spec(28, 1, aspect="stretch"), "has_background": True}, f)
    return workdir


_CACHE = {}


def cached_example_detector(steps=40, embedding_dim=0):
    """`train_example_detector`, trained once per process (tests share it)."""
    key = (steps, embedding_dim)
    if key not in _CACHE:
        _CACHE[key] = train_example_detector(steps=steps, embedding_dim=embedding_dim)
    return _CACHE[key]
