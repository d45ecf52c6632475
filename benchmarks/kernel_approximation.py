"""Kernel approximation error of Kernel Pooling on CNN features (Sec. 3.3.2, Fig. 3.6).

A `small_cnn` is trained on Fashion-MNIST; the feature vectors are the
positions of its last conv feature map (``backbone``, 7 x 7 x 128) on test
images, as the paper used VGG conv5_3 positions. The relative error of
Eq. 3.12 is averaged over random feature pairs for feature pooling dimension
d from 50 to 5000, order p in {2, 3, 4} and several gamma (multiples of
gamma_0 = 1 / mean inner product, the paper's default).

Writes benchmarks/results/kernel_approximation.json and .png.

    python benchmarks/kernel_approximation.py --quick
    python benchmarks/kernel_approximation.py
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from keras_fgvc.analysis import kernel_approximation as ka
from keras_fgvc.analysis.features import train_and_extract

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
CACHE = os.path.join(os.path.dirname(HERE), "artifacts", "benchmark_cache")
FULL_DIMS = [50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer d, pairs and images")
    parser.add_argument("--dims", type=int, nargs="+", default=FULL_DIMS)
    parser.add_argument("--orders", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--gamma_multiples", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0],
                        help="gammas as multiples of 1 / mean inner product")
    parser.add_argument("--num_pairs", type=int, default=20_000, help="paper: 100K")
    parser.add_argument("--pool", type=int, default=4000,
                        help="feature vectors the pairs are drawn from")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train_limit", type=int, default=None)
    parser.add_argument("--test_images", type=int, default=1000)
    parser.add_argument("--output", default=os.path.join(RESULTS, "kernel_approximation.json"))
    parser.add_argument("--cache_dir", default=CACHE,
                        help="where trained-model features are cached (.npz)")
    args = parser.parse_args(argv)
    if args.quick:
        args.dims, args.num_pairs, args.pool = [50, 200, 1000, 5000], 2000, 1500
        args.epochs, args.train_limit, args.test_images = 1, 2000, 300
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)

    cache = os.path.join(args.cache_dir, f"fmnist_small_cnn_fine_e{args.epochs}_"
                         f"n{args.train_limit or 60000}_t{args.test_images}_backbone.npz")
    print(f"features: small_cnn conv map on Fashion-MNIST (cache {cache})", flush=True)
    fmap, _ = train_and_extract("small_cnn", "fashion_mnist", epochs=args.epochs,
                                layer="backbone", train_limit=args.train_limit,
                                test_limit=args.test_images, cache=cache)
    vectors = fmap.reshape(-1, fmap.shape[-1]).astype(np.float64)
    vectors = vectors[np.linalg.norm(vectors, axis=1) > 0]  # all-zero ReLU positions
    rng = np.random.default_rng(0)
    pool = vectors[rng.choice(len(vectors), min(args.pool, len(vectors)), replace=False)]
    gamma0 = ka.default_gamma(pool)
    gammas = [m * gamma0 for m in args.gamma_multiples]
    print(f"{len(vectors)} nonzero {vectors.shape[1]}-d vectors; pool {len(pool)}; "
          f"gamma_0 = 1 / mean x.y = {gamma0:.4g}", flush=True)

    t = time.perf_counter()
    grid = np.zeros((len(args.orders), len(args.dims), len(gammas)))
    for b, d in enumerate(args.dims):  # one d at a time, for progress output
        grid[:, b : b + 1] = ka.relative_error_grid(pool, args.orders, [d], gammas,
                                                    num_pairs=args.num_pairs)
        print(f"  d={d}: " + "; ".join(
            f"p={p}: " + ", ".join(f"{v:.3g}" for v in grid[a, b]) for a, p in
            enumerate(args.orders)) + f"  ({time.perf_counter() - t:.0f} s)", flush=True)

    result = {
        "feature_source": "small_cnn 'backbone' conv map positions, Fashion-MNIST test images",
        "epochs": args.epochs, "feature_dim": int(vectors.shape[1]), "pool": len(pool),
        "num_pairs": args.num_pairs, "gamma_0": gamma0, "gamma_multiples": args.gamma_multiples,
        "gammas": gammas, "orders": args.orders, "dims": args.dims,
        "relative_error": {f"p={p}": {f"gamma={m}x": grid[a, :, c].tolist()
                                      for c, m in enumerate(args.gamma_multiples)}
                           for a, p in enumerate(args.orders)},
    }
    best = np.unravel_index(np.argmin(grid), grid.shape)
    result["best"] = {"order": args.orders[best[0]], "dims": args.dims[best[1]],
                      "gamma_multiple": args.gamma_multiples[best[2]],
                      "relative_error": float(grid[best])}
    print("best: " + json.dumps(result["best"]))
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.orders), figsize=(5 * len(args.orders), 4),
                             sharey=True, squeeze=False)
    for a, (ax, p) in enumerate(zip(axes[0], args.orders)):
        for c, m in enumerate(args.gamma_multiples):
            ax.semilogy(args.dims, grid[a, :, c], "o-", ms=3, label=f"gamma = {m:g} gamma_0")
        ax.set_title(f"p = {p}")
        ax.set_xlabel("feature pooling dimension d")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("relative approximation error (Eq. 3.12)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Kernel Pooling vs Gaussian RBF on small_cnn conv features "
                 f"(gamma_0 = {gamma0:.3g}), cf. Fig. 3.6")
    fig.tight_layout()
    png = os.path.splitext(args.output)[0] + ".png"
    fig.savefig(png, dpi=120)
    print(f"wrote {args.output} and {png}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
