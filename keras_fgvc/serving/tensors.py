"""Fast TensorProto <-> NumPy conversion for the request path.

``tf.make_tensor_proto`` / ``tf.make_ndarray`` cost 20-50 us per tensor; these
direct versions cover what serving sends (strings, and numeric / bool arrays
in ``tensor_content``) in a few microseconds and fall back to TensorFlow's
converters for everything else. The encoding is the one TF Serving reads and
writes, so both sides interoperate with the real server.
"""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

_NUMPY_TO_ENUM = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.float64): types_pb2.DT_DOUBLE,
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.int64): types_pb2.DT_INT64,
    np.dtype(np.uint8): types_pb2.DT_UINT8,
    np.dtype(np.bool_): types_pb2.DT_BOOL,
}
_ENUM_TO_NUMPY = {v: k for k, v in _NUMPY_TO_ENUM.items()}


def to_tensor_proto(value):
    """NumPy array (or array-like) -> TensorProto."""
    array = np.asarray(value)
    if array.dtype.kind in "OS":
        flat = array.reshape(-1)
        if all(isinstance(v, bytes) for v in flat):
            proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
            proto.tensor_shape.CopyFrom(_shape(array.shape))
            proto.string_val.extend(flat.tolist())
            return proto
    enum = _NUMPY_TO_ENUM.get(array.dtype)
    if enum is None:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=enum)
    proto.tensor_shape.CopyFrom(_shape(array.shape))
    proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto


def to_ndarray(proto):
    """TensorProto -> NumPy array (raises ValueError / TypeError on a malformed tensor)."""
    shape = [d.size for d in proto.tensor_shape.dim]
    count = int(np.prod(shape)) if shape else 1
    if proto.dtype == types_pb2.DT_STRING and not proto.tensor_content:
        values = list(proto.string_val)
        if len(values) != count:
            return tf.make_ndarray(proto)  # broadcasting or malformed: TF's rules and errors
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    dtype = _ENUM_TO_NUMPY.get(proto.dtype)
    if dtype is not None and proto.tensor_content and not proto.version_number:
        content = proto.tensor_content
        if len(content) != count * dtype.itemsize:
            raise ValueError(f"tensor_content has {len(content)} bytes, the shape {shape} "
                             f"needs {count * dtype.itemsize}.")
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    return tf.make_ndarray(proto)


def _shape(dims):
    shape = tensor_shape_pb2.TensorShapeProto()
    for d in dims:
        shape.dim.add().size = int(d)
    return shape
