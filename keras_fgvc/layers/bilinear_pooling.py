"""Bilinear pooling baselines of Kernel Pooling (Table 3.1 of Cui's dissertation).

`BilinearPooling`: the full c^2 bilinear vector (Lin et al., ICCV 2015).
`CompactBilinearPooling`: its Tensor Sketch approximation (Gao et al., CVPR 2016),
which is the p = 2 term of `KernelPooling` with the same seed and dims.
"""

import keras
import numpy as np
from keras import ops

from keras_fgvc.layers.count_sketch import (
    SketchPlan,
    gram_cost_is_lower,
    pooled_second_order_sketch,
    pooled_tensor_sketch,
)
from keras_fgvc.layers.normalization import l2_normalize, signed_sqrt

_POOLINGS = ("mean", "sum")
_METHODS = ("auto", "gram", "fft")


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_common(name, pooling):
    if pooling not in _POOLINGS:
        raise ValueError(f"{name}: pooling must be one of {_POOLINGS}, got {pooling!r}")


def _as_positions(x, name):
    """[B, H, W, C] -> [B, H*W, C]; [B, C] -> [B, 1, C]."""
    if len(x.shape) == 4:
        return ops.reshape(x, (ops.shape(x)[0], -1, x.shape[-1]))
    if len(x.shape) == 2:
        return ops.expand_dims(x, 1)
    raise ValueError(f"{name}: input must have rank 4 [B, H, W, C] or rank 2 [B, C], got {x.shape}")


def _check_shape(name, input_shape):
    if len(input_shape) not in (2, 4):
        raise ValueError(
            f"{name}: input must have rank 4 [B, H, W, C] or rank 2 [B, C], "
            f"got shape {tuple(input_shape)}"
        )
    if input_shape[-1] is None:
        raise ValueError(f"{name}: the channel dimension must be known, got {input_shape}")


def _post(y, signed, normalize):
    if signed:
        y = signed_sqrt(y)
    if normalize:
        y = l2_normalize(y)
    return y


@keras.saving.register_keras_serializable(package="keras_fgvc")
class CompactBilinearPooling(keras.layers.Layer):
    """Compact bilinear pooling by Tensor Sketch (Gao et al., CVPR 2016; Table 3.1).

    y = pool_{positions} IFFT(FFT(C_1(x)) o FFT(C_2(x))) (Eq. 3.9 with p = 2),
    so E[y(x).y(x')] = (x.x')^2 for single positions. Uses the same hashes as
    `KernelPooling(order=2, dims=dims, seed=seed)`: its output equals that
    layer's x~(2) block with alpha_2 = 1. Two exact ways to compute it (float32):
    "fft" pools the spectra before one inverse FFT per sample; "gram" sketches
    the pooled second-moment matrix sum_n x_n x_n^T with the pair hash
    (h_1(i) + h_2(j)) mod d, the same function at c^2 per position instead of
    two FFTs of length d (`count_sketch.pooled_second_order_sketch`).

    Args:
        dims: d, the sketch (output) dimension. The FFT path's cost depends on d's
            prime factors: forward + backward on 128 x 7 x 7 x 128 features takes
            5.3 s at d = 12,417 = 3 x 4139 (kernel pooling's dimension, used for
            the matched comparison of Table 3.2) and 2.3 s at d = 12,288 on a
            2-core CPU (`benchmarks/results/kernel_pooling_cbp_d*.json`); the
            "gram" path does not care about d's factors (0.027 s at d = 12,417).
        pooling: "mean" or "sum" over spatial positions.
        signed_sqrt: apply sign(y) sqrt(|y|).
        l2_normalize: L2-normalise the output.
        seed: integer seed of the Count Sketch hashes.
        method: "auto" (default: "gram" where c^2 <= 4 d log2 d, e.g. c = 128
            or 512 at d = 8,192, else "fft", e.g. c = 2048), "gram" or "fft".
            Both give the same output to float32 rounding; only speed and
            memory differ (`benchmarks/kernel_pooling.py --cases
            compact_bilinear_gram,compact_bilinear_fft`).

    Call arguments:
        inputs: [B, H, W, C] (pooled over H x W) or [B, C].

    Returns:
        [B, dims] in the compute dtype.

    Example:

    ```python
    y = CompactBilinearPooling(dims=1024)(np.random.rand(2, 7, 7, 64))  # [2, 1024]
    ```
    """

    def __init__(
        self,
        dims=8192,
        pooling="mean",
        signed_sqrt=True,
        l2_normalize=True,
        seed=0,
        method="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not _is_int(dims) or dims < 1:
            raise ValueError(f"CompactBilinearPooling: dims must be an int >= 1, got {dims!r}")
        _check_common("CompactBilinearPooling", pooling)
        if not _is_int(seed):
            raise ValueError(f"CompactBilinearPooling: seed must be an int, got {seed!r}")
        if method not in _METHODS:
            raise ValueError(
                f"CompactBilinearPooling: method must be one of {_METHODS}, got {method!r}"
            )
        # NumPy integers are accepted (as by KernelPooling) and stored as int (JSON-safe config).
        self.dims = int(dims)
        self.pooling = pooling
        self.signed_sqrt = bool(signed_sqrt)
        self.l2_normalize = bool(l2_normalize)
        self.seed = int(seed)
        self.method = method

    def build(self, input_shape):
        _check_shape("CompactBilinearPooling", input_shape)
        self._plan = SketchPlan(self.seed, 0, input_shape[-1], self.dims, 2)
        use_gram = self.method == "gram" or (
            self.method == "auto" and gram_cost_is_lower(input_shape[-1], self.dims)
        )
        self._method = "gram" if use_gram else "fft"

    def call(self, inputs):
        x = _as_positions(ops.cast(inputs, "float32"), "CompactBilinearPooling")
        if self._method == "gram":
            y = pooled_second_order_sketch(x, self._plan, self.pooling)
        else:
            (y,) = pooled_tensor_sketch(x, self._plan, [2], self.pooling)
        y = _post(y, self.signed_sqrt, self.l2_normalize)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dims)

    def get_config(self):
        config = super().get_config()
        config.update(
            dims=self.dims,
            pooling=self.pooling,
            signed_sqrt=self.signed_sqrt,
            l2_normalize=self.l2_normalize,
            seed=self.seed,
            method=self.method,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_fgvc")
class BilinearPooling(keras.layers.Layer):
    """Full bilinear pooling, y = pool_{positions} x x^T flattened (Lin et al. 2015; Table 3.1).

    The c^2-dimensional explicit feature map of the 2nd order polynomial
    kernel (Eq. 3.3, 3.5): y(x).y(x') = (x.x')^2 for single positions. Computed
    as one batched matrix product X^T X over the positions, in float32.

    Args:
        pooling: "mean" or "sum" over spatial positions.
        signed_sqrt: apply sign(y) sqrt(|y|).
        l2_normalize: L2-normalise the output.

    Call arguments:
        inputs: [B, H, W, C] (pooled over H x W) or [B, C] (x x^T per row).

    Returns:
        [B, C * C] in the compute dtype, row-major (index i * C + j = x_i x_j).

    Example:

    ```python
    y = BilinearPooling()(np.random.rand(2, 7, 7, 64))  # [2, 4096]
    ```
    """

    def __init__(self, pooling="mean", signed_sqrt=True, l2_normalize=True, **kwargs):
        super().__init__(**kwargs)
        _check_common("BilinearPooling", pooling)
        self.pooling = pooling
        self.signed_sqrt = bool(signed_sqrt)
        self.l2_normalize = bool(l2_normalize)

    def build(self, input_shape):
        _check_shape("BilinearPooling", input_shape)

    def call(self, inputs):
        x = _as_positions(ops.cast(inputs, "float32"), "BilinearPooling")
        c = x.shape[-1]
        y = ops.matmul(ops.transpose(x, (0, 2, 1)), x)  # [B, C, C]
        if self.pooling == "mean":
            y = y / ops.cast(ops.shape(x)[1], "float32")
        y = _post(ops.reshape(y, (-1, c * c)), self.signed_sqrt, self.l2_normalize)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] ** 2)

    def get_config(self):
        config = super().get_config()
        config.update(
            pooling=self.pooling, signed_sqrt=self.signed_sqrt, l2_normalize=self.l2_normalize
        )
        return config
