"""EMD domain similarity and greedy source-class selection (Cui et al., CVPR 2018; Sec. 4.3).

A domain is a set of classes, each represented by the mean feature of its
images and weighted by its normalised number of images. The distance between
a source domain S and a target domain T is the Earth Mover's Distance with the
Euclidean ground distance (Eq. 4.1-4.2), and their similarity is
``exp(-gamma * EMD)`` with gamma = 0.01 (Eq. 4.3). Source classes are selected
for a target greedily by ``sim({(s_i, 1)}, T)`` (Sec. 4.3.2); a pre-training
subset for several targets is the union of their selections ("Subset A/B").

Command line::

    python -m keras_fgvc.analysis.domain_similarity --source src.npz \\
        --target cub.npz --target dogs.npz --select_k 200 --output sim.json
    python -m keras_fgvc.analysis.domain_similarity --model_path W/model.keras \\
        --source_dataset fashion_mnist:train --target_dataset shoes.npz:test \\
        --limit 2000 --select_k 3 --plot sim.png
"""

import argparse
import collections
import sys
import warnings

import numpy as np

from keras_fgvc.analysis import _validation
from keras_fgvc.analysis._cli import emit_json, save_bar_plots

GAMMA = 0.01

ClassMeans = collections.namedtuple("ClassMeans", ["means", "weights", "classes"])
Selection = collections.namedtuple("Selection", ["indices", "similarities"])


def class_means(features, labels, min_count=1, num_classes=None):
    """Per-class mean features and normalised image counts (a domain, Sec. 4.3.1).

    Args:
        features: float [n, d] image features (e.g. penultimate layer).
        labels: int [n] class ids.
        min_count: classes with fewer images are dropped (too few to give a
            reliable mean).
        num_classes: when given, labels must lie in [0, num_classes) and every
            class must have at least one image (an empty class is an error).

    Returns:
        `ClassMeans(means [m, d] float64, weights [m] summing to 1,
        classes [m] the kept class ids, sorted)`.

    Raises:
        ValueError: bad shapes, NaN features, an empty class with
            `num_classes`, or no class with `min_count` images.

    Example:
        >>> means, weights, classes = class_means([[0.0], [2.0], [4.0]], [0, 0, 1])
        >>> means.ravel().tolist(), weights.round(3).tolist(), classes.tolist()
        ([1.0, 4.0], [0.667, 0.333], [0, 1])
    """
    features, labels, classes, y = _validation.check_features_labels(
        features, labels, allow_float32=False
    )
    if int(min_count) < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}.")
    if num_classes is not None:
        outside = labels[(labels < 0) | (labels >= num_classes)]
        if len(outside):
            raise ValueError(f"labels {np.unique(outside)[:10].tolist()} are outside "
                             f"[0, {num_classes}).")
        empty = np.setdiff1d(np.arange(num_classes), classes)
        if len(empty):
            raise ValueError(f"classes {empty[:10].tolist()} have no images "
                             f"({len(empty)} empty of {num_classes}).")
    counts = np.bincount(y, minlength=len(classes))
    sums = np.zeros((len(classes), features.shape[1]))
    np.add.at(sums, y, features)
    keep = counts >= min_count
    if not keep.any():
        raise ValueError(f"No class has at least min_count={min_count} images "
                         f"(largest class: {counts.max()}).")
    means = sums[keep] / counts[keep, None]
    return ClassMeans(means, counts[keep] / counts[keep].sum(), classes[keep])


def _check_domain(means, weights, name):
    means = _validation.check_features(means, name=f"{name}_means", allow_float32=False)
    weights = _validation.check_weights(weights, len(means), name=f"{name}_weights")
    return means, weights


def ground_distances(source_means, target_means):
    """Euclidean distances d_ij = ||g(s_i) - g(t_j)|| (Eq. 4.1), float64 [m, n]."""
    s = np.asarray(source_means, dtype=np.float64)
    t = np.asarray(target_means, dtype=np.float64)
    if s.shape[0] * t.shape[0] * s.shape[1] <= 1 << 22:  # small: exact differences
        return np.sqrt(((s[:, None, :] - t[None, :, :]) ** 2).sum(-1))
    d2 = (s * s).sum(1)[:, None] + (t * t).sum(1)[None, :] - 2.0 * (s @ t.T)
    return np.sqrt(np.maximum(d2, 0.0))


def emd(source_means, source_weights, target_means, target_weights, num_iter_max=10_000_000):
    """Earth Mover's Distance between two domains (Eq. 4.2), via POT's ``ot.emd2``.

    Weights are normalised to sum to 1, so the total flow is 1 and EMD is the
    optimal ``sum_ij f_ij d_ij``. Computed in float64.

    Args:
        source_means: [m, d] class mean features of the source domain.
        source_weights: [m] non-negative class weights (any scale).
        target_means: [n, d] class mean features of the target domain.
        target_weights: [n] non-negative class weights (any scale).
        num_iter_max: network-simplex iteration cap.

    Returns:
        float EMD >= 0.

    Raises:
        ValueError: bad shapes, weights or NaN features.
        RuntimeError: the solver stopped before the optimum (raise num_iter_max).

    Example:
        >>> emd([[0.0, 0.0]], [1.0], [[3.0, 4.0]], [2.0])
        5.0
    """
    import ot  # POT; imported here because it is slow to import

    s, ws = _check_domain(source_means, source_weights, "source")
    t, wt = _check_domain(target_means, target_weights, "target")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"source features have {s.shape[1]} dimensions, target {t.shape[1]}.")
    cost = ground_distances(s, t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below, with the remedy
        value, log = ot.emd2(ws, wt, cost, numItermax=int(num_iter_max), log=True)
    if log.get("result_code") != 1:
        raise RuntimeError(
            f"EMD did not reach the optimum ({log.get('warning')}); raise num_iter_max "
            f"(now {num_iter_max}) for {len(s)} x {len(t)} classes."
        )
    return float(value)


def similarity(source_means, source_weights, target_means, target_weights, gamma=GAMMA):
    """Domain similarity ``exp(-gamma * EMD(S, T))`` (Eq. 4.3), gamma = 0.01 in the paper.

    Example:
        >>> round(similarity([[0.0, 0.0]], [1.0], [[3.0, 4.0]], [1.0]), 4)
        0.9512
    """
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}.")
    return float(np.exp(-gamma * emd(source_means, source_weights, target_means, target_weights)))


def class_similarities(source_means, target_means, target_weights, gamma=GAMMA):
    """``sim({(s_i, 1)}, T)`` for every source class s_i (Sec. 4.3.2), float64 [m].

    With a single source point all mass flows from it, so the EMD is
    ``sum_j w_j ||s_i - t_j||`` exactly (no linear program needed).
    """
    s = _validation.check_features(source_means, name="source_means", allow_float32=False)
    t, wt = _check_domain(target_means, target_weights, "target")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"source features have {s.shape[1]} dimensions, target {t.shape[1]}.")
    emds = np.zeros(len(s))
    for start in range(0, len(s), 4096):
        emds[start : start + 4096] = ground_distances(s[start : start + 4096], t) @ wt
    return np.exp(-gamma * emds)


def select_source_classes(source_means, target_means, target_weights, k, gamma=GAMMA):
    """Greedy selection of the k source classes most similar to a target (Sec. 4.3.2).

    Args:
        source_means: [m, d] source class means.
        target_means, target_weights: the target domain (see `class_means`).
        k: number of classes to select (1 <= k <= m).
        gamma: similarity scale of Eq. 4.3.

    Returns:
        `Selection(indices [k] into source_means, most similar first;
        similarities [k])`.

    Example:
        >>> select_source_classes([[0.0], [9.0], [1.0]], [[0.5]], [1.0], k=2).indices.tolist()
        [0, 2]
    """
    sims = class_similarities(source_means, target_means, target_weights, gamma)
    if not 1 <= int(k) <= len(sims):
        raise ValueError(f"k must be in [1, {len(sims)}] (number of source classes), got {k}.")
    order = np.argsort(-sims, kind="stable")[: int(k)]
    return Selection(order, sims[order])


def select_source_union(source_means, targets, k, gamma=GAMMA):
    """Union of the per-target selections, as "Subset A" / "Subset B" were formed.

    Args:
        source_means: [m, d] source class means.
        targets: list of (target_means, target_weights) pairs.
        k: one k for every target, or a list with one k per target.
        gamma: similarity scale of Eq. 4.3.

    Returns:
        Sorted unique int indices into `source_means`.
    """
    ks = [k] * len(targets) if np.isscalar(k) else list(k)
    if len(ks) != len(targets):
        raise ValueError(f"Got {len(ks)} values of k for {len(targets)} targets.")
    if not targets:
        raise ValueError("targets is empty: give at least one (means, weights) pair.")
    chosen = [select_source_classes(source_means, t, w, kk, gamma).indices
              for (t, w), kk in zip(targets, ks)]
    return np.unique(np.concatenate(chosen))


def _domains_from_arguments(args, parser, features_lib):
    """[(name, (features, labels))] of the source then every target, from the flags."""
    specs = [(args.source, args.source_dataset)]
    specs += [(path, None) for path in args.target or []]
    specs += [(None, spec) for spec in args.target_dataset or []]
    datasets = [spec for _, spec in specs if spec]
    if datasets and not (args.model_path or args.model):
        parser.error("--source_dataset / --target_dataset need --model_path or --model.")
    model = None
    if datasets:  # one model for every domain; --epochs trains it on the first data set
        model = features_lib.model_from_arguments(
            args, features_lib.parse_dataset_spec(datasets[0])[0])
    domains = []
    for path, spec in specs:
        if path:
            domains.append((path, features_lib.load_features(path)))
        else:
            name, split = features_lib.parse_dataset_spec(spec)
            domains.append((spec, features_lib.dataset_features(
                model, name, split, limit=args.limit, layer=args.layer)))
    return domains


def main(argv=None):
    """Command line: EMD / similarity of a source to targets, and class selection."""
    from keras_fgvc.analysis import features as features_lib

    parser = argparse.ArgumentParser(
        prog="python -m keras_fgvc.analysis.domain_similarity", description=__doc__.split("\n")[0]
    )
    domains = parser.add_argument_group(
        "domains (feature .npz files, or data sets NAME[:SPLIT] whose features a model extracts; "
        "NAME is 'fashion_mnist' or an .npz with images and labels, SPLIT 'train'/'test')")
    source = domains.add_mutually_exclusive_group(required=True)
    source.add_argument("--source", help=".npz with features [n, d], labels [n]")
    source.add_argument("--source_dataset", help="source data set NAME[:SPLIT]")
    domains.add_argument("--target", action="append", help="target feature .npz (repeat)")
    domains.add_argument("--target_dataset", action="append",
                         help="target data set NAME[:SPLIT] (repeat; after the --target ones)")
    features_lib.add_model_arguments(parser.add_argument_group(
        "model (for --source_dataset / --target_dataset; --epochs trains on the first one)"))
    parser.add_argument("--gamma", type=float, default=GAMMA)
    parser.add_argument("--min_count", type=int, default=1)
    parser.add_argument("--select_k", type=int, nargs="+",
                        help="select this many source classes per target (one k or one per "
                             "target) and report their union")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--plot", help="write a bar chart per target of its most similar "
                                       "source classes (top --select_k, else 10) to this .png")
    args = parser.parse_args(argv)

    num_targets = len(args.target or []) + len(args.target_dataset or [])
    if not num_targets:
        parser.error("give at least one --target or --target_dataset.")
    if args.select_k and len(args.select_k) not in (1, num_targets):
        parser.error(f"--select_k takes one k or one per target ({num_targets}), "
                     f"got {len(args.select_k)}.")
    if args.plot and not args.plot.lower().endswith(".png"):
        parser.error(f"--plot must name a .png file, got {args.plot!r}.")
    (source_name, source_data), *target_data = _domains_from_arguments(args, parser, features_lib)
    source = class_means(*source_data, min_count=args.min_count)
    result = {"source": source_name, "gamma": args.gamma, "targets": []}
    targets, panels = [], []
    for name, data in target_data:
        print(f"EMD {source_name} -> {name} ...", file=sys.stderr, flush=True)
        target = class_means(*data, min_count=args.min_count)
        targets.append((target.means, target.weights))
        d = emd(source.means, source.weights, target.means, target.weights)
        entry = {"target": name, "emd": d, "similarity": float(np.exp(-args.gamma * d))}
        if args.select_k:
            kk = args.select_k[0] if len(args.select_k) == 1 else args.select_k[len(targets) - 1]
            sel = select_source_classes(source.means, target.means, target.weights, kk,
                                        args.gamma)
            entry["selected_classes"] = source.classes[sel.indices].tolist()
            entry["selected_similarities"] = sel.similarities.tolist()
        if args.plot:  # the top-k source classes for this target (k = --select_k, else 10)
            top = select_source_classes(source.means, target.means, target.weights,
                                        min(kk if args.select_k else 10, len(source.classes)),
                                        args.gamma)
            panels.append((f"{name}: similarity {entry['similarity']:.4f}",
                           source.classes[top.indices].tolist(), top.similarities.tolist()))
        result["targets"].append(entry)
    if args.select_k:
        ks = args.select_k if len(args.select_k) > 1 else args.select_k[0]
        union = select_source_union(source.means, targets, ks, args.gamma)
        result["union_classes"] = source.classes[union].tolist()
    emit_json(result, args.output)
    if args.plot:
        save_bar_plots(args.plot, panels, "sim({(s_i, 1)}, T) (Eq. 4.3)")
    return result


if __name__ == "__main__":
    main()
