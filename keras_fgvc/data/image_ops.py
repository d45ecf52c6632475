"""Per-image preprocessing ops for the tf.data pipeline (graph-safe, XLA-free).

Training crops follow Inception (Szegedy et al.; dissertation Ch. 4: "randomly
cropped ... and re-sized to the target input size with scale and aspect ratio
augmentation"); evaluation takes a centre crop and resizes ("the original image
is center cropped and re-sized"). Outputs are float32 in [0, 255]: every
keras_fgvc model normalises inside.
"""

import tensorflow as tf

INCEPTION_SCALE = (0.08, 1.0)
INCEPTION_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def decode_image(image_bytes, channels=3):
    """Decodes JPEG / PNG / GIF (first frame) / BMP / WebP bytes to uint8 [H, W, channels].

    Grayscale files become RGB with ``channels=3`` and RGB files grayscale with
    ``channels=1``. Raises `tf.errors.InvalidArgumentError` on corrupt data
    (the pipeline drops and counts such images).

    Example:
        >>> decode_image(tf.io.encode_png(tf.zeros([4, 5, 1], tf.uint8))).shape
        TensorShape([4, 5, 3])
    """
    if channels == 1:
        # TF's BMP, GIF and WebP decoders only give colour: decode those as RGB and make
        # them grey as `ensure_channels` does (JPEG and PNG keep the decoder's conversion).
        header = tf.strings.substr(image_bytes, 0, 4)
        colour_only = tf.logical_or(
            tf.logical_or(tf.equal(tf.strings.substr(header, 0, 2), b"BM"),
                          tf.equal(tf.strings.substr(header, 0, 3), b"GIF")),
            tf.equal(header, b"RIFF"))
        image = tf.cond(
            colour_only,
            lambda: ensure_channels(_decode(image_bytes, 3), 1),
            lambda: _decode(image_bytes, 1))
    else:
        image = _decode(image_bytes, channels)
    image.set_shape([None, None, channels])
    return image


def _decode(image_bytes, channels):
    image = tf.io.decode_image(image_bytes, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def ensure_channels(image, channels):
    """An in-memory image [H, W] or [H, W, C] as [H, W, channels] (gray <-> RGB)."""
    if image.shape.rank == 2:
        image = image[..., None]
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        dtype = image.dtype
        gray = tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))
        return tf.cast(tf.round(gray), dtype) if dtype.is_integer else gray
    raise ValueError(f"Cannot convert an image with {have} channels to {channels}.")


def _size(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def resize(image, size, method="bilinear", antialias=False):
    """`tf.image.resize` to `size` (int or (H, W)); float32 output in the input's range."""
    return tf.image.resize(tf.cast(image, tf.float32), _size(size), method=method,
                           antialias=antialias)


def sample_crop_box(image_shape, seed, scale=INCEPTION_SCALE, ratio=INCEPTION_RATIO):
    """The Inception crop box: area in `scale` x image area, width / height in `ratio`.

    Areas and aspect ratios are in pixels of the original image (a 0.75..1.33
    ratio range gives near-square crops of a wide image too). When no box
    satisfies both ranges in 10 attempts the whole image is returned.

    Args:
        image_shape: int32 [3] ``(H, W, C)``.
        seed: int32/int64 [2] stateless seed.
        scale: (min, max) crop area as a fraction of the image, within (0, 1].
        ratio: (min, max) crop width / height, positive.

    Returns:
        (begin, size): int32 [3] each, for `tf.slice`.
    """
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}.")
    if not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {tuple(ratio)}.")
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


def random_resized_crop(image, size, seed, scale=INCEPTION_SCALE, ratio=INCEPTION_RATIO):
    """A random crop of area `scale` and aspect ratio `ratio`, resized to `size`.

    Args:
        image: [H, W, C] image, any dtype.
        size: output size, int or (H, W).
        seed: int32/int64 [2] stateless seed (same seed, same crop).
        scale: (min, max) crop area as a fraction of the image.
        ratio: (min, max) crop width / height.

    Returns:
        float32 [size, size, C], the `sample_crop_box` crop resized. When no
        crop satisfies the ranges in 10 attempts the whole image is used.
    """
    begin, crop = sample_crop_box(tf.shape(image), seed, scale, ratio)
    # tf.slice with a tensor size loses the static channel count, which the models'
    # input normalisation needs (3 channels for ImageNet backbones): restore it.
    cropped = tf.ensure_shape(tf.slice(image, begin, crop), [None, None, image.shape[-1]])
    return resize(cropped, size)


def center_crop(image, crop_fraction=0.875):
    """The centred square of side ``floor(crop_fraction * min(H, W))`` (at least 1 pixel).

    Args:
        image: [H, W, C] image, or a batch [B, H, W, C] of one size.
        crop_fraction: in (0, 1]; 1.0 takes the largest centred square.

    Returns:
        The crop, same dtype and rank as `image`.
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}.")
    shape = tf.shape(image)
    h, w = shape[-3], shape[-2]
    side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * crop_fraction, tf.int32)
    side = tf.maximum(side, 1)
    top, left = (h - side) // 2, (w - side) // 2
    return image[..., top:top + side, left:left + side, :]


def center_crop_resize(image, size, crop_fraction=0.875):
    """`center_crop`, resized bilinearly to `size` (int or (H, W)): float32 [size, size, C]."""
    return resize(center_crop(image, crop_fraction), size)


def random_flip(image, seed):
    """Horizontal flip with probability 1/2 (stateless: same seed, same flip)."""
    return tf.image.stateless_random_flip_left_right(image, seed=seed)
