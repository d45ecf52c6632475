"""Count Sketch and Tensor Sketch, shared by `KernelPooling` and `CompactBilinearPooling`.

Count Sketch (Charikar et al. 2002; Eq. 3.8 of Cui's dissertation) maps
x in R^c to C(x) in R^d with c_j = sum_{i: h(i) = j} s(i) x_i. Tensor Sketch
(Pham & Pagh 2013; Eq. 3.9) approximates the i-level tensor product by
x~(i) = IFFT(FFT(C_1(x)) o ... o FFT(C_i(x))); Algorithm 1 builds orders
2..p cumulatively from one chain of sketches C_1..C_p.

Hashes. For sketch t the c input channels are placed into k * d slots,
k = ceil(c / d), by a random injective map (a random permutation of the
slots, first c entries); h_t(i) = slot_t(i) mod d, so every bucket receives
at most k channels (a balanced random hash). s_t(i) is a uniform random sign.
The sketch is unbiased for any h because the signs are independent:
E[<x~(i), y~(i)>] = (x.y)^i. When d >= c (k = 1) the hash is injective and
the sketch is a signed gather from [x, -x, 0]; when d < c it is a gather
followed by a sum over the k slot rows. Its gradient is again a gather
(dx_i = sum_t s_t(i) dC_t[h_t(i)]), written by hand so the backward pass never
scatters (no segment sum). No dense c x d matrix is formed.

`pooled_tensor_sketch` (used by the layers) fuses sketch, FFT, product and
pooling with one hand-written gradient. Outside XLA it gathers whole rows of
the channels-major [c, positions] matrix (a memcpy per index; TensorFlow's
gather of scalars along the last axis is several times slower on CPU), with
the positions ordered n-major (position n of sample b is column n B + b), so
that pooling is one [1, N] x [N, B F] matrix product and the per-sample
factors of the backward pass are row broadcasts (a broadcast over a middle
axis costs about 2.5 full passes on CPU). Under XLA (jit_compile=True), where
transposes are the slow part and gathers along the last axis are fast (and
fuse with the sign multiply and the sum over sketches), it gathers along the
last axis (the same function; tests/layers/test_kernel_pooling.py compares
the two, values and gradients).
`count_sketch` is the same Count Sketch as a standalone keras.ops op.
`pooled_second_order_sketch` computes the pooled order-2 sketch alone (compact
bilinear pooling) without FFTs, from the pooled second-moment matrix, where
that is cheaper (c^2 <= 4 d log2 d).

Hashes come from `seed` through SplitMix64 (a fixed integer hash evaluated in
NumPy uint64 arithmetic), not from a library RNG, so they are identical
across NumPy and TensorFlow versions and a reloaded layer computes the same
function.
"""

import math

import numpy as np
import tensorflow as tf
from keras import ops

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(z):
    """SplitMix64 finaliser, vectorised over a uint64 array."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _random_bits(seed, stream, index, n):
    """n pseudo-random uint64 values for (seed, stream, index)."""
    key = _splitmix64(np.uint64(seed % (1 << 63)))
    with np.errstate(over="ignore"):
        key = _splitmix64(key ^ np.uint64(stream))
        key = _splitmix64(key + np.uint64(index) * np.uint64(0xD1B54A32D192ED03))
        return _splitmix64(key + np.arange(n, dtype=np.uint64))


def sketch_hashes(seed, stream, input_dim, sketch_dim, count):
    """Hash pairs (h_t, s_t), t = 1..count, for Count Sketches R^c -> R^d.

    Args:
        seed: integer seed (kept in the layer config).
        stream: integer naming an independent set of hashes (e.g. one per
            distinct sketch dimension).
        input_dim: c.
        sketch_dim: d.
        count: number of independent hash pairs.

    Returns:
        `(h, s)`: int64 array [count, c] with values in [0, d) and float32 array
        [count, c] of +-1, plus `slots` int64 [count, c] in [0, k * d)
        (h = slots mod d), as a tuple `(h, s, slots)`.
    """
    c, d = int(input_dim), int(sketch_dim)
    k = math.ceil(c / d)
    hs, ss, slots = [], [], []
    for t in range(count):
        # A random permutation of the k * d slots: argsort of distinct random keys
        # (ties broken by index, so the result is fully determined by the keys).
        keys = _random_bits(seed, 2 * stream, t, k * d)
        perm = np.lexsort((np.arange(k * d), keys))
        slot = perm[:c].astype(np.int64)
        sign_bits = _random_bits(seed, 2 * stream + 1, t, c) >> np.uint64(63)
        slots.append(slot)
        hs.append(slot % d)
        ss.append(np.where(sign_bits == 1, 1.0, -1.0).astype(np.float32))
    return np.stack(hs), np.stack(ss), np.stack(slots)


class SketchPlan:
    """Gather indices that compute `count` Count Sketches of one input at once.

    Forward: C = sum_k reshape(take(x, fwd_index) * fwd_sign, [count, k, d]).
    Backward: dx = sum_t s_t * take(dC_t, h_t), i.e. one gather of the
    flattened upstream gradient at `bwd_index` = t * d + h_t.
    """

    def __init__(self, seed, stream, input_dim, sketch_dim, count):
        c, d = int(input_dim), int(sketch_dim)
        self.input_dim, self.sketch_dim, self.count = c, d, int(count)
        self.k = math.ceil(c / d)
        h, s, slots = sketch_hashes(seed, stream, c, d, count)
        self.h, self.s = h, s
        fwd_index = np.zeros((count, self.k * d), np.int32)
        fwd_sign = np.zeros((count, self.k * d), np.float32)
        rows = np.arange(c)
        for t in range(count):
            fwd_index[t, slots[t]] = rows
            fwd_sign[t, slots[t]] = s[t]
        self.fwd_index = fwd_index.reshape(-1)
        self.fwd_sign = fwd_sign.reshape(-1)
        self.bwd_index = (h + d * np.arange(count)[:, None]).astype(np.int32).reshape(-1)
        self.bwd_sign = s.reshape(-1)

    def dense_matrices(self):
        """The sketches as dense [count, c, d] matrices (for tests and references only)."""
        m = np.zeros((self.count, self.input_dim, self.sketch_dim), np.float32)
        for t in range(self.count):
            m[t, np.arange(self.input_dim), self.h[t]] = self.s[t]
        return m


def count_sketch(x, plan):
    """Count Sketches of the last axis of `x` (float32): [..., c] -> [..., count, d].

    A standalone keras.ops version (signed gather forward, gather backward);
    the pooling layers use the fused `pooled_tensor_sketch` instead.
    """
    c, d, count, k = plan.input_dim, plan.sketch_dim, plan.count, plan.k
    fwd_index = ops.convert_to_tensor(plan.fwd_index)
    fwd_sign = ops.convert_to_tensor(plan.fwd_sign)
    bwd_index = ops.convert_to_tensor(plan.bwd_index)
    bwd_sign = ops.convert_to_tensor(plan.bwd_sign)

    @ops.custom_gradient
    def _sketch(x):
        lead = ops.shape(x)[:-1]
        y = ops.take(x, fwd_index, axis=-1) * fwd_sign
        y = ops.reshape(y, (*lead, count, k, d))
        y = y[..., 0, :] if k == 1 else ops.sum(y, axis=-2)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            g = ops.reshape(upstream, (*lead, count * d))
            g = ops.take(g, bwd_index, axis=-1) * bwd_sign
            g = ops.reshape(g, (*lead, count, c))
            return g[..., 0, :] if count == 1 else ops.sum(g, axis=-2)

        return y, grad

    return _sketch(x)


def _in_xla_context():
    """True while tracing for XLA (jit_compile=True), where gathers along the last axis are fast."""
    try:
        from tensorflow.python.ops import control_flow_util  # private, but stable since TF 1.x

        return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    except (ImportError, AttributeError):
        return False


def _frequency_weights(d):
    """w_k with sum_k Re(g_k e^{i 2 pi k n / d}) = d irfft(w o g)_n (the rfft adjoint)."""
    w = np.full(d // 2 + 1, 0.5, np.float32)
    w[0] = 1.0
    if d % 2 == 0:
        w[-1] = 1.0
    return w * d


def pooled_tensor_sketch(x, plan, orders, pooling):
    """Pooled Tensor Sketches x~(i) of every order i in `orders` (Algorithm 1).

    The product of the sketches' spectra is pooled over positions in the
    frequency domain (the inverse FFT is linear), so there is one inverse FFT
    per sample per order instead of one per position.

    This core is written with `tf.*` ops and a hand-written gradient, an
    exception to the keras.ops rule: keras.ops has no complex tensors (its rfft
    returns real/imaginary pairs, tripling the elementwise passes) and the
    autodiff gradient of TF's RFFT adds several full-size passes. The backward
    pass here is, per sketch, one complex product chain, one inverse real FFT
    (the adjoint of the rfft, with the bin weights folded into the small pooled
    upstream gradient and the conjugation turned into an index reversal) and
    one gather back to the channels.

    Args:
        x: float32 [B, N, c] (N spatial positions).
        plan: a `SketchPlan` with at least max(orders) sketches.
        orders: increasing orders (each >= 2 and <= plan.count).
        pooling: "mean" or "sum" over the N positions.

    Returns:
        A list of float32 [B, d] tensors, one per order.
    """
    spectra = _pooled_spectra(x, plan, tuple(orders), pooling)
    return [tf.signal.irfft(m, [plan.sketch_dim]) for m in spectra]


def gram_cost_is_lower(input_dim, sketch_dim):
    """True where `pooled_second_order_sketch` beats the FFT path (c^2 <= 4 d log2 d).

    Both costs grow with the positions: c^2 multiply-adds per position for the
    second-moment matrix against about d log2 d per FFT. Measured on a 2-core CPU
    (forward + backward, `benchmarks/kernel_pooling.py`, results in
    `benchmarks/results/compact_bilinear_methods*.json`): 128 x 7 x 7 x 128 at
    d = 12,417: 66x faster (0.027 vs 1.85 s); 32 x 28 x 28 x 512 at d = 8,192: 7.2x
    faster; 32 x 14 x 14 x 2048 at d = 8,192: 4.3x slower. The crossover lies
    near c^2 = 12 d log2 d; the rule keeps a margin.
    """
    c, d = int(input_dim), int(sketch_dim)
    return c * c <= 4 * d * max(1.0, math.log2(d))


def pooled_second_order_sketch(x, plan, pooling):
    """The pooled Tensor Sketch x~(2) through the pooled second-moment matrix.

    Tensor Sketch of x (x) x is the Count Sketch of the c x c matrix x x^T with
    the pair hash h(i, j) = (h_1(i) + h_2(j)) mod d and sign s_1(i) s_2(j)
    (Pham & Pagh 2013: the FFT product is that circular convolution), and both
    the sketch and the pooling are linear, so

        pool_n IFFT(FFT(C_1(x_n)) o FFT(C_2(x_n))) = CS_h(pool_n x_n x_n^T),

    exactly (up to float rounding), with the same hashes as `pooled_tensor_sketch`.
    It costs c^2 per position instead of two FFTs of length d: see
    `gram_cost_is_lower`. keras.ops only; the gradient of the segment sum is a
    gather.

    Args:
        x: float32 [B, N, c].
        plan: a `SketchPlan` with at least 2 sketches.
        pooling: "mean" or "sum" over the N positions.

    Returns:
        float32 [B, d].
    """
    c, d = plan.input_dim, plan.sketch_dim
    bins = ((plan.h[0][:, None] + plan.h[1][None, :]) % d).reshape(-1).astype(np.int32)
    signs = (plan.s[0][:, None] * plan.s[1][None, :]).reshape(-1)
    moment = ops.einsum("bni,bnj->bij", x, x)  # [B, c, c]
    if pooling == "mean":
        moment = moment / ops.cast(ops.shape(x)[1], moment.dtype)
    flat = ops.reshape(moment, (-1, c * c)) * signs
    return ops.transpose(ops.segment_sum(ops.transpose(flat), bins, num_segments=d))


def _pooled_spectra(x, plan, orders, pooling):
    c, d = plan.input_dim, plan.sketch_dim
    count = max(orders)
    f = d // 2 + 1
    # Backward: dx_i = sum_t s_t(i) irfft(U_t)[(-h_t(i)) mod d].
    bwd = ((-plan.h[:count]) % d).astype(np.int32)
    bwd_sign = plan.s[:count]
    weights = _frequency_weights(d)
    rows = not _in_xla_context()  # see the module docstring

    @tf.custom_gradient
    def spectra_fn(x):
        shape = tf.shape(x)
        batch, n = shape[0], shape[1]
        if rows:
            spectra = _row_spectra(x, plan, count)  # each [N, B F], positions n-major
            # Pool over positions with a [1, N] x [N, B F] matrix product.
            value = 1.0 / tf.cast(n, tf.float32) if pooling == "mean" else tf.constant(1.0)
            ones = tf.fill(tf.stack([1, n]), tf.complex(value, 0.0))

            def reduce(z):
                return tf.reshape(tf.linalg.matmul(ones, z), (-1, f))

        else:
            spectra = _gather_spectra(x, plan, count)  # each [B, N, F]
            mean = tf.reduce_mean if pooling == "mean" else tf.reduce_sum

            def reduce(z):
                return mean(z, axis=1)

        # Algorithm 1, lines 4-7: P_t = P_{t-1} o FFT(C_t(x)), pooled over positions.
        products = {1: spectra[0]}
        pooled = []
        for t in range(2, count + 1):
            products[t] = products[t - 1] * spectra[t - 1]
            if t in orders:
                pooled.append(reduce(products[t]))

        def grad(*upstream):
            scale = tf.constant(weights)
            if pooling == "mean":
                scale = scale / tf.cast(n, tf.float32)
            scale = tf.complex(scale, tf.zeros_like(scale))
            # conj(upstream) * scale per order, broadcast over positions ([1, B F] in the
            # row layout, [B, 1, F] under XLA); unconnected outputs give zeros.
            g = {}
            for t, u in zip(orders, upstream):
                if u is not None:
                    u = tf.math.conj(u) * scale
                    g[t] = tf.reshape(u, (1, -1)) if rows else tf.expand_dims(u, 1)
            # U_t = conj(dL/dFFT(C_t)) = P_{t-1} o sum_{o >= t} g_o prod_{t < j <= o} S_j,
            # the sum built from the highest order down (one product chain, no division).
            backs = {}
            state = g.get(count)
            for t in range(count, 0, -1):
                if state is not None:
                    u_t = state if t == 1 else products[t - 1] * state
                    if rows:
                        u_t = tf.reshape(u_t, (-1, f))
                    backs[t] = tf.signal.irfft(u_t, [d])  # [N B, d] or [B, N, d]
                if t > 1:
                    state = None if state is None else spectra[t - 1] * state
                    if t - 1 in g:
                        state = g[t - 1] if state is None else state + g[t - 1]
            if not backs:
                return tf.zeros_like(x)
            if rows:
                parts = []
                for t, back in backs.items():
                    back = tf.transpose(back)  # [d, N B]
                    parts.append(tf.gather(back, bwd[t - 1], axis=0) * bwd_sign[t - 1][:, None])
                dx = parts[0] if len(parts) == 1 else tf.math.add_n(parts)  # [c, N B]
                return tf.transpose(tf.reshape(dx, tf.stack([c, n, batch])), (2, 1, 0))
            # One gather per sketch, summed: XLA fuses them into one loop (no stacked copy).
            parts = [tf.gather(b, bwd[t - 1], axis=-1) * bwd_sign[t - 1] for t, b in backs.items()]
            return parts[0] if len(parts) == 1 else tf.math.add_n(parts)

        return pooled, grad

    return spectra_fn(x)


def _row_spectra(x, plan, count):
    """Spectra of the first `count` sketches of x [B, N, c], each [N, B F] (positions n-major).

    Gathers whole rows of the channels-major [2c + 1, N B] matrix [x; -x; 0] (the
    sign folded into the index), transposes each sketch to the rows rfft wants.
    The n-major position order makes the per-sample factors of the backward pass
    row broadcasts ([1, B F] against [N, B F]), twice as fast as a broadcast over
    a middle axis.
    """
    c, d, k = plan.input_dim, plan.sketch_dim, plan.k
    fwd = np.where(plan.fwd_sign > 0, plan.fwd_index, plan.fwd_index + c)
    fwd = np.where(plan.fwd_sign == 0, 2 * c, fwd).reshape(plan.count, k * d)
    n = tf.shape(x)[1]
    xt = tf.reshape(tf.transpose(x, (2, 1, 0)), (c, -1))  # [c, N B]
    xx = tf.concat([xt, -xt, tf.zeros_like(xt[:1])], axis=0)  # [2c + 1, N B]
    spectra = []
    for t in range(count):
        sketch = tf.gather(xx, fwd[t], axis=0)  # [k d, N B]
        if k > 1:
            sketch = tf.reduce_sum(tf.reshape(sketch, (k, d, -1)), 0)
        spectrum = tf.signal.rfft(tf.transpose(sketch), [d])  # [N B, F]
        spectra.append(tf.reshape(spectrum, tf.stack([n, -1])))
    return spectra


def _gather_spectra(x, plan, count):
    """Spectra of the first `count` sketches of x [B, N, c], each [B, N, F] (for XLA).

    One gather along the last axis for all sketches, with the sign applied by a
    multiply that XLA fuses into the gather (no [x, -x, 0] copy).
    """
    d, k = plan.sketch_dim, plan.k
    index = plan.fwd_index.reshape(plan.count, k * d)[:count].reshape(-1)
    sign = plan.fwd_sign.reshape(plan.count, k * d)[:count].reshape(-1)
    sketch = tf.gather(x, index, axis=-1) * sign  # [B, N, count k d]
    sketch = tf.reshape(sketch, tf.concat([tf.shape(x)[:-1], [count, k, d]], 0))
    sketch = sketch[..., 0, :] if k == 1 else tf.reduce_sum(sketch, -2)
    all_spectra = tf.signal.rfft(sketch, [d])  # [B, N, count, F]
    return [all_spectra[..., t, :] for t in range(count)]
