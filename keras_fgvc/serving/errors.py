"""Serving errors carrying a gRPC status code, in TF Serving's message style."""

import grpc
import tensorflow as tf

_TF_TO_GRPC = {
    tf.errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    tf.errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    tf.errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    tf.errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    tf.errors.OutOfRangeError: grpc.StatusCode.OUT_OF_RANGE,
    tf.errors.UnimplementedError: grpc.StatusCode.UNIMPLEMENTED,
    tf.errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    tf.errors.DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    tf.errors.CancelledError: grpc.StatusCode.CANCELLED,
}

# TF Serving's REST front end maps error codes to these HTTP statuses.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
}


class ServingError(Exception):
    """An error returned to the caller with a gRPC status `code` and a `message`."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self):
        return _HTTP_STATUS.get(self.code, 500)

    def __repr__(self):
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message):
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def resource_exhausted(message):
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def unimplemented(message):
    return ServingError(grpc.StatusCode.UNIMPLEMENTED, message)


def internal(message):
    return ServingError(grpc.StatusCode.INTERNAL, message)


def from_tf_error(err):
    """A ServingError for a TensorFlow runtime error (first line of its message, no graph trace)."""
    code = grpc.StatusCode.INTERNAL
    for cls, grpc_code in _TF_TO_GRPC.items():
        if isinstance(err, cls):
            code = grpc_code
            break
    message = getattr(err, "message", str(err)) or str(err)
    return ServingError(code, message.strip().splitlines()[0] if message.strip() else repr(err))
