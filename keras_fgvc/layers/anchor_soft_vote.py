"""Soft voting over learnable anchor points (Cui et al., CVPR 2016; dissertation Eq. 2.3)."""

import math
import numbers

import keras
import numpy as np
from keras import ops

_OUTPUTS = ("log_probabilities", "probabilities")


@keras.saving.register_keras_serializable(package="keras_fgvc")
class AnchorSoftVote(keras.layers.Layer):
    """Class scores by soft voting over K learnable anchor points per class.

    Deep metric learning with anchor points (Cui et al., CVPR 2016;
    dissertation Sec. 2.3.4-2.3.5, Eq. 2.3). With anchors u_ij (class i,
    anchor j) and an embedding f(x):

        p_i = sum_j exp(-gamma ||f(x) - u_ij||^2)
              / sum_l sum_j exp(-gamma ||f(x) - u_lj||^2)

    The distance is the squared Euclidean distance and the anchors are used
    as they are (not normalised), as in Eq. 2.3; the embedding is expected to
    be L2-normalised already (the metric-learning head does it). Large gamma
    approaches a hard nearest-anchor assignment, gamma -> 0 a uniform vote.
    The computation is done in float32 as log-sum-exps, so log-probabilities
    stay finite for very large gamma. The anchors are trainable (Sec. 2.3.5,
    Eq. 2.4 trains them through -log p_y); `init_from_embeddings` sets them by
    per-class k-means (Sec. 2.3.4).

    Args:
        num_classes: number of classes N (>= 1).
        anchors_per_class: anchors per class K (default 3).
        gamma: softness gamma > 0 (default 5.0).
        output: "log_probabilities" (default; log p_i) or "probabilities" (p_i).
        anchors_initializer: initializer for the anchors [N, K, D]; default
            (None) a normal with stddev 1/sqrt(D), i.e. anchors of norm ~1.
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: L2-normalised embeddings [B, D].

    Returns:
        [B, num_classes] log-probabilities or probabilities (compute dtype).

    Example:
    >>> layer = AnchorSoftVote(num_classes=10, anchors_per_class=3, gamma=5.0)
    >>> log_p = layer(embeddings)                     # [B, 10]
    >>> layer.init_from_embeddings(train_embeddings, train_labels, seed=0)
    """

    def __init__(
        self,
        num_classes,
        anchors_per_class=3,
        gamma=5.0,
        output="log_probabilities",
        anchors_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
            raise ValueError(f"`num_classes` must be an int >= 1. Received: {num_classes!r}")
        if num_classes < 1:
            raise ValueError(f"`num_classes` must be an int >= 1. Received: {num_classes!r}")
        if (
            isinstance(anchors_per_class, bool)
            or not isinstance(anchors_per_class, numbers.Integral)
            or anchors_per_class < 1
        ):
            raise ValueError(
                f"`anchors_per_class` must be an int >= 1. Received: {anchors_per_class!r}"
            )
        if (
            isinstance(gamma, bool)
            or not isinstance(gamma, numbers.Real)
            or not math.isfinite(gamma)
            or gamma <= 0
        ):
            raise ValueError(f"`gamma` must be a finite number > 0. Received: {gamma!r}")
        if output not in _OUTPUTS:
            raise ValueError(f"`output` must be one of {_OUTPUTS}. Received: {output!r}")
        self.num_classes = int(num_classes)
        self.anchors_per_class = int(anchors_per_class)
        self.gamma = float(gamma)
        # `Layer.output` is a Keras property, so the argument is kept as `output_mode`.
        self.output_mode = output
        self.anchors_initializer = (
            None if anchors_initializer is None else keras.initializers.get(anchors_initializer)
        )

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                "AnchorSoftVote expects embeddings of shape [B, D] with D known. "
                f"Received input_shape={input_shape}"
            )
        dim = int(input_shape[-1])
        initializer = self.anchors_initializer or keras.initializers.RandomNormal(
            stddev=1.0 / math.sqrt(dim)
        )
        # Kept in float32 and not autocast: the distances are float32 math.
        self.anchors = self.add_weight(
            name="anchors",
            shape=(self.num_classes, self.anchors_per_class, dim),
            initializer=initializer,
            dtype="float32",
            autocast=False,
        )
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, "float32")  # [B, D]
        anchors = ops.cast(self.anchors, "float32")
        flat = ops.reshape(anchors, (-1, anchors.shape[-1]))  # [N*K, D]
        # ||x - u||^2 = ||x||^2 - 2 x.u + ||u||^2, clipped at 0 against round-off.
        sq = (
            ops.sum(ops.square(x), axis=-1, keepdims=True)
            - 2.0 * ops.matmul(x, ops.transpose(flat))
            + ops.sum(ops.square(flat), axis=-1)[None, :]
        )
        sq = ops.maximum(sq, 0.0)
        votes = ops.reshape(-self.gamma * sq, (-1, self.num_classes, self.anchors_per_class))
        class_scores = ops.logsumexp(votes, axis=-1)  # [B, N]
        log_p = class_scores - ops.logsumexp(class_scores, axis=-1, keepdims=True)
        out = log_p if self.output_mode == "log_probabilities" else ops.exp(log_p)
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def init_from_embeddings(
        self, embeddings, labels, seed=0, max_iterations=100, keep_missing=False
    ):
        """Set the anchors to per-class k-means centres (Sec. 2.3.4).

        For each class i, runs seeded k-means (k-means++ start, Lloyd
        iterations) with K = `anchors_per_class` on that class' embeddings.
        A class with fewer than K distinct embeddings gets all of them, then
        repeats of them with a small jitter (1e-3 of the embeddings' RMS).

        Args:
            embeddings: array [n, D] (the model's embeddings of training data).
            labels: int array [n], values in [0, num_classes).
            seed: seed of the k-means starts and jitter.
            max_iterations: Lloyd iterations at most per class.
            keep_missing: if True, a class with no embedding keeps its current
                anchors instead of raising (e.g. when refreshing anchors from
                a subset of a long-tailed training set).

        Returns:
            The anchors set, a float32 NumPy array [num_classes, K, D].

        Raises:
            ValueError: on a shape mismatch, non-finite embeddings, labels
                outside [0, num_classes), or a class with no embedding (unless
                `keep_missing`).
        """
        x = np.asarray(keras.ops.convert_to_numpy(embeddings), dtype=np.float64)
        y = np.asarray(keras.ops.convert_to_numpy(labels))
        if x.ndim != 2:
            raise ValueError(f"`embeddings` must be [n, D]. Received shape={x.shape}")
        if y.shape != (x.shape[0],):
            raise ValueError(
                f"`labels` must be [n] with n = {x.shape[0]} (embeddings). Received shape={y.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("`embeddings` contains NaN or infinite values.")
        if y.size and (not np.all(np.equal(np.mod(y, 1), 0))):
            raise ValueError(f"`labels` must be integers. Received values like {y[:5]}")
        y = y.astype(np.int64)
        bad = y[(y < 0) | (y >= self.num_classes)]
        if bad.size:
            raise ValueError(f"`labels` must be in [0, {self.num_classes}). Received e.g. {bad[0]}")
        empty = [c for c in range(self.num_classes) if not np.any(y == c)]
        if empty and not keep_missing:
            raise ValueError(f"Cannot initialise anchors: classes {empty[:20]} have no embeddings.")
        if not self.built:
            self.build((None, x.shape[1]))
        if self.anchors.shape[-1] != x.shape[1]:
            raise ValueError(
                f"`embeddings` have D={x.shape[1]} but the layer was built for "
                f"D={self.anchors.shape[-1]}."
            )
        rng = np.random.default_rng(seed)
        jitter = 1e-3 * max(float(np.sqrt(np.mean(np.square(x)))), 1e-12)
        centres = np.array(keras.ops.convert_to_numpy(self.anchors), np.float32)
        for c in range(self.num_classes):
            if c not in empty:
                centres[c] = kmeans(x[y == c], self.anchors_per_class, rng, max_iterations, jitter)
        self.anchors.assign(centres)
        return centres

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "anchors_per_class": self.anchors_per_class,
                "gamma": self.gamma,
                "output": self.output_mode,
                "anchors_initializer": (
                    None
                    if self.anchors_initializer is None
                    else keras.initializers.serialize(self.anchors_initializer)
                ),
            }
        )
        return config


def kmeans(points, k, rng, max_iterations=100, jitter=1e-3):
    """Seeded k-means (k-means++ start, Lloyd iterations) in NumPy.

    Args:
        points: float array [n, D], n >= 1.
        k: number of centres.
        rng: a `np.random.Generator`.
        max_iterations: Lloyd iterations at most.
        jitter: scale of the noise added to repeated points when there are
            fewer than k distinct points.

    Returns:
        float64 array [k, D] of centres.
    """
    points = np.asarray(points, dtype=np.float64)
    distinct = np.unique(points, axis=0)
    if len(distinct) <= k:
        # Every distinct point is a centre; fill the rest with jittered repeats.
        extra = k - len(distinct)
        repeats = distinct[np.arange(extra) % len(distinct)]
        repeats = repeats + jitter * rng.standard_normal(repeats.shape)
        return np.concatenate([distinct, repeats], axis=0)

    # k-means++ seeding.
    centres = [points[rng.integers(len(points))]]
    closest = np.sum(np.square(points - centres[0]), axis=1)
    for _ in range(1, k):
        total = closest.sum()
        probs = closest / total if total > 0 else None
        centre = points[rng.choice(len(points), p=probs)]
        centres.append(centre)
        closest = np.minimum(closest, np.sum(np.square(points - centre), axis=1))
    centres = np.stack(centres)

    assignment = None
    for _ in range(max_iterations):
        d2 = np.sum(np.square(points[:, None, :] - centres[None, :, :]), axis=-1)
        new_assignment = np.argmin(d2, axis=1)
        if assignment is not None and np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for j in range(k):
            members = points[assignment == j]
            if len(members):
                centres[j] = members.mean(axis=0)
            else:  # empty cluster: move it to the point farthest from its centre
                far = np.argmax(d2[np.arange(len(points)), assignment])
                centres[j] = points[far]
    return centres
