"""Forward + backward time of KernelPooling against its naive form and baselines.

Cases (all B x H x W x C float32 feature maps, d = --dims, p = --order):
  kernel_pooling    keras_fgvc KernelPooling (one gather per sketch, rfft,
                    spectra pooled before one inverse FFT per sample per order,
                    hand-written backward).
  naive             Kernel Pooling as the public compact-bilinear code writes it:
                    Count Sketch as a sparse-dense matmul, complex FFT of every
                    sketch, an inverse complex FFT at every position for every
                    order, then the mean (same hashes, so same output).
  compact_bilinear  keras_fgvc CompactBilinearPooling (p = 2, same d), method="auto".
  compact_bilinear_gram / compact_bilinear_fft
                    the same layer with each method forced: the sketch of the
                    pooled second-moment matrix, or the FFT product.
  global_average    keras GlobalAveragePooling2D.
  fft_lower_bound   the p x B x H x W real FFTs of length d alone: tf.signal.rfft
                    forward and its TensorFlow gradient, nothing else.
  fft_rfft_irfft    a stricter bound: p x B x H x W rffts forward and as many
                    irffts backward (the rfft adjoint without TF's extra terms).

Each case is one tf.function (optionally jit_compile) computing the output and
the gradients with respect to the input and the trainable weights for a fixed
random upstream gradient. A batch of B is run as B / --micro-batch steps (as
gradient accumulation would) so that the naive form fits in memory; the time
per batch is their sum. Warm-up calls (tracing, compilation) are not timed;
the cases are run interleaved (one batch of each case per round, --runs
rounds), and the medians of the wall and process-CPU times and of the
per-round ratios are reported (CPU time is less sensitive to other processes
on a shared machine). With --jit every case is XLA-compiled
except `naive` (the sparse-dense matmul of the public code has no XLA kernel).

  python benchmarks/kernel_pooling.py            # full: B=32, 14x14x2048 and 28x28x512
  python benchmarks/kernel_pooling.py --quick    # tiny shapes, seconds
  python benchmarks/kernel_pooling.py --jit      # XLA
Writes benchmarks/results/kernel_pooling.json (--quick: kernel_pooling_quick.json).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_fgvc.layers import CompactBilinearPooling, KernelPooling  # noqa: E402
from keras_fgvc.layers.normalization import l2_normalize, signed_sqrt  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def naive_kernel_pooling(x, layer):
    """Algorithm 1 written position by position with complex FFTs (the public-code pattern)."""
    b, h, w, c = x.shape
    flat = tf.reshape(x, (-1, c))
    alpha = layer._alpha
    blocks = [alpha[0] * tf.ones((b, 1)), alpha[1] * tf.reduce_mean(x, (1, 2))]
    for orders, plan in layer._groups:
        d = plan.sketch_dim
        product = None
        for t in range(max(orders)):
            indices = np.stack([plan.h[t], np.arange(c)], 1).astype(np.int64)
            sketch_matrix = tf.sparse.reorder(
                tf.sparse.SparseTensor(indices, plan.s[t], dense_shape=(d, c))
            )
            # [d, c] x [c, M] -> [d, M] -> [M, d], as in the public TF code.
            sketch = tf.transpose(
                tf.sparse.sparse_dense_matmul(sketch_matrix, flat, adjoint_b=True)
            )
            spectrum = tf.signal.fft(tf.complex(sketch, tf.zeros_like(sketch)))
            product = spectrum if product is None else product * spectrum
            if t + 1 in orders:
                per_position = tf.math.real(tf.signal.ifft(product))  # [M, d]
                pooled = tf.reduce_mean(tf.reshape(per_position, (b, h * w, d)), 1)
                blocks.append((t + 1, alpha[t + 1] * pooled))
    high = [v for _, v in sorted((o, v) for o, v in blocks[2:])]
    y = tf.concat(blocks[:2] + high, -1)
    if layer.signed_sqrt:
        y = signed_sqrt(y)
    if layer.l2_normalize:
        y = l2_normalize(y)
    return y


def make_step(forward, variables, upstream, jit):
    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(x)
        grads = tape.gradient(y, [x, *variables], output_gradients=upstream)
        # Return the full output and gradients: nothing can be pruned (a slice or a
        # partial sum would let XLA / Grappler drop work), and no extra pass is added.
        return y, grads

    return step


def build_cases(shape, args):
    mb, h, w, c = shape
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random(shape, dtype=np.float32))
    kp = KernelPooling(order=args.order, dims=args.dims, seed=0)
    kp.build(shape)
    kp.adapt(x.numpy())
    out_dim = 1 + c + (args.order - 1) * args.dims
    cbps = {}
    for method in ("auto", "gram", "fft"):
        cbps[method] = CompactBilinearPooling(dims=args.dims, seed=0, method=method)
        cbps[method].build(shape)
    cbp = cbps["auto"]
    gap = keras.layers.GlobalAveragePooling2D()
    up = lambda n: tf.constant(rng.normal(size=(mb, n)).astype(np.float32))
    m = mb * h * w
    ffts = tf.constant(rng.random((m, args.order, args.dims), dtype=np.float32))
    spec_shape = (m, args.order, args.dims // 2 + 1)
    spec_up = tf.complex(
        tf.constant(rng.normal(size=spec_shape).astype(np.float32)),
        tf.constant(rng.normal(size=spec_shape).astype(np.float32)),
    )

    @tf.function(jit_compile=args.jit)
    def rfft_irfft(z):
        return tf.signal.rfft(z), tf.signal.irfft(spec_up, [args.dims])

    kp_up = up(out_dim)
    cases = {
        "kernel_pooling": (make_step(kp, [kp._alpha], kp_up, args.jit), x),
        "naive": (
            # SparseTensorDenseMatMul has no XLA kernel: the naive form always runs without jit.
            make_step(lambda t: naive_kernel_pooling(t, kp), [kp._alpha], kp_up, False),
            x,
        ),
        "compact_bilinear": (make_step(cbp, [], up(args.dims), args.jit), x),
        "compact_bilinear_gram": (make_step(cbps["gram"], [], up(args.dims), args.jit), x),
        "compact_bilinear_fft": (make_step(cbps["fft"], [], up(args.dims), args.jit), x),
        "global_average": (make_step(gap, [], up(c), args.jit), x),
        "fft_lower_bound": (make_step(tf.signal.rfft, [], spec_up, args.jit), ffts),
        "fft_rfft_irfft": (rfft_irfft, ffts),
    }
    if args.check:
        got = kp(x).numpy()
        ref = naive_kernel_pooling(x, kp).numpy()
        # Signed sqrt maps float32 rounding of near-zero entries (|y| ~ 1e-10) to ~1e-5.
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-4)
        if {"compact_bilinear_gram", "compact_bilinear_fft"} & set(args.cases):
            np.testing.assert_allclose(cbps["gram"](x), cbps["fft"](x), rtol=2e-3, atol=1e-4)
    return {k: v for k, v in cases.items() if k in args.cases}


def _run(step, x):
    out = step(x)
    # Eager execution is synchronous on CPU; reading one element also waits on a GPU.
    first = tf.nest.flatten(out)[0]
    return float(tf.math.real(tf.reshape(first, (-1,))[0]))


def time_cases(cases, steps, args):
    """Wall and process CPU seconds per batch of every case, the cases interleaved.

    Each round runs every case once (a batch = `steps` micro-batches), so a load
    change on a shared machine hits all cases alike; ratios are taken per round.
    """
    for _ in range(args.warmup):
        for step, x in cases.values():
            for _ in range(steps):
                _run(step, x)
    wall = {name: [] for name in cases}
    cpu = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (step, x) in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                _run(step, x)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def _paired_ratio(times, a, b):
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def machine_info(args):
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "jit_compile": args.jit,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
    parser.add_argument("--jit", action="store_true", help="tf.function(jit_compile=True)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--shapes", default="14x14x2048,28x28x512", help="HxWxC,...")
    parser.add_argument("--dims", type=int, default=4096)
    parser.add_argument("--order", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cases", default="all", help="comma-separated case names, or all")
    parser.add_argument("--no-check", dest="check", action="store_false")
    parser.add_argument(
        "--output",
        default=None,
        help="JSON path (default results/kernel_pooling.json, or kernel_pooling_quick.json)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.micro_batch, args.shapes, args.dims = 4, 2, "7x7x64,14x14x32", 256
        args.runs, args.warmup = 2, 1
    if args.output is None:
        name = "kernel_pooling_quick.json" if args.quick else "kernel_pooling.json"
        args.output = os.path.join(RESULTS, name)
    all_cases = [
        "kernel_pooling",
        "naive",
        "compact_bilinear",
        "compact_bilinear_gram",
        "compact_bilinear_fft",
        "global_average",
        "fft_lower_bound",
        "fft_rfft_irfft",
    ]
    args.cases = all_cases if args.cases == "all" else args.cases.split(",")
    if args.batch % args.micro_batch:
        raise ValueError(f"--batch {args.batch} must be a multiple of --micro-batch")
    steps = args.batch // args.micro_batch
    report = {"machine": machine_info(args), "config": vars(args).copy(), "results": []}
    for spec in args.shapes.split(","):
        h, w, c = (int(v) for v in spec.split("x"))
        cases = build_cases((args.micro_batch, h, w, c), args)
        entry = {"shape": [args.batch, h, w, c], "seconds_per_batch": {}, "all_runs": {}}
        wall, cpu = time_cases(cases, steps, args)
        entry["cpu_seconds_per_batch"] = {}
        for name in cases:
            entry["seconds_per_batch"][name] = statistics.median(wall[name])
            entry["cpu_seconds_per_batch"][name] = statistics.median(cpu[name])
            entry["all_runs"][name] = wall[name]
            print(
                f"{spec:>12s} {name:18s} {statistics.median(wall[name]):9.4f} s/batch "
                f"(cpu {statistics.median(cpu[name]):.4f} s)",
                flush=True,
            )
        if "kernel_pooling" in cases:
            # Medians of the per-round ratios (wall and process CPU time).
            if "fft_lower_bound" in cases:
                entry["kernel_pooling_over_lower_bound"] = _paired_ratio(
                    wall, "kernel_pooling", "fft_lower_bound"
                )
                entry["kernel_pooling_over_lower_bound_cpu"] = _paired_ratio(
                    cpu, "kernel_pooling", "fft_lower_bound"
                )
            if "naive" in cases:
                entry["naive_over_kernel_pooling"] = _paired_ratio(wall, "naive", "kernel_pooling")
                entry["naive_over_kernel_pooling_cpu"] = _paired_ratio(
                    cpu, "naive", "kernel_pooling"
                )
        if {"compact_bilinear_gram", "compact_bilinear_fft"} <= set(cases):
            entry["compact_bilinear_fft_over_gram"] = _paired_ratio(
                wall, "compact_bilinear_fft", "compact_bilinear_gram"
            )
            entry["compact_bilinear_fft_over_gram_cpu"] = _paired_ratio(
                cpu, "compact_bilinear_fft", "compact_bilinear_gram"
            )
        report["results"].append(entry)
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    for entry in report["results"]:
        ratios = {k: round(v, 3) for k, v in entry.items() if "_over_" in k}
        print(entry["shape"], ratios)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
