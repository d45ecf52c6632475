"""Assessing granularity measures (Ch. 6.3): two-Gaussian simulation, hierarchical relabelling.

1. Simulation (Sec. 6.3.1, Fig. 6.3-6.4): two classes of `--per_class` samples
   from 2-D unit Gaussians with means (0, 0) and (m, 0); every measure is
   computed `--repeats` times per m (mean and std). Granularity should fall
   as m grows.
2. Hierarchical relabelling (Sec. 6.3.2, Fig. 6.5) on Fashion-MNIST: a
   `small_cnn` is trained on coarse labels (tops {T-shirt, Pullover, Coat,
   Shirt}, bottoms {Trouser, Dress}, footwear {Sandal, Sneaker, Ankle boot},
   bags {Bag}), test-set features are extracted, and the coarse groups are
   relabelled one by one to their fine classes in a random order (bags has a
   single fine class, so relabelling it changes nothing and it is left out).
   Granularity should grow monotonically with each relabelled group.

Writes benchmarks/results/granularity_simulation.json and .png.

    python benchmarks/granularity_simulation.py --quick
    python benchmarks/granularity_simulation.py          # paper settings (slow on 2 CPUs)
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from keras_fgvc.analysis import granularity
from keras_fgvc.analysis.features import train_and_extract

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
CACHE = os.path.join(os.path.dirname(HERE), "artifacts", "benchmark_cache")
MEASURES = ("rs", "rsm", "rank", "rank_m", "silhouette")
NAMES = {"rs": "RS", "rsm": "RSM", "rank": "Rank", "rank_m": "RankM", "silhouette": "Silhouette"}
# Fashion-MNIST: 0 T-shirt, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt,
# 7 Sneaker, 8 Bag, 9 Ankle boot.
GROUPS = {"tops": [0, 2, 4, 6], "bottoms": [1, 3], "footwear": [5, 7, 9], "bags": [8]}


def simulate(m_values, repeats, per_class, measures, seed=0):
    """{measure: {"mean": [...], "std": [...]}} over m, two 2-D unit Gaussians."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], per_class)
    values = {name: np.zeros((len(m_values), repeats)) for name in measures}
    for a, m in enumerate(m_values):
        t = time.perf_counter()
        for r in range(repeats):
            x = rng.standard_normal((2 * per_class, 2))
            x[per_class:, 0] += m
            for name in measures:
                values[name][a, r] = getattr(granularity, name)(x, y)
        summary = ", ".join(f"{NAMES[n]} {values[n][a].mean():.3f}" for n in measures)
        print(f"  m={m:.2f}: {summary} ({time.perf_counter() - t:.1f} s)", flush=True)
    return {n: {"mean": v.mean(1).tolist(), "std": v.std(1).tolist()} for n, v in values.items()}


def relabel_study(features, fine, repeats, subsample, measures, seed=0):
    """Granularity after relabelling 0..G coarse groups to fine classes, random orders."""
    coarse_of = np.zeros(10, dtype=np.int64)
    for g, members in enumerate(GROUPS.values()):
        coarse_of[members] = g
    splittable = [g for g, members in enumerate(GROUPS.values()) if len(members) > 1]
    rng = np.random.default_rng(seed)
    steps = len(splittable) + 1
    values = {name: np.zeros((steps, repeats)) for name in measures}
    for r in range(repeats):
        t = time.perf_counter()
        keep = rng.choice(len(fine), min(subsample, len(fine)), replace=False)
        x, y_fine = features[keep], fine[keep]
        order = rng.permutation(splittable)
        for s in range(steps):
            split = np.isin(coarse_of[y_fine], order[:s])
            labels = np.where(split, y_fine, 100 + coarse_of[y_fine])
            for name in measures:
                values[name][s, r] = getattr(granularity, name)(x, labels)
        print(f"  repeat {r + 1}/{repeats}: RankM " +
              " -> ".join(f"{v:.3f}" for v in values.get("rank_m", values[measures[0]])[:, r]) +
              f" ({time.perf_counter() - t:.1f} s)", flush=True)
    monotone = {n: float(np.mean(np.all(np.diff(v, axis=0) > 0, axis=0)))
                for n, v in values.items()}
    return {
        "groups": GROUPS, "splittable_groups": [list(GROUPS)[g] for g in splittable],
        "steps": list(range(steps)),
        "measures": {n: {"mean": v.mean(1).tolist(), "std": v.std(1).tolist()}
                     for n, v in values.items()},
        "fraction_of_repeats_strictly_increasing": monotone,
        "mean_is_strictly_increasing": {n: bool(np.all(np.diff(v.mean(1)) > 0))
                                        for n, v in values.items()},
    }


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("simulation", "relabelling") if k in result]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, key in zip(axes[0], panels):
        part = result[key]
        xs = part["m_values"] if key == "simulation" else part["steps"]
        stats = part["measures"]
        for name, s in stats.items():
            mean, std = np.array(s["mean"]), np.array(s["std"])
            style = "--" if name == "silhouette" else "-"
            ax.plot(xs, mean, style, label=NAMES[name])
            ax.fill_between(xs, mean - std, mean + std, alpha=0.25)
        if key == "simulation":
            ax.set_xlabel("distance m between the class means")
            ax.set_title(f"Two 2-D Gaussians ({part['repeats']} repeats), cf. Fig. 6.4")
        else:
            ax.set_xlabel("coarse groups relabelled to fine classes")
            ax.set_xticks(xs)
            ax.set_title(f"Fashion-MNIST relabelling ({part['repeats']} orders), cf. Fig. 6.5")
        ax.set_ylabel("score (silhouette dashed: for contrast)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small, fast settings")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--per_class", type=int, default=1000)
    parser.add_argument("--m_max", type=float, default=6.0)
    parser.add_argument("--m_step", type=float, default=0.5)
    parser.add_argument("--measures", nargs="+", default=list(MEASURES), choices=MEASURES)
    parser.add_argument("--skip_simulation", action="store_true")
    parser.add_argument("--skip_relabel", action="store_true")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train_limit", type=int, default=None, help="train images (all)")
    parser.add_argument("--test_limit", type=int, default=None, help="test images (all)")
    parser.add_argument("--train_labels", choices=["coarse", "fine"], default="coarse",
                        help="labels the feature model is trained on (the paper: coarse)")
    parser.add_argument("--relabel_repeats", type=int, default=20)
    parser.add_argument("--subsample", type=int, default=2000, help="test images per repeat")
    parser.add_argument("--output", default=os.path.join(RESULTS, "granularity_simulation.json"))
    parser.add_argument("--cache_dir", default=CACHE,
                        help="where trained-model features are cached (.npz)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.per_class, args.m_step = 5, 300, 1.0
        args.epochs, args.train_limit, args.test_limit = 1, 2000, 2000
        args.relabel_repeats, args.subsample = 3, 1000
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    result = {"settings": vars(args)}

    if not args.skip_simulation:
        m_values = np.round(np.arange(0, args.m_max + 1e-9, args.m_step), 6).tolist()
        print(f"simulation: {len(m_values)} values of m, {args.repeats} repeats, "
              f"{args.per_class} samples per class", flush=True)
        stats = simulate(m_values, args.repeats, args.per_class, args.measures)
        result["simulation"] = {"m_values": m_values, "repeats": args.repeats,
                                "per_class": args.per_class, "measures": stats}

    if not args.skip_relabel:
        coarse_of = np.zeros(10, dtype=np.int64)
        for g, members in enumerate(GROUPS.values()):
            coarse_of[members] = g
        label_map = coarse_of if args.train_labels == "coarse" else None
        cache = os.path.join(args.cache_dir,
                             f"fmnist_small_cnn_{args.train_labels}_e{args.epochs}_"
                             f"n{args.train_limit or 60000}"
                             f"{f'_t{args.test_limit}' if args.test_limit else ''}.npz")
        print(f"relabelling: features from small_cnn trained on {args.train_labels} labels "
              f"(cache {cache})", flush=True)
        features, fine = train_and_extract("small_cnn", "fashion_mnist", epochs=args.epochs,
                                           label_map=label_map, train_limit=args.train_limit,
                                           test_limit=args.test_limit, cache=cache)
        study = relabel_study(features, fine, args.relabel_repeats, args.subsample,
                              args.measures)
        study.update(repeats=args.relabel_repeats, subsample=args.subsample,
                     feature_dim=int(features.shape[1]), train_labels=args.train_labels,
                     epochs=args.epochs)
        result["relabelling"] = study
        print("mean strictly increasing: " + json.dumps(study["mean_is_strictly_increasing"]))

    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    png = os.path.splitext(args.output)[0] + ".png"
    plot(result, png)
    print(f"wrote {args.output} and {png}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
