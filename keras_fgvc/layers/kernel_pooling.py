"""Kernel Pooling (Cui et al., CVPR 2017; Ch. 3 of Cui's dissertation, Algorithm 1)."""

import math

import keras
import numpy as np
from keras import ops

from keras_fgvc.layers.count_sketch import SketchPlan, pooled_tensor_sketch
from keras_fgvc.layers.normalization import l2_normalize, signed_sqrt

_POOLINGS = ("mean", "sum")


def rbf_coefficients(order, gamma, beta=1.0):
    """alpha_i = sqrt(beta (2 gamma)^i / i!), i = 0..order (Eq. 3.11)."""
    return [math.sqrt(beta * (2.0 * gamma) ** i / math.factorial(i)) for i in range(order + 1)]


def mean_inner_product(sample):
    """Mean inner product <x, y> over pairs of distinct feature vectors of `sample`.

    `sample` is [N, C] or [N, H, W, C]; every spatial position is a feature
    vector. Computed exactly in float64 as (||sum x||^2 - sum ||x||^2) / (M (M - 1)).
    """
    x = np.asarray(keras.ops.convert_to_numpy(sample), dtype=np.float64)
    if x.ndim not in (2, 4):
        raise ValueError(f"adapt: sample must have rank 2 or 4, got shape {x.shape}")
    x = x.reshape(-1, x.shape[-1])
    m = len(x)
    if m == 0:
        raise ValueError("adapt: sample is empty")
    if m == 1:
        return float(x[0] @ x[0])
    total = x.sum(axis=0)
    return float((total @ total - np.einsum("ij,ij->", x, x)) / (m * (m - 1)))


@keras.saving.register_keras_serializable(package="keras_fgvc")
class KernelPooling(keras.layers.Layer):
    """Kernel Pooling: a compact explicit feature map of a Taylor series kernel, pooled.

    Cui, Zhou, Wang, Liu, Lin, Belongie, "Kernel Pooling for Convolutional
    Neural Networks", CVPR 2017 (Algorithm 1, Eq. 3.6-3.11 of Cui's
    dissertation). Each C-dimensional feature vector x is mapped to (Eq. 3.7)

        phi(x) = [alpha_0, alpha_1 x, alpha_2 x~(2), ..., alpha_p x~(p)]

    of size 1 + C + sum_i d_i, where x~(i) is the Tensor Sketch of the
    i-level tensor product (Eq. 3.9), so that
    E[phi(x).phi(y)] = sum_i alpha_i^2 (x.y)^i (Eq. 3.6). phi is pooled over
    the H x W positions (mean or sum), then signed square root and L2
    normalisation are applied (Sec. 3.3.1).

    Implementation: the p Count Sketches are one gather over channels (see
    `count_sketch.py`; no dense C x d matrix), their real FFTs are multiplied
    cumulatively (Algorithm 1, lines 4-7), the products are pooled in the
    frequency domain and each order gets one inverse real FFT per sample (the
    inverse FFT is linear). FFT math is float32 whatever the dtype policy.

    Hashes: when all d_i are equal, orders share one chain of sketches
    C_1..C_p as in Algorithm 1 (x~(i) uses C_1..C_i). When `dims` holds
    different values, each distinct d gets its own independent chain of hash
    pairs, long enough for the highest order using that d; orders with equal d
    share their chain. Hashes are derived from `seed`, so a reloaded layer
    computes the same function.

    Coefficients: "rbf" sets alpha_i^2 = beta (2 gamma)^i / i! (Eq. 3.11) with
    beta = 1. The paper's beta = exp(-gamma (|x|^2 + |y|^2)) depends on the pair
    and cannot be folded into constant coefficients; beta = 1 keeps alpha_0 = 1
    and, with gamma from `adapt` (gamma = 1 / mean x.y), makes the terms at a
    typical pair (2^i / i!) of order one. A global beta only rescales phi, which
    the default L2 normalisation removes. If `gamma` is None and `adapt` has not
    been called when the layer is built, gamma = 1 / C is used (x.y = O(1) for
    unit-scale features); `adapt(sample)` later sets gamma and resets the
    coefficients. With `trainable_coefficients=True` alpha is learned end to
    end (Sec. 3.2.3).

    Args:
        order: p >= 1, the highest order of the Taylor series kernel.
        dims: d_i for orders 2..p: an int (the same for all orders) or a list of
            p - 1 ints.
        coefficients: "rbf", or a list of p + 1 floats alpha_0..alpha_p.
        gamma: positive float for the "rbf" coefficients, or None to estimate
            it with `adapt`.
        trainable_coefficients: learn alpha by back-propagation.
        pooling: "mean" or "sum" over spatial positions.
        signed_sqrt: apply sign(y) sqrt(|y|) to the pooled vector.
        l2_normalize: L2-normalise the (signed square rooted) pooled vector.
        seed: integer seed of the Count Sketch hashes.

    Call arguments:
        inputs: [B, H, W, C] (pooled over H x W) or [B, C] (phi of each row).

    Returns:
        [B, 1 + C + sum(d_i)] in the layer's compute dtype.

    Example:

    ```python
    features = np.random.rand(8, 7, 7, 64).astype("float32")
    pool = KernelPooling(order=3, dims=512)
    pool.adapt(features)  # gamma = 1 / mean inner product; RBF coefficients
    y = pool(features)  # [8, 1 + 64 + 2 * 512]
    ```
    """

    def __init__(
        self,
        order=4,
        dims=4096,
        coefficients="rbf",
        gamma=None,
        trainable_coefficients=True,
        pooling="mean",
        signed_sqrt=True,
        l2_normalize=True,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not _is_int(order) or order < 1:
            raise ValueError(f"KernelPooling: order must be an int >= 1, got {order!r}")
        order = int(order)
        if _is_int(dims):
            dims_list = [int(dims)] * (order - 1)
        elif isinstance(dims, (list, tuple)) and all(_is_int(d) for d in dims):
            dims_list = [int(d) for d in dims]
            if len(dims_list) != order - 1:
                raise ValueError(
                    f"KernelPooling: dims must be an int or a list of order - 1 = {order - 1} "
                    f"ints (orders 2..{order}), got {dims!r}"
                )
            dims = dims_list
        else:
            raise ValueError(f"KernelPooling: dims must be an int or a list of ints, got {dims!r}")
        if any(d < 1 for d in dims_list) or (_is_int(dims) and dims < 1):
            raise ValueError(f"KernelPooling: dims must be >= 1, got {dims!r}")
        if isinstance(coefficients, str):
            if coefficients != "rbf":
                raise ValueError(
                    f'KernelPooling: coefficients must be "rbf" or a list of {order + 1} '
                    f"floats, got {coefficients!r}"
                )
        elif (
            isinstance(coefficients, (list, tuple, np.ndarray))
            and len(coefficients) == order + 1
            and all(_is_real(a) and math.isfinite(a) for a in coefficients)
        ):
            coefficients = [float(a) for a in coefficients]
        else:
            raise ValueError(
                f'KernelPooling: coefficients must be "rbf" or a list of order + 1 = '
                f"{order + 1} finite floats, got {coefficients!r}"
            )
        if gamma is not None:
            if not _is_real(gamma) or not (math.isfinite(gamma) and gamma > 0):
                raise ValueError(
                    f"KernelPooling: gamma must be a positive float or None, got {gamma!r}"
                )
            gamma = float(gamma)
        if pooling not in _POOLINGS:
            raise ValueError(f"KernelPooling: pooling must be one of {_POOLINGS}, got {pooling!r}")
        if not _is_int(seed):
            raise ValueError(f"KernelPooling: seed must be an int, got {seed!r}")
        self.order = order
        self.dims = dims
        self.coefficients_init = coefficients
        self.gamma = gamma
        self.trainable_coefficients = bool(trainable_coefficients)
        self.pooling = pooling
        self.signed_sqrt = bool(signed_sqrt)
        self.l2_normalize = bool(l2_normalize)
        self.seed = int(seed)
        self._dims_list = dims_list
        self._channels = None

    # --- coefficients -----------------------------------------------------------------

    def _initial_coefficients(self, channels):
        if self.coefficients_init != "rbf":
            return list(self.coefficients_init)
        gamma = self.gamma if self.gamma is not None else 1.0 / channels
        return rbf_coefficients(self.order, gamma)

    @property
    def coefficients(self):
        """alpha_0..alpha_p as a NumPy float32 array (None before build for "rbf" without gamma)."""
        if self.built:
            return keras.ops.convert_to_numpy(self._alpha)
        if self.coefficients_init == "rbf" and self.gamma is None:
            return None
        return np.asarray(self._initial_coefficients(None), np.float32)

    def adapt(self, sample):
        """Set gamma = 1 / mean inner product of the feature vectors in `sample` (Sec. 3.3.2).

        Resets the "rbf" coefficients to the new gamma (also when the layer is
        already built or trained). `sample` is a [N, H, W, C] or [N, C] array.
        """
        if self.coefficients_init != "rbf":
            raise ValueError(
                "KernelPooling.adapt estimates gamma for coefficients='rbf'; this layer has "
                f"explicit coefficients {self.coefficients_init}"
            )
        mean = mean_inner_product(sample)
        if not (math.isfinite(mean) and mean > 0):
            raise ValueError(
                f"KernelPooling.adapt: the mean inner product of the sample is {mean}; "
                "gamma = 1 / mean needs a positive value (e.g. non-negative ReLU features)"
            )
        self.gamma = 1.0 / mean
        if self.built:
            self._alpha.assign(np.asarray(rbf_coefficients(self.order, self.gamma), np.float32))

    # --- layer ------------------------------------------------------------------------

    def build(self, input_shape):
        if len(input_shape) not in (2, 4):
            raise ValueError(
                f"KernelPooling: input must have rank 4 [B, H, W, C] or rank 2 [B, C], "
                f"got shape {tuple(input_shape)}"
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"KernelPooling: the channel dimension must be known, got {input_shape}"
            )
        self._channels = int(channels)
        self._alpha = self.add_weight(
            name="coefficients",
            shape=(self.order + 1,),
            initializer=keras.initializers.Constant(self._initial_coefficients(self._channels)),
            trainable=self.trainable_coefficients,
            dtype="float32",
            autocast=False,
        )
        # One sketch chain per distinct d (stream = its rank among the distinct dims).
        self._groups = []
        for stream, d in enumerate(sorted(set(self._dims_list))):
            orders = [i for i, di in enumerate(self._dims_list, start=2) if di == d]
            plan = SketchPlan(self.seed, stream, self._channels, d, max(orders))
            self._groups.append((orders, plan))

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if len(x.shape) == 4:
            x = ops.reshape(x, (ops.shape(x)[0], -1, self._channels))
        else:
            x = ops.expand_dims(x, 1)
        alpha = self._alpha
        reduce = ops.mean if self.pooling == "mean" else ops.sum
        constant = ops.ones_like(x[:, 0, :1])
        if self.pooling == "sum":
            constant = constant * ops.cast(ops.shape(x)[1], "float32")
        terms = {0: constant, 1: reduce(x, axis=1)}
        for orders, plan in self._groups:
            for i, y in zip(orders, pooled_tensor_sketch(x, plan, orders, self.pooling)):
                terms[i] = y
        y = ops.concatenate([alpha[i] * terms[i] for i in range(self.order + 1)], axis=-1)
        if self.signed_sqrt:
            y = signed_sqrt(y)
        if self.l2_normalize:
            y = l2_normalize(y)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1 + input_shape[-1] + sum(self._dims_list))

    def get_config(self):
        config = super().get_config()
        config.update(
            order=self.order,
            dims=self.dims,
            coefficients=self.coefficients_init,
            gamma=self.gamma,
            trainable_coefficients=self.trainable_coefficients,
            pooling=self.pooling,
            signed_sqrt=self.signed_sqrt,
            l2_normalize=self.l2_normalize,
            seed=self.seed,
        )
        return config


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
