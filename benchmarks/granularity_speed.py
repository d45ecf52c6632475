"""RankM speed (Eq. 6.5): n = 100,000 samples, k = 1,000 classes, 2048-d features.

RankM needs the class medoids and one n x k distance computation; the goal is
a run time within 2x of one such float32 matmul (X [n, d] @ M^T [d, k]) with
memory below 4 GiB (the computation runs in row chunks). Writes JSON and a bar
plot; prints progress.

    python benchmarks/granularity_speed.py            # n=100k, k=1000, d=2048
    python benchmarks/granularity_speed.py --quick    # n=20k, k=400, d=512
"""

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc

import numpy as np

from keras_fgvc.analysis import granularity

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def make_data(n, k, d, seed=0):
    """float32 class-structured features: unit noise around random class centres."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % k)
    centers = rng.standard_normal((k, d), dtype=np.float32) * 0.3
    x = rng.standard_normal((n, d), dtype=np.float32)
    for start in range(0, n, 10_000):  # in place, to avoid an n x d temporary
        x[start : start + 10_000] += centers[labels[start : start + 10_000]]
    return x, labels


def best_time(fn, repeats):
    """(best wall seconds, all wall seconds, best process CPU seconds, value)."""
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        value = fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(times), times, min(cpu), value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk_size", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="n=20k, k=400, d=512, 2 repeats")
    parser.add_argument("--output", default=os.path.join(RESULTS, "granularity_speed.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.k, args.d, args.repeats = 20_000, 400, 512, 2
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)

    print(f"generating n={args.n} k={args.k} d={args.d} float32 features ...", flush=True)
    x, y = make_data(args.n, args.k, args.d)
    m = x[np.arange(args.k)].copy()  # any k rows stand in for the medoids

    print("timing one n x k float32 matmul (X @ M^T) ...", flush=True)
    matmul_s, matmul_all, matmul_cpu, _ = best_time(lambda: x @ m.T, args.repeats)
    print(f"  matmul: {matmul_s:.3f} s, CPU {matmul_cpu:.3f} s "
          f"(runs: {[round(t, 3) for t in matmul_all]})", flush=True)

    print("timing class medoids ...", flush=True)
    medoid_s, _, medoid_cpu, _ = best_time(lambda: granularity.class_medoids(x, y), 1)
    print(f"  medoids: {medoid_s:.3f} s", flush=True)

    print("timing RankM ...", flush=True)
    rank_m_s, rank_m_all, rank_m_cpu, value = best_time(
        lambda: granularity.rank_m(x, y, chunk_size=args.chunk_size), args.repeats)
    print(f"  RankM: {rank_m_s:.3f} s = {rank_m_s / matmul_s:.2f}x the matmul; CPU "
          f"{rank_m_cpu:.3f} s = {rank_m_cpu / matmul_cpu:.2f}x "
          f"(runs: {[round(t, 3) for t in rank_m_all]}); RankM = {value:.4f}", flush=True)

    print("measuring RankM's peak extra memory (tracemalloc) ...", flush=True)
    tracemalloc.start()
    granularity.rank_m(x, y, chunk_size=args.chunk_size)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {
        "n": args.n, "k": args.k, "d": args.d, "dtype": "float32", "repeats": args.repeats,
        "matmul_seconds": matmul_s, "rank_m_seconds": rank_m_s, "medoid_seconds": medoid_s,
        "ratio_rank_m_to_matmul": rank_m_s / matmul_s, "goal_ratio": 2.0,
        "matmul_cpu_seconds": matmul_cpu, "rank_m_cpu_seconds": rank_m_cpu,
        "medoid_cpu_seconds": medoid_cpu, "cpu_ratio_rank_m_to_matmul": rank_m_cpu / matmul_cpu,
        "load_average_1min": os.getloadavg()[0],
        "rank_m": value, "rank_m_peak_extra_bytes": peak,
        "input_bytes": int(x.nbytes), "process_max_rss_bytes": max_rss,
        "memory_goal_bytes": 4 * 2**30, "cpu_count": os.cpu_count(),
        "note": "best of `repeats` runs; wall and process-CPU time (CPU time is the robust "
                "figure on a shared machine). tracemalloc peak = RankM's own allocations "
                "beyond the input features; max RSS includes the input, the matmul "
                "baseline's n x k output and Python.",
    }
    print(json.dumps(result, indent=2))
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = ["n x k matmul", "medoids", "RankM (total)"]
    ax.bar(names, [matmul_s, medoid_s, rank_m_s], color=["gray", "tab:orange", "tab:blue"])
    ax.axhline(2 * matmul_s, color="red", ls="--", label="goal: 2x matmul")
    ax.set_ylabel("seconds")
    ax.set_title(f"RankM, n={args.n}, k={args.k}, d={args.d} ({rank_m_s / matmul_s:.2f}x)")
    ax.legend()
    fig.tight_layout()
    png = os.path.splitext(args.output)[0] + ".png"
    fig.savefig(png, dpi=120)
    print(f"wrote {args.output} and {png}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
