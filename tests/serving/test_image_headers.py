"""Image sizes read from headers (no decoding), and the pixel limits built on them."""

import struct

import grpc
import numpy as np
import pytest
import tensorflow as tf

from keras_fgvc.serving import errors, image_headers, limits
from tests.serving.image_files import encode_bmp, encode_gif, png_header


def _webp(chunk, payload):
    body = chunk + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def test_sizes_of_every_format_match_the_decoder():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (23, 41, 1), dtype=np.uint8)
    rgb = rng.integers(0, 256, (23, 41, 3), dtype=np.uint8)
    files = {
        "png": tf.io.encode_png(grey).numpy(),
        "jpeg": tf.io.encode_jpeg(rgb, progressive=True).numpy(),
        "gif": encode_gif(grey[..., 0]),
        "bmp": encode_bmp(rgb),
    }
    for kind, data in files.items():
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False)
        assert image_headers.image_size(data) == (kind, 41, 23), kind
        assert decoded.shape[:2] == (23, 41), kind
    # WebP: lossy (VP8), lossless (VP8L) and extended (VP8X) headers.
    vp8 = b"\x00" * 3 + b"\x9d\x01\x2a" + struct.pack("<HH", 41, 23)
    vp8l = b"\x2f" + ((41 - 1) | ((23 - 1) << 14)).to_bytes(4, "little")
    vp8x = b"\x00" * 4 + (41 - 1).to_bytes(3, "little") + (23 - 1).to_bytes(3, "little")
    for chunk, payload in ((b"VP8 ", vp8), (b"VP8L", vp8l), (b"VP8X", vp8x)):
        assert image_headers.image_size(_webp(chunk, payload)) == ("webp", 41, 23)
    assert image_headers.image_size(png_header(20000, 20000)) == ("png", 20000, 20000)


def test_unknown_or_truncated_headers_are_errors():
    png = tf.io.encode_png(np.zeros((2, 2, 1), np.uint8)).numpy()
    for data in (b"hello", b"GIF89a?", png[:20], b"\xff\xd8\xff\xd9", b"BM\x00"):
        with pytest.raises(ValueError):
            image_headers.image_size(data)


def test_pixel_limits_refuse_before_decoding():
    small = tf.io.encode_png(np.zeros((8, 8, 1), np.uint8)).numpy()
    # 389 KB on the wire, 400 megapixels decoded: refused from its first 33 bytes.
    bomb = png_header(20000, 20000) + b"\0" * 100
    request_limits = limits.RequestLimits(max_batch_size=4, max_image_pixels=100,
                                          max_request_pixels=150)
    request_limits.check_images("image_bytes", [small, small])
    for values, code, message in [
        ([bomb], grpc.StatusCode.RESOURCE_EXHAUSTED, "20000 x 20000 png image"),
        ([small, small, small], grpc.StatusCode.RESOURCE_EXHAUSTED, "192 pixels in all"),
        ([b"hello"], grpc.StatusCode.INVALID_ARGUMENT, "not a JPEG, PNG, GIF, BMP or WebP"),
        ([png_header(0, 5)], grpc.StatusCode.INVALID_ARGUMENT, "empty png image"),
    ]:
        with pytest.raises(errors.ServingError, match=message) as info:
            request_limits.check_images("image_bytes", values)
        assert info.value.code == code
    with pytest.raises(errors.ServingError, match="larger than the maximum batch size 4"):
        request_limits.check_batch(5)
    assert limits.RequestLimits().max_batch_size == limits.DEFAULT_MAX_BATCH_SIZE > 0


def test_admission_answers_resource_exhausted_over_the_limit():
    admission = limits.Admission(2)
    with admission.admit(), admission.admit():
        with pytest.raises(errors.ServingError) as info:
            admission.admit()
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    with admission.admit():  # slots come back
        pass
    assert admission.refused == 1


class _Context:
    def __init__(self, active=True, remaining=None):
        self.active, self.remaining = active, remaining

    def is_active(self):
        return self.active

    def time_remaining(self):
        return self.remaining


def test_call_context_reports_cancellation_and_deadline():
    limits.CallContext(_Context(True, 5.0)).check()
    limits.NO_DEADLINE.check()
    for context, code in [(_Context(False), grpc.StatusCode.CANCELLED),
                          (_Context(True, 0.0), grpc.StatusCode.DEADLINE_EXCEEDED)]:
        with pytest.raises(errors.ServingError) as info:
            limits.CallContext(context).check()
        assert info.value.code == code
