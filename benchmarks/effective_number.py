"""Effective number of samples (Ch. 5): class-balanced term (Fig. 5.3), per-class E_n (Fig. 5.6).

- Fig. 5.3: the class-balanced term (1 - beta) / (1 - beta^n) against n for
  several beta, log-log (beta = 0: no re-weighting; beta -> 1: 1 / n).
- Fig. 5.6: effective number E_n = (1 - beta^n) / (1 - beta) per class of
  long-tailed data sets with imbalance 50 (n_i = n_max mu^i): Fashion-MNIST-LT
  (10 classes, n_max = 6000; its class counts are also checked against a real
  long-tailed subsample of the Fashion-MNIST training labels when the data set
  is installed) and a CIFAR-100-LT-shaped profile (100 classes, n_max = 500).

Uses keras_fgvc.losses.effective_number and keras_fgvc.data.long_tail when
they import; otherwise computes the same formulas locally (and says so in the
JSON).

    python benchmarks/effective_number.py [--quick]
"""

import argparse
import json
import os
import sys

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _effective_number_fn():
    try:
        from keras_fgvc.losses import effective_number

        return effective_number, "keras_fgvc.losses.effective_number"
    except ImportError:
        return (lambda n, beta: (1.0 - np.power(beta, np.asarray(n, float))) / (1.0 - beta),
                "local formula (keras_fgvc.losses.effective_number did not import)")


def _long_tail_counts(n_max, num_classes, imbalance):
    try:
        from keras_fgvc.data.long_tail import long_tail_counts

        return np.asarray(long_tail_counts(n_max, num_classes, imbalance)), "keras_fgvc.data"
    except ImportError:
        mu = (1.0 / imbalance) ** (1.0 / (num_classes - 1))
        return (np.floor(n_max * mu ** np.arange(num_classes) + 1e-9).astype(int),
                "local formula (keras_fgvc.data.long_tail did not import)")


def _fashion_mnist_lt_counts(counts, seed=0):
    """Class counts of an actual long-tailed subsample of the Fashion-MNIST train labels."""
    try:
        from keras_fgvc.data.fashion_mnist import load_fashion_mnist

        (_, y), _ = load_fashion_mnist()
    except (ImportError, FileNotFoundError) as e:
        print(f"  Fashion-MNIST not available ({e}); using the count formula only.")
        return None
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.flatnonzero(y == c), n, replace=False)
                           for c, n in enumerate(counts)])
    return np.bincount(y[keep], minlength=len(counts))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer points on the n axis")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.9, 0.99, 0.999, 0.9999])
    parser.add_argument("--imbalance", type=float, default=50.0)
    parser.add_argument("--output", default=os.path.join(RESULTS, "effective_number.json"))
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    effective_number, source = _effective_number_fn()
    print(f"effective number from {source}")

    ns = np.unique(np.logspace(0, 5, 21 if args.quick else 201).round().astype(int))
    fig53 = {str(b): (1.0 / effective_number(ns, b)).tolist() for b in args.betas}
    print("Fig 5.3: class-balanced term at n = 1, 100, 10^5: " + ", ".join(
        f"beta={b}: {1 / effective_number(1, b):.3g}, {1 / effective_number(100, b):.3g}, "
        f"{1 / effective_number(100_000, b):.3g}" for b in args.betas))

    datasets = {}
    for name, n_max, classes in (("fashion_mnist_lt", 6000, 10), ("cifar100_lt_shape", 500, 100)):
        counts, counts_source = _long_tail_counts(n_max, classes, args.imbalance)
        entry = {"n_max": n_max, "num_classes": classes, "imbalance": args.imbalance,
                 "counts": counts.tolist(), "counts_from": counts_source,
                 "effective_number": {str(b): np.atleast_1d(effective_number(counts, b)).tolist()
                                      for b in args.betas if b > 0}}
        if name == "fashion_mnist_lt":
            real = _fashion_mnist_lt_counts(counts)
            if real is not None:
                entry["subsample_counts_match"] = bool(np.array_equal(real, counts))
        datasets[name] = entry
        print(f"Fig 5.6 {name}: counts {counts[0]}..{counts[-1]}; E_n of the largest class: " +
              ", ".join(f"beta={b}: {v[0]:.1f}" for b, v in entry["effective_number"].items()))

    result = {"effective_number_from": source, "betas": args.betas, "n": ns.tolist(),
              "class_balanced_term": fig53, "long_tailed": datasets}
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for c, b in enumerate(args.betas):
        ax.loglog(ns, fig53[str(b)], color=f"C{c}", label=f"beta = {b}")
    ax.loglog(ns, 1.0 / ns, "k:", label="1 / n (inverse frequency)")
    ax.set_xlabel("number of samples in the ground-truth class n_y")
    ax.set_ylabel("class-balanced term (1 - beta) / (1 - beta^n)")
    ax.set_title("cf. Fig. 5.3")
    ax.legend(fontsize=8)
    for ax, (name, entry) in zip(axes[1:], datasets.items()):
        idx = np.arange(entry["num_classes"])
        ax.semilogy(idx, entry["counts"], "k-", label="n (beta -> 1)")
        for b, values in entry["effective_number"].items():
            color = f"C{[str(v) for v in args.betas].index(b)}"  # as in the first panel
            ax.semilogy(idx, values, color=color, label=f"beta = {b}")
        ax.set_xlabel("class index (sorted by size)")
        ax.set_ylabel("effective number of samples")
        ax.set_title(f"{name}, imbalance {entry['imbalance']:g} (cf. Fig. 5.6)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    png = os.path.splitext(args.output)[0] + ".png"
    fig.savefig(png, dpi=120)
    print(f"wrote {args.output} and {png}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
