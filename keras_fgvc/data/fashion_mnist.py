"""Fashion-MNIST from local files: the Debian package first, then ~/.keras.

Search order (DESIGN.md: local first, download optional):

1. ``data_dir`` when given (then only there);
2. ``$FASHION_MNIST_DIR``;
3. ``/usr/share/datasets/fashion-mnist`` and wherever ``dpkg -L
   dataset-fashion-mnist`` says the package put its files;
4. ``~/.keras/datasets/fashion-mnist`` (where ``keras.datasets`` caches it);
5. only with ``allow_download=True``: ``keras.datasets.fashion_mnist.load_data()``.
"""

import functools
import os
import shutil
import subprocess

import numpy as np

from keras_fgvc.data.idx import read_idx

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get install dataset-fashion-mnist"


@functools.lru_cache(maxsize=1)
def _dpkg_dirs():
    """Folders holding the package's IDX files, from ``dpkg -L`` (empty if no dpkg)."""
    if shutil.which("dpkg") is None:
        return ()
    try:
        out = subprocess.run(
            ["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True,
            timeout=10, check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    dirs = {os.path.dirname(p) for p in out.split() if FILES["train_images"] in p}
    return tuple(sorted(dirs))


def _file_in(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def candidate_dirs(data_dir=None):
    """Folders searched for the four IDX files, in order."""
    if data_dir is not None:
        return [os.fspath(data_dir)]
    dirs = []
    if os.environ.get("FASHION_MNIST_DIR"):
        dirs.append(os.environ["FASHION_MNIST_DIR"])
    dirs.append(DEBIAN_DIR)
    dirs.extend(_dpkg_dirs())
    dirs.append(os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist"))
    return list(dict.fromkeys(dirs))


def find_fashion_mnist(data_dir=None):
    """Paths of the four Fashion-MNIST IDX files (``.gz`` or raw).

    Args:
        data_dir: look only here; None searches the default places (module doc).

    Returns:
        dict with keys ``train_images``, ``train_labels``, ``test_images``,
        ``test_labels`` mapping to file paths.

    Raises:
        FileNotFoundError: no searched folder holds all four files; the message
            lists the folders and says how to install the data set.
    """
    searched = candidate_dirs(data_dir)
    for directory in searched:
        paths = {key: _file_in(directory, stem) for key, stem in FILES.items()}
        if all(paths.values()):
            return paths
    raise FileNotFoundError(
        "Fashion-MNIST not found (looked for train-images-idx3-ubyte.gz etc. in "
        f"{', '.join(searched)}). Install it with `{INSTALL_HINT}` (Debian/Ubuntu), "
        "or pass allow_download=True to fetch it with keras.datasets."
    )


def load_fashion_mnist(data_dir=None, allow_download=False):
    """Loads Fashion-MNIST as uint8 images and int64 labels.

    Args:
        data_dir: folder with the IDX files; None searches the default places.
        allow_download: when no local copy exists, download with
            ``keras.datasets.fashion_mnist.load_data()`` (needs internet).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: x uint8 [n, 28, 28],
        y int64 [n] in 0..9 (see `CLASS_NAMES`).

    Raises:
        FileNotFoundError: no local copy and `allow_download` is False.
        ValueError: a file is malformed or images and labels disagree.

    Example:
        >>> (x, y), (xt, yt) = load_fashion_mnist()  # doctest: +SKIP
        >>> x.shape, xt.shape  # doctest: +SKIP
        ((60000, 28, 28), (10000, 28, 28))
    """
    try:
        paths = find_fashion_mnist(data_dir)
    except FileNotFoundError:
        if not allow_download:
            raise
        import keras

        (x, y), (xt, yt) = keras.datasets.fashion_mnist.load_data()
        return (x, y.astype(np.int64)), (xt, yt.astype(np.int64))
    out = []
    for part in ("train", "test"):
        images = read_idx(paths[f"{part}_images"])
        labels = read_idx(paths[f"{part}_labels"]).astype(np.int64)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"{paths[f'{part}_images']}: expected uint8 [n, H, W] images, "
                f"got {images.dtype} {images.shape}."
            )
        if len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST {part}: {len(images)} images but {len(labels)} labels."
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
            raise ValueError(f"Fashion-MNIST {part}: label outside 0..9.")
        out.append((images, labels))
    return tuple(out)


def load_fashion_mnist_task(val_fraction=0.1, seed=0, data_dir=None, allow_download=False):
    """Fashion-MNIST as a 10-class `Task` (no background), images uint8 [n, 28, 28, 1].

    Args:
        val_fraction: share of each training class held out as `val`
            (stratified, seeded); 0 uses t10k for validation too.
        seed: seed of the hold-out.
        data_dir, allow_download: as in `load_fashion_mnist`.

    Returns:
        `Task` named ``"fashion_mnist"``; test is t10k.

    Example:
        >>> from keras_fgvc.data import long_tail_subsample
        >>> lt = long_tail_subsample(load_fashion_mnist_task(), imbalance=100)  # doctest: +SKIP
    """
    from keras_fgvc.data.splits import train_val_test
    from keras_fgvc.data.task import Split, Task

    (x, y), (xt, yt) = load_fashion_mnist(data_dir, allow_download)
    train = Split(labels=y, images=x[..., None])
    test = Split(labels=yt, images=xt[..., None])
    train, val, test = train_val_test(train, test, val_fraction, seed)
    return Task(name="fashion_mnist", class_names=list(CLASS_NAMES), train=train, val=val,
                test=test, has_background=False)
