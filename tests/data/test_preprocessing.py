"""The preprocessing spec and `prepare_image`, eagerly, inside tf.data and in the pipeline."""

import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.data import Split, make_dataset
from keras_fgvc.data.preprocessing import (
    LEGACY_DEFAULTS,
    decode_and_prepare,
    make_spec,
    prepare_image,
    spec_from_json,
)


def _ramp(h, w, c):
    return (np.arange(h * w * c) % 251).reshape(h, w, c).astype(np.uint8)


def _eager_and_mapped(fn, x):
    mapped = next(iter(tf.data.Dataset.from_tensors(x).map(fn)))
    return fn(x).numpy(), mapped.numpy()


@pytest.mark.parametrize("spec,window", [
    # center_square: side floor(f * min(h, w)); 0.5 * 8 = 4 -> rows 2:6, cols 4:8.
    (make_spec(4, 3, crop_fraction=0.5), (slice(2, 6), slice(4, 8))),
    # 1.0: the largest centred square, cols 2:10.
    (make_spec(8, 3, crop_fraction=1.0), (slice(0, 8), slice(2, 10))),
    # stretch: floor(f * h) x floor(f * w) = 4 x 6 -> rows 2:6, cols 3:9.
    (make_spec([4, 6], 3, crop_fraction=0.5, aspect="stretch"), (slice(2, 6), slice(3, 9))),
])
def test_crop_window_matches_numpy(spec, window):
    image = _ramp(8, 12, 3)
    eager, mapped = _eager_and_mapped(lambda x: prepare_image(x, spec), tf.constant(image))
    # The window has the output size, and a same-size bilinear resize is the identity.
    np.testing.assert_array_equal(eager, image[window].astype(np.float32))
    np.testing.assert_array_equal(eager, mapped)
    assert eager.dtype == np.float32


def test_resize_method_channels_and_batches():
    image = _ramp(9, 13, 1)
    spec = make_spec([5, 7], 3, aspect="stretch", resize_method="area", antialias=True)
    got = prepare_image(tf.constant(image), spec).numpy()
    reference = tf.image.resize(np.repeat(image, 3, -1).astype(np.float32), [5, 7],
                                method="area", antialias=True).numpy()
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-4)
    # A batch of one size gives each image's result.
    batch = np.stack([_ramp(10, 6, 3), 255 - _ramp(10, 6, 3)])
    spec = make_spec(4, 1, crop_fraction=0.875)
    together = prepare_image(tf.constant(batch), spec).numpy()
    for i in range(2):
        np.testing.assert_array_equal(together[i],
                                      prepare_image(tf.constant(batch[i]), spec).numpy())
    assert together.shape == (2, 4, 4, 1)


@pytest.mark.parametrize("encode", [tf.io.encode_png, tf.io.encode_jpeg])
@pytest.mark.parametrize("source_channels,channels", [(1, 3), (3, 1), (3, 3)])
def test_decode_and_prepare_in_tf_data(encode, source_channels, channels):
    data = encode(_ramp(11, 17, source_channels))
    spec = make_spec(6, channels, crop_fraction=0.875)
    eager, mapped = _eager_and_mapped(lambda b: decode_and_prepare(b, spec), data)
    assert eager.shape == (6, 6, channels)
    np.testing.assert_array_equal(eager, mapped)


def test_spec_from_json_fills_legacy_defaults_and_validates():
    old = {"image_size": [28, 28], "channels": 1, "has_background": True}
    assert spec_from_json(old) == {"image_size": [28, 28], "channels": 1, **LEGACY_DEFAULTS}
    new = make_spec(224, 3, crop_fraction=0.875)
    assert spec_from_json({**new, "has_background": False}) == new
    assert new == {"image_size": [224, 224], "channels": 3, "aspect": "center_square",
                   "crop_fraction": 0.875, "resize_method": "bilinear", "antialias": False}
    with pytest.raises(ValueError, match="no channels"):
        spec_from_json({"image_size": [8, 8]})
    cases = [
        (dict(image_size=0), "image_size"), (dict(image_size=[8]), "image_size"),
        (dict(channels=2), "channels must be 1 or 3"),
        (dict(crop_fraction=0.0), "crop_fraction"), (dict(crop_fraction=1.5), "crop_fraction"),
        (dict(aspect="pad"), "aspect"), (dict(resize_method="cubic"), "resize_method"),
        (dict(antialias="yes"), "antialias"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            spec_from_json({**new, **change})


def test_pipeline_evaluates_with_the_spec(tmp_path):
    paths = []
    for i, (h, w) in enumerate([(10, 17), (19, 8)]):
        path = str(tmp_path / f"{i}.png")
        tf.io.write_file(path, tf.io.encode_png(_ramp(h, w, 3)))
        paths.append(path)
    split = Split(labels=[0, 1], paths=np.array(paths, dtype=object))
    spec = make_spec(5, 1, crop_fraction=0.875)
    images = next(iter(make_dataset(split, 5, training=False, batch_size=2, channels=1,
                                    preprocessing=spec)))[0].numpy()
    for image, path in zip(images, paths):
        np.testing.assert_array_equal(image,
                                      decode_and_prepare(tf.io.read_file(path), spec).numpy())
    with pytest.raises(ValueError, match="preprocessing has image_size"):
        make_dataset(split, 5, training=False, batch_size=2, channels=3, preprocessing=spec)
