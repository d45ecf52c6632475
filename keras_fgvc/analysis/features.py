"""Feature files (.npz) and feature extraction with a registered model over a data set.

Every analysis command line reads features from an ``.npz`` file holding
``features`` [n, d] and ``labels`` [n], or extracts them on the fly with a
model (a saved ``.keras`` file, or a registered model name, optionally
trained for a few epochs) over a data set (``fashion_mnist`` or an ``.npz``
with ``images`` and ``labels``).

By default the features are the input of the classifier: the layer feeding
the model's ``logits`` (penultimate features), or the ``embedding`` output of
metric-learning models; ``--layer NAME`` takes any layer's output instead
(e.g. ``backbone`` for the conv feature map, whose H x W positions then
become rows).

Command line::

    python -m keras_fgvc.analysis.features --model_path W/model.keras \\
        --dataset fashion_mnist --split test --output feats.npz
    python -m keras_fgvc.analysis.features --model small_cnn --epochs 1 \\
        --dataset fashion_mnist --split test --output feats.npz
"""

import argparse
import os
import sys

import numpy as np

from keras_fgvc.analysis import _validation
from keras_fgvc.files import atomic_write

# ------------------------------------------------------------------ files ---


def save_features(path, features, labels, **extra):
    """Write ``features`` and ``labels`` (plus any extra arrays) to `path` atomically."""
    features = _validation.check_features(features)
    labels = _validation.check_labels(labels, len(features))
    atomic_write(path, lambda tmp: np.savez(tmp, features=features, labels=labels, **extra),
                 suffix=".npz")


def load_features(path):
    """Read (features [n, d], labels [n]) from an ``.npz`` file, validated.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing array, wrong shapes, NaN features, mismatched lengths.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No feature file {path!r}.")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("features", "labels") if k not in data.files]
        if missing:
            raise ValueError(
                f"{path} lacks the arrays {missing} (has {data.files}); a feature file "
                "holds `features` [n, d] and `labels` [n]."
            )
        features, labels = data["features"], data["labels"]
    features = _validation.check_features(features)
    return features, _validation.check_labels(labels, len(features))


# ------------------------------------------------------------- extraction ---


def _producer(tensor):
    """(layer, its input tensors) that produced a symbolic Keras tensor."""
    operation, node_index, _ = tensor._keras_history
    return operation, operation._inbound_nodes[node_index].input_tensors


def feature_tensor(model, layer=None):
    """The symbolic tensor used as features: `layer`'s output, else the classifier input.

    Without `layer`: the model's ``embedding`` output if it has one; else,
    walking back from ``logits`` past weightless layers (activations,
    dropout), the input of the first layer with weights (the classifier).
    """
    if layer is not None:
        found = model.get_layer(layer)
        # A nested model (e.g. the backbone) has its own graph: take the output of
        # the node through which *this* model calls it.
        nodes = [node for node in found._inbound_nodes if node.output_tensors]
        return nodes[-1].output_tensors[0] if nodes else found.output
    outputs = model.output if isinstance(model.output, dict) else {}
    if "embedding" in outputs:
        return outputs["embedding"]
    tensor = outputs.get("logits", model.outputs[0])
    for _ in range(len(model.layers) + 1):
        operation, inputs = _producer(tensor)
        if len(inputs) != 1:
            break
        if operation.weights:
            return inputs[0]
        tensor = inputs[0]
    raise ValueError(
        f"Could not find the classifier input of model {model.name!r}; pass layer=<name> "
        f"(layers: {[lyr.name for lyr in model.layers]})."
    )


def extract_features(model, images, layer=None, batch_size=256):
    """Features of `images` from `model` (see `feature_tensor`), as a NumPy array.

    Args:
        model: a functional `keras.Model`.
        images: [n, ...] model inputs (float images in [0, 255] for this package).
        layer: a layer name whose output to take, or None for the classifier input.
        batch_size: prediction batch size.

    Returns:
        float32 [n, ...] (rank 4 for a conv feature map).
    """
    import keras

    sub = keras.Model(model.inputs, feature_tensor(model, layer))
    return np.asarray(sub.predict(images, batch_size=batch_size, verbose=0), dtype=np.float32)


def load_dataset(name, split="test", limit=None, data_dir=None, seed=0):
    """Images (float32 [n, H, W, C] in [0, 255]) and int64 labels of a data set.

    Args:
        name: ``"fashion_mnist"`` or a path to an ``.npz`` with ``images``, ``labels``.
        split: ``"train"`` or ``"test"`` (Fashion-MNIST).
        limit: keep a random subset of this many examples (None: all).
        data_dir: Fashion-MNIST folder (None: the default local places).
        seed: seed of the subset.
    """
    if name == "fashion_mnist":
        from keras_fgvc.data.fashion_mnist import load_fashion_mnist

        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        (x, y), (xt, yt) = load_fashion_mnist(data_dir)
        images, labels = (x, y) if split == "train" else (xt, yt)
    elif str(name).endswith(".npz"):
        with np.load(name, allow_pickle=False) as data:
            if "images" not in data.files or "labels" not in data.files:
                raise ValueError(f"{name} must hold `images` and `labels`, has {data.files}.")
            images, labels = data["images"], data["labels"]
    else:
        raise ValueError(f"Unknown data set {name!r}: use 'fashion_mnist' or an .npz path.")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., None]
    labels = _validation.check_labels(labels, len(images))
    if limit is not None and limit < len(labels):
        keep = np.sort(np.random.default_rng(seed).choice(len(labels), limit, replace=False))
        images, labels = images[keep], labels[keep]
    return images, labels


def train_classifier(model, images, labels, epochs=1, batch_size=128, learning_rate=1e-3):
    """Fit a model with a ``logits`` output on integer labels (softmax cross-entropy).

    A convenience for analysis benchmarks and demos, not the package trainer.
    """
    import keras

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    dict_out = isinstance(model.output, dict)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={"logits": loss} if dict_out else loss,
    )
    target = {"logits": labels} if dict_out else labels
    model.fit(images, target, epochs=epochs, batch_size=batch_size, verbose=2)
    return model


def train_and_extract(model_name="small_cnn", dataset="fashion_mnist", epochs=1,
                      label_map=None, layer=None, train_limit=None, test_limit=None,
                      cache=None, seed=0):
    """Train a registered model on a data set's train split; features of its test split.

    Args:
        model_name: a registered model (keras_fgvc.models), e.g. ``"small_cnn"``.
        dataset: see `load_dataset`.
        epochs: training epochs (softmax cross-entropy on ``logits``).
        label_map: int array mapping the data set's labels to training labels
            (e.g. fine -> coarse), or None to train on the labels as they are.
        layer: feature layer (None: classifier input); see `extract_features`.
        train_limit, test_limit: random subsets (None: all).
        cache: an ``.npz`` path; reused when it exists, written otherwise.
        seed: seed of Keras initialisation and of the subsets.

    Returns:
        (features float32 [n, ...], original test labels int64 [n]).
    """
    if cache and os.path.isfile(cache):
        with np.load(cache, allow_pickle=False) as data:
            return data["features"], data["labels"]
    import keras

    from keras_fgvc.models import create_model

    keras.utils.set_random_seed(seed)
    images, labels = load_dataset(dataset, "train", limit=train_limit, seed=seed)
    train_labels = labels if label_map is None else np.asarray(label_map)[labels]
    model = create_model(model_name, num_classes=int(train_labels.max()) + 1,
                         input_shape=images.shape[1:])
    print(f"training {model_name} on {len(labels)} images for {epochs} epochs ...",
          file=sys.stderr, flush=True)
    train_classifier(model, images, train_labels, epochs=epochs)
    test_images, test_labels = load_dataset(dataset, "test", limit=test_limit, seed=seed)
    features = extract_features(model, test_images, layer=layer)
    if cache:
        atomic_write(cache, lambda tmp: np.savez(tmp, features=features, labels=test_labels),
                     suffix=".npz")
    return features, test_labels


# -------------------------------------------------------- shared CLI flags ---


def add_model_arguments(group):
    """Flags choosing a model to extract features with (``--model_path`` or ``--model``)."""
    group.add_argument("--model_path", help="a saved .keras model to extract features with")
    group.add_argument("--model", help="a registered model name (keras_fgvc.models)")
    group.add_argument("--num_classes", type=int, default=10, help="for --model")
    group.add_argument("--epochs", type=int, default=0,
                       help="for --model: train this many epochs on the train split first")
    group.add_argument("--limit", type=int, help="use a random subset of this many examples")
    group.add_argument("--layer", help="take this layer's output (default: classifier input)")
    return group


def add_feature_arguments(parser):
    """Flags every analysis CLI shares: ``--features`` or model + data set."""
    group = parser.add_argument_group("features (an .npz, or extracted with a model)")
    group.add_argument("--features", help=".npz with features [n, d] and labels [n]")
    group.add_argument("--dataset", default="fashion_mnist",
                       help="'fashion_mnist' or an .npz with images and labels")
    group.add_argument("--split", default="test")
    add_model_arguments(group)
    return parser


def parse_dataset_spec(spec):
    """``"NAME[:SPLIT]"`` -> (name, split); NAME as in `load_dataset`, SPLIT default "test".

    Example:
        >>> parse_dataset_spec("fashion_mnist:train"), parse_dataset_spec("d.npz")
        (('fashion_mnist', 'train'), ('d.npz', 'test'))
    """
    name, sep, split = str(spec).rpartition(":")
    if sep and split in ("train", "test") and name:
        return name, split
    return str(spec), "test"


def model_from_arguments(args, dataset):
    """The model of `add_model_arguments` flags: loaded, or created (and trained) on `dataset`.

    Args:
        args: parsed flags (``model_path``, ``model``, ``num_classes``, ``epochs``).
        dataset: the data set (see `load_dataset`) whose image shape a created
            model takes and whose train split ``--epochs`` trains on.
    """
    if not (args.model_path or args.model):
        raise SystemExit("Give --model_path or --model to extract features with a model.")
    import keras

    if args.model_path:
        import keras_fgvc.models  # noqa: F401  (registers the custom layers for loading)

        return keras.saving.load_model(args.model_path)
    from keras_fgvc.models import create_model

    images, _ = load_dataset(dataset, "test", limit=1)
    model = create_model(args.model, num_classes=args.num_classes,
                         input_shape=images.shape[1:])
    if args.epochs:
        print(f"training {args.model} for {args.epochs} epochs ...", file=sys.stderr)
        train_classifier(model, *load_dataset(dataset, "train"), epochs=args.epochs)
    else:
        print(f"warning: {args.model} is untrained (pass --epochs N to train it)",
              file=sys.stderr)
    return model


def dataset_features(model, dataset, split="test", limit=None, layer=None):
    """(features [n, d], labels [n]) of a data set split from `model`.

    A feature map (``layer`` with spatial output) gives one row per position,
    labelled with its image's label.
    """
    images, labels = load_dataset(dataset, split, limit=limit)
    print(f"extracting features of {len(labels)} images ...", file=sys.stderr, flush=True)
    features = extract_features(model, images, layer=layer)
    if features.ndim > 2:  # a feature map: every position is a feature vector
        positions = int(np.prod(features.shape[1:-1]))
        labels = np.repeat(labels, positions)
        features = features.reshape(-1, features.shape[-1])
    return _validation.check_features(features), labels


def features_from_arguments(args):
    """(features [n, d], labels [n]) from `add_feature_arguments` flags."""
    if args.features:
        return load_features(args.features)
    if not (args.model_path or args.model):
        raise SystemExit("Give --features F.npz, or --model_path / --model with --dataset.")
    model = model_from_arguments(args, args.dataset)
    return dataset_features(model, args.dataset, args.split, limit=args.limit, layer=args.layer)


def main(argv=None):
    """Extract features to an .npz: ``python -m keras_fgvc.analysis.features ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_fgvc.analysis.features", description=__doc__.split("\n")[0]
    )
    add_feature_arguments(parser)
    parser.add_argument("--output", required=True, help="the .npz to write")
    args = parser.parse_args(argv)
    if args.features:
        parser.error("--features is an input; give --model_path or --model to extract.")
    features, labels = features_from_arguments(args)
    save_features(args.output, features, labels)
    print(f"wrote {args.output}: features {features.shape}, labels {labels.shape}")
    return args.output


if __name__ == "__main__":
    main()
