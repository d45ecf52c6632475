"""Fast TensorProto <-> NumPy conversion for the request path.

``tf.make_tensor_proto`` / ``tf.make_ndarray`` cost 20-50 us per tensor; these
direct versions cover what serving sends (strings, and numeric / bool arrays
in ``tensor_content``) in a few microseconds and fall back to TensorFlow's
converters for everything else. The encoding is the one TF Serving reads and
writes, so both sides interoperate with the real server.

A request must carry every value its shape declares: TensorFlow's own
converter pads a short value list out to the declared shape (repeating the
last value), so a 22-byte proto declaring ``[20000, 28, 28, 1]`` would cost
gigabytes. `to_ndarray` refuses such a proto before allocating anything.
"""

import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

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
    proto = tensor_pb2.TensorProto()
    fill_tensor_proto(proto, value)
    return proto


def fill_tensor_proto(proto, value):
    """Write `value` into an empty TensorProto in place (e.g. ``response.outputs[key]``),
    sparing the copy of `to_tensor_proto` + ``CopyFrom`` on the request path."""
    array = np.asarray(value)
    if array.dtype.kind in "OS":
        flat = array.reshape(-1)
        if all(isinstance(v, bytes) for v in flat):
            proto.dtype = types_pb2.DT_STRING
            _fill_shape(proto, array.shape)
            proto.string_val.extend(flat.tolist())
            return
    enum = _NUMPY_TO_ENUM.get(array.dtype)
    if enum is None:
        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = enum
    _fill_shape(proto, array.shape)
    proto.tensor_content = np.ascontiguousarray(array).tobytes()


# The repeated value field of each dtype (TensorProto's ``*_val``).
_VALUE_FIELDS = {
    types_pb2.DT_HALF: "half_val", types_pb2.DT_BFLOAT16: "half_val",
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val", types_pb2.DT_COMPLEX64: "scomplex_val",
    types_pb2.DT_COMPLEX128: "dcomplex_val",
}
_PAIRED = (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128)  # two values per element


def declared_count(proto):
    """How many elements the proto's shape declares (ValueError on a negative dimension)."""
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise ValueError(f"the shape {shape} has a negative dimension.")
    return math.prod(shape)


def check_value_count(proto):
    """Refuse a proto whose values do not fill its declared shape exactly (before allocating).

    ``tensor_content`` must hold ``count * itemsize`` bytes; otherwise the
    ``*_val`` field must hold ``count`` values (TensorFlow would pad it).
    """
    count = declared_count(proto)
    if proto.tensor_content:
        dtype = _ENUM_TO_NUMPY.get(proto.dtype)
        if dtype is None:
            try:
                dtype = np.dtype(tf.dtypes.as_dtype(proto.dtype).as_numpy_dtype)
            except (TypeError, ValueError) as err:
                raise ValueError(f"unsupported dtype {proto.dtype}.") from err
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise ValueError(f"tensor_content has {len(proto.tensor_content)} bytes, the shape "
                             f"{[d.size for d in proto.tensor_shape.dim]} needs "
                             f"{count * dtype.itemsize}.")
        return count
    field = _VALUE_FIELDS.get(proto.dtype)
    if field is None:
        raise ValueError(f"unsupported dtype {tf.dtypes.as_dtype(proto.dtype).name}.")
    have = len(getattr(proto, field))
    if proto.dtype in _PAIRED:
        have //= 2
    if have != count:
        raise ValueError(f"the shape {[d.size for d in proto.tensor_shape.dim]} declares "
                         f"{count} values but {have} were sent.")
    return count


def to_ndarray(proto):
    """TensorProto -> NumPy array (raises ValueError / TypeError on a malformed tensor).

    The proto must carry exactly the values its shape declares
    (`check_value_count`); nothing is padded or broadcast.
    """
    shape = [d.size for d in proto.tensor_shape.dim]
    check_value_count(proto)
    if proto.dtype == types_pb2.DT_STRING and not proto.tensor_content:
        values = list(proto.string_val)
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    dtype = _ENUM_TO_NUMPY.get(proto.dtype)
    if dtype is not None and proto.tensor_content and not proto.version_number:
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    return tf.make_ndarray(proto)


def _fill_shape(proto, dims):
    add = proto.tensor_shape.dim.add
    for d in dims:
        add(size=int(d))
