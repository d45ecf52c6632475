"""Per-image ops, each checked eagerly and inside tf.data.Dataset.map."""

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.data import image_ops


def _eager_and_mapped(fn, *inputs):
    eager = fn(*inputs)
    ds = tf.data.Dataset.from_tensors(tuple(inputs)).map(lambda *a: fn(*a))
    mapped = next(iter(ds))
    return eager.numpy(), mapped.numpy()


def _ramp(h, w, c):
    return (np.arange(h * w * c) % 251).reshape(h, w, c).astype(np.uint8)


@pytest.mark.parametrize("encode", [tf.io.encode_png, tf.io.encode_jpeg])
@pytest.mark.parametrize("source_channels,channels", [(1, 1), (1, 3), (3, 3), (3, 1)])
def test_decode_image(encode, source_channels, channels):
    image = _ramp(7, 9, source_channels)
    data = encode(image)
    eager, mapped = _eager_and_mapped(lambda b: image_ops.decode_image(b, channels), data)
    assert eager.shape == (7, 9, channels) and eager.dtype == np.uint8
    np.testing.assert_array_equal(eager, mapped)
    if encode is tf.io.encode_png:  # lossless: exact values
        if source_channels == channels:
            np.testing.assert_array_equal(eager, image)
        elif channels == 3:
            np.testing.assert_array_equal(eager, np.repeat(image, 3, axis=-1))


def test_decode_garbage_raises():
    with pytest.raises(tf.errors.InvalidArgumentError):
        image_ops.decode_image(tf.constant(b"not an image"))


def test_ensure_channels():
    gray = _ramp(3, 4, 1)
    np.testing.assert_array_equal(image_ops.ensure_channels(tf.constant(gray[..., 0]), 1), gray)
    rgb = image_ops.ensure_channels(tf.constant(gray), 3).numpy()
    np.testing.assert_array_equal(rgb, np.repeat(gray, 3, -1))
    back = image_ops.ensure_channels(tf.constant(rgb), 1).numpy()
    np.testing.assert_array_equal(back, gray)  # gray -> RGB -> gray is the identity
    with pytest.raises(ValueError, match="4 channels"):
        image_ops.ensure_channels(tf.zeros([2, 2, 4]), 3)


def test_center_crop_resize_matches_numpy():
    image = _ramp(8, 12, 3)
    fn = lambda x: image_ops.center_crop_resize(x, 4, crop_fraction=0.5)
    eager, mapped = _eager_and_mapped(fn, tf.constant(image))
    # side = 0.5 * min(8, 12) = 4, top = 2, left = 4; a 4 -> 4 resize is the identity.
    np.testing.assert_allclose(eager, image[2:6, 4:8].astype(np.float32))
    np.testing.assert_allclose(eager, mapped)
    full = image_ops.center_crop_resize(tf.constant(image), 8, crop_fraction=1.0).numpy()
    np.testing.assert_allclose(full, image[:, 2:10].astype(np.float32))
    assert full.dtype == np.float32
    with pytest.raises(ValueError, match="crop_fraction"):
        image_ops.center_crop_resize(tf.constant(image), 4, crop_fraction=0.0)


def test_resize_keeps_the_value_range():
    image = np.full((5, 7, 1), 255, np.uint8)
    out = image_ops.resize(tf.constant(image), (10, 3)).numpy()
    assert out.shape == (10, 3, 1)
    np.testing.assert_allclose(out, 255.0)


def test_random_resized_crop_is_seeded_and_within_ranges():
    image = _ramp(40, 40, 3)
    seed = tf.constant([1, 2], tf.int64)
    fn = lambda x, s: image_ops.random_resized_crop(x, 16, s, scale=(0.25, 0.5))
    eager, mapped = _eager_and_mapped(fn, tf.constant(image), seed)
    assert eager.shape == (16, 16, 3) and eager.dtype == np.float32
    np.testing.assert_allclose(eager, mapped)  # same seed, same crop
    other = fn(tf.constant(image), tf.constant([3, 4], tf.int64)).numpy()
    assert not np.allclose(eager, other)

def test_crop_box_semantics_are_inception_style_in_pixels():
    # A wide 40x160 image: the crop's area is within `scale` of the image area and
    # its width / height (in pixels) within `ratio`, as Inception / torchvision do.
    areas, ratios = [], []
    for s in range(60):
        begin, size = image_ops.sample_crop_box(tf.constant([40, 160, 3]), tf.constant([s, 1]))
        (top, left, _), (h, w, c) = begin.numpy(), size.numpy()
        assert c == -1 and 0 <= top and top + h <= 40 and 0 <= left and left + w <= 160  # -1: all
        areas.append(h * w / 6400)
        ratios.append(w / h)
    assert min(areas) >= 0.08 - 0.01 and max(areas) <= 1.0
    assert min(ratios) >= 0.75 - 0.05 and max(ratios) <= 4 / 3 + 0.05
    assert max(areas) - min(areas) > 0.1 and max(ratios) - min(ratios) > 0.2  # it varies
    # The crop that random_resized_crop returns is that box, resized.
    image = tf.constant(_ramp(40, 160, 3))
    seed = tf.constant([7, 1], tf.int64)
    begin, size = image_ops.sample_crop_box(tf.shape(image), seed, (0.3, 0.6), (0.5, 2.0))
    expected = tf.image.resize(tf.cast(tf.slice(image, begin, size), tf.float32), (16, 16))
    got = image_ops.random_resized_crop(image, 16, seed, scale=(0.3, 0.6), ratio=(0.5, 2.0))
    np.testing.assert_allclose(got.numpy(), expected.numpy())
    h, w = size.numpy()[:2]
    assert 0.3 - 0.02 <= h * w / 6400 <= 0.6 + 0.02 and 0.5 - 0.05 <= w / h <= 2.0 + 0.05
    with pytest.raises(ValueError, match="scale"):
        image_ops.sample_crop_box(tf.constant([8, 8, 1]), seed, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="ratio"):
        image_ops.sample_crop_box(tf.constant([8, 8, 1]), seed, ratio=(0.0, 1.0))


def test_full_scale_crop_is_a_resize():
    image = _ramp(10, 10, 1)
    out = image_ops.random_resized_crop(tf.constant(image), 10, tf.constant([0, 0]),
                                        scale=(1.0, 1.0), ratio=(1.0, 1.0)).numpy()
    np.testing.assert_allclose(out, image.astype(np.float32))


def test_random_flip():
    image = tf.constant(_ramp(2, 3, 1))
    flips = {bool(np.array_equal(image_ops.random_flip(image, tf.constant([s, 0])).numpy(),
                                 image.numpy()[:, ::-1])) for s in range(16)}
    assert flips == {True, False}
    fn = lambda x, s: image_ops.random_flip(x, s)
    eager, mapped = _eager_and_mapped(fn, image, tf.constant([5, 0], tf.int64))
    np.testing.assert_array_equal(eager, mapped)


def test_random_resized_crop_keeps_the_static_channel_count():
    """Models' input normalisation reads the channel count from the static shape."""
    from keras_fgvc.data.image_ops import random_resized_crop

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def crop(image):
        out = random_resized_crop(image, 16, tf.constant([1, 2], tf.int64))
        assert out.shape.as_list() == [16, 16, 3], out.shape
        return out

    assert crop(tf.zeros([40, 30, 3], tf.uint8)).shape == (16, 16, 3)
