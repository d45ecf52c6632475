"""Bounds on the work of one request, admission control, and the caller's deadline.

Every request is checked against these before anything is allocated or
decoded (see README, "Limits and hardening"):

- `RequestLimits`: rows per request (``--max_batch_size``), pixels per encoded
  image (``--max_image_pixels``, read from the header by `image_headers`) and
  per request (``--max_request_pixels``);
- `Admission`: at most ``--max_concurrent_requests`` requests run at once, on
  gRPC and REST together; one more is answered RESOURCE_EXHAUSTED at once
  instead of queueing without bound;
- `CallContext`: a gRPC call's cancellation and deadline, checked before and
  between model calls, so a request whose caller has gone is not computed.
"""

import dataclasses
import threading

import grpc

from keras_fgvc.serving import errors, image_headers

DEFAULT_MAX_BATCH_SIZE = 256
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
DEFAULT_MAX_REQUEST_PIXELS = 4 * DEFAULT_MAX_IMAGE_PIXELS
DEFAULT_MAX_CONCURRENT_REQUESTS = 64


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """Per-request bounds; 0 turns one off.

    Args:
        max_batch_size: most rows (leading dimension) in one request.
        max_image_pixels: most ``width x height`` of one encoded image.
        max_request_pixels: most ``width x height`` summed over a request's images.
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS

    def check_batch(self, batch):
        if self.max_batch_size and batch > self.max_batch_size:
            raise errors.resource_exhausted(
                f"Batch size {batch} of the request is larger than the maximum batch size "
                f"{self.max_batch_size}.")

    def check_images(self, key, values):
        """Each of `values` (encoded image bytes) is a known format within the pixel limits.

        Reads only the headers: an image declaring too many pixels is refused
        (RESOURCE_EXHAUSTED) before it is decoded.
        """
        total = 0
        for i, item in enumerate(values):
            if not isinstance(item, bytes):
                raise errors.invalid_argument(f"{key}[{i}] is not bytes.")
            try:
                kind, width, height = image_headers.image_size(item)
            except ValueError as err:
                raise errors.invalid_argument(
                    f"{key}[{i}] is not a JPEG, PNG, GIF, BMP or WebP image ({len(item)} "
                    f"bytes): {err}.") from None
            pixels = width * height
            if pixels == 0:
                raise errors.invalid_argument(f"{key}[{i}] is an empty {kind} image "
                                              f"({width} x {height}).")
            if self.max_image_pixels and pixels > self.max_image_pixels:
                raise errors.resource_exhausted(
                    f"{key}[{i}] is a {width} x {height} {kind} image: {pixels} pixels exceed "
                    f"the limit of {self.max_image_pixels} (--max_image_pixels).")
            total += pixels
        if self.max_request_pixels and total > self.max_request_pixels:
            raise errors.resource_exhausted(
                f"The images of {key} have {total} pixels in all, over the limit of "
                f"{self.max_request_pixels} per request (--max_request_pixels).")


class Admission:
    """A limit on concurrently running requests; ``with admission.admit():`` or RESOURCE_EXHAUSTED.

    Args:
        max_concurrent: most requests at once (0 = no limit).
    """

    def __init__(self, max_concurrent=DEFAULT_MAX_CONCURRENT_REQUESTS):
        self.max_concurrent = int(max_concurrent)
        self._slots = threading.BoundedSemaphore(self.max_concurrent or 1)
        self.refused = 0

    def admit(self):
        if not self.max_concurrent:
            return _NoSlot()
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            raise errors.resource_exhausted(
                f"The server is running {self.max_concurrent} requests, its limit "
                "(--max_concurrent_requests); retry later.")
        return _Slot(self._slots)


class _Slot:
    def __init__(self, slots):
        self._slots = slots

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._slots.release()


class _NoSlot:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class CallContext:
    """The caller's cancellation and deadline (a `grpc.ServicerContext`); `check` raises when gone.

    ``CallContext(None)`` never expires (in-process calls, warmup, REST).
    """

    def __init__(self, grpc_context=None):
        self._context = grpc_context

    def expired(self):
        if self._context is None:
            return None
        if not self._context.is_active():
            return errors.ServingError(grpc.StatusCode.CANCELLED,
                                       "The request was cancelled by the caller.")
        remaining = self._context.time_remaining()
        if remaining is not None and remaining <= 0:
            return errors.ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                       "Deadline exceeded before the model ran.")
        return None

    def check(self):
        """Raise CANCELLED / DEADLINE_EXCEEDED when the caller has gone."""
        err = self.expired()
        if err is not None:
            raise err


NO_DEADLINE = CallContext(None)
