"""Relative error of Kernel Pooling's approximation of the Gaussian RBF kernel (Eq. 3.12).

Cui et al., "Kernel Pooling for Convolutional Neural Networks", CVPR 2017
(Sec. 3.3.2, Fig. 3.6 of Cui's dissertation). ``KernelPooling`` maps x to
phi(x) with RBF coefficients alpha_i^2 = (2 gamma)^i / i!, so phi(x).phi(y)
estimates the order-p Taylor series of exp(2 gamma x.y) (Eq. 3.11). The RBF
kernel is K(x, y) = exp(-gamma ||x - y||^2) = beta exp(2 gamma x.y) with the
pair's normalisation beta = exp(-gamma (||x||^2 + ||y||^2)), so the estimate
of K is beta phi(x).phi(y) / alpha_0^2 (alpha_0^2 = 1 unless the layer folds a
constant into its coefficients) and the relative error of Eq. 3.12 is

    eps = |beta phi(x).phi(y) / alpha_0^2 - K(x, y)| / K(x, y)
        = |phi(x).phi(y) exp(-2 gamma x.y) / alpha_0^2 - 1|,

computed in the second form so that beta never underflows. It includes both
the Taylor truncation at order p and the Count Sketch error.

Command line::

    python -m keras_fgvc.analysis.kernel_approximation --features conv.npz \\
        --order 4 --dims 4096 --gamma auto --num_pairs 100000
"""

import argparse
import sys

import numpy as np

from keras_fgvc.analysis import _validation
from keras_fgvc.analysis._cli import emit_json


def default_gamma(features):
    """gamma = 1 / mean inner product between distinct feature vectors (Sec. 3.3.2)."""
    from keras_fgvc.layers.kernel_pooling import mean_inner_product

    features = _validation.check_features(features)
    mean = mean_inner_product(features)
    if not (np.isfinite(mean) and mean > 0):
        raise ValueError(
            f"The mean inner product of the features is {mean}; gamma = 1 / mean needs a "
            "positive value (e.g. non-negative ReLU features). Pass gamma explicitly."
        )
    return 1.0 / mean


def sample_pairs(n, num_pairs, seed=0):
    """`num_pairs` random index pairs (i, j) with i != j, as two int arrays."""
    if n < 2:
        raise ValueError(f"Need at least 2 feature vectors to form pairs, got {n}.")
    if int(num_pairs) < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}.")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=int(num_pairs))
    j = (i + rng.integers(1, n, size=int(num_pairs))) % n  # uniform over j != i
    return i, j


def feature_map(features, order, dims, gamma, seed=0, batch_size=4096):
    """phi(x) of every row (KernelPooling, "rbf" coefficients, no post-processing).

    Returns:
        (phi float64 [n, 1 + C + (order - 1) dims], alpha float64 [order + 1]).
    """
    from keras_fgvc.layers import KernelPooling

    layer = KernelPooling(
        order=order, dims=dims, coefficients="rbf", gamma=float(gamma), signed_sqrt=False,
        l2_normalize=False, seed=seed, trainable_coefficients=False, dtype="float32",
    )
    x = np.asarray(features, dtype=np.float32)
    out = [np.asarray(layer(x[s : s + batch_size]), dtype=np.float64)
           for s in range(0, len(x), batch_size)]
    return np.concatenate(out), np.asarray(layer.coefficients, dtype=np.float64)


def relative_error(features, order, dims, gamma=None, num_pairs=100_000, seed=0,
                   reduction="mean"):
    """Relative error of the RBF kernel approximation on random feature pairs (Eq. 3.12).

    Args:
        features: float [n, C] feature vectors (e.g. conv-map locations).
        order: p, the Taylor order of KernelPooling (>= 1).
        dims: the Count Sketch size d_i of orders 2..p (int or list).
        gamma: RBF gamma > 0; None uses `default_gamma` (1 / mean x.y).
        num_pairs: random pairs (i != j) averaged over (100K in the paper).
        seed: seed of the pairs and of the sketch hashes.
        reduction: "mean" (a float) or "none" (the per-pair errors).

    Returns:
        Mean relative error (float), or float64 [num_pairs] with "none".

    Example:
        >>> x = np.random.default_rng(0).random((50, 8)) / 8
        >>> relative_error(x, order=4, dims=2048, gamma=0.5, num_pairs=200) < 0.05
        True
    """
    features = _validation.check_features(features, allow_float32=False)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    if gamma is None:
        gamma = default_gamma(features)
    if not (np.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a positive float, got {gamma}.")
    i, j = sample_pairs(len(features), num_pairs, seed)
    used, inverse = np.unique(np.concatenate([i, j]), return_inverse=True)
    phi, alpha = feature_map(features[used], order, dims, gamma, seed)
    pi, pj = inverse[: len(i)], inverse[len(i) :]
    approx = np.einsum("ij,ij->i", phi[pi], phi[pj]) / alpha[0] ** 2
    xy = np.einsum("ij,ij->i", features[i], features[j])
    errors = np.abs(approx * np.exp(-2.0 * gamma * xy) - 1.0)
    return errors if reduction == "none" else float(errors.mean())


def relative_error_grid(features, orders, dims, gammas, num_pairs=100_000, seed=0):
    """Mean relative error for every (order, dims, gamma), one feature map per dims.

    phi is computed once per d at the highest order and the first gamma; a
    lower order p uses the first 1 + C + (p - 1) d entries of phi (the orders
    share one chain of sketches, as in Algorithm 1), and another gamma'
    rescales the order-i block by (gamma' / gamma)^(i / 2) (alpha_i^2 is
    proportional to gamma^i). The pairs are the same for every cell.

    Args:
        features: float [n, C].
        orders: Taylor orders p (each >= 1).
        dims: Count Sketch sizes d (ints).
        gammas: RBF gammas (> 0).
        num_pairs: random pairs (i != j); seed: seed of pairs and hashes.

    Returns:
        float64 array [len(orders), len(dims), len(gammas)].
    """
    features = _validation.check_features(features, allow_float32=False)
    gammas = [float(g) for g in gammas]
    if not gammas or not all(np.isfinite(g) and g > 0 for g in gammas):
        raise ValueError(f"gammas must be positive floats, got {gammas}.")
    if not orders or min(orders) < 1:
        raise ValueError(f"orders must be >= 1, got {orders}.")
    top = max(orders)
    i, j = sample_pairs(len(features), num_pairs, seed)
    used, inverse = np.unique(np.concatenate([i, j]), return_inverse=True)
    pi, pj = inverse[: len(i)], inverse[len(i) :]
    xy = np.einsum("ij,ij->i", features[i], features[j])
    channels = features.shape[1]
    out = np.zeros((len(orders), len(dims), len(gammas)))
    for b, d in enumerate(dims):
        phi, alpha = feature_map(features[used], top, int(d), gammas[0], seed)
        edges = np.cumsum([0, 1, channels] + [int(d)] * (top - 1))
        per_order = np.stack([np.einsum("ij,ij->i", phi[pi, s:e], phi[pj, s:e])
                              for s, e in zip(edges[:-1], edges[1:])]) / alpha[0] ** 2
        for c, gamma in enumerate(gammas):
            scaled = per_order * (gamma / gammas[0]) ** np.arange(top + 1)[:, None]
            decay = np.exp(-2.0 * gamma * xy)
            for a, p in enumerate(orders):
                out[a, b, c] = np.abs(scaled[: p + 1].sum(0) * decay - 1.0).mean()
    return out


def main(argv=None):
    """``python -m keras_fgvc.analysis.kernel_approximation --features F.npz ...``."""
    from keras_fgvc.analysis import features as features_lib

    parser = argparse.ArgumentParser(
        prog="python -m keras_fgvc.analysis.kernel_approximation",
        description=__doc__.split("\n")[0],
    )
    features_lib.add_feature_arguments(parser)
    parser.add_argument("--order", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--gamma", default="auto",
                        help="a float, or 'auto' = 1 / mean inner product")
    parser.add_argument("--num_pairs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)
    x, _ = features_lib.features_from_arguments(args)
    gamma = default_gamma(x) if args.gamma == "auto" else float(args.gamma)
    rows = []
    for p in args.order:
        for d in args.dims:
            err = relative_error(x, p, d, gamma, args.num_pairs, args.seed)
            print(f"p={p} d={d} gamma={gamma:.4g}: relative error {err:.4g}", file=sys.stderr)
            rows.append({"order": p, "dims": d, "gamma": gamma, "relative_error": err})
    emit_json({"n": int(len(x)), "results": rows}, args.output)
    return rows


if __name__ == "__main__":
    main()
