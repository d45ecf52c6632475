"""``--batching_parameters_file``: TF Serving's text-format ``BatchingParameters`` proto.

tensorflow-serving-api does not ship ``session_bundle_config_pb2``, so the
message is declared here (same package, names and types as TF Serving's
``session_bundle_config.proto``) for the fields this server supports, and
parsed with protobuf's own text-format parser: comments, ``field { value: 8 }``,
``field: { ... }``, ``field < ... >`` and ``allowed_batch_sizes: [8, 32]`` all
work as in TF Serving, and any other field name is a start-up error.

Supported fields and what they do here:

- ``max_batch_size``: largest merged batch, and (as in TF Serving) requests
  with more rows are rejected with RESOURCE_EXHAUSTED.
- ``batch_timeout_micros``: longest wait of the oldest request for company.
- ``num_batch_threads``: batches executed concurrently (worker threads).
- ``max_enqueued_batches``: queue bound; a request arriving at a full queue
  gets UNAVAILABLE "The batch scheduling queue to which this task was
  submitted is full", like TF Serving.
- ``allowed_batch_sizes``: each batch is padded up to the next allowed size
  with copies of its first row, then outputs are sliced back (TF Serving's
  rule). Must increase strictly and end at ``max_batch_size``.
- ``pad_variable_length_inputs``: accepted and ignored: requests whose
  non-batch shapes differ are never merged here, so nothing needs padding.

Example:
    >>> params = parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 8")
    >>> params.max_batch_size, params.allowed_batch_sizes
    (8, (8,))
"""

import dataclasses
import functools

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

_WRAPPED_INT_FIELDS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                       "max_enqueued_batches")


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """Resolved batching settings (0 for ``max_enqueued_batches`` = unbounded)."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    num_batch_threads: int = 1
    max_enqueued_batches: int = 0
    allowed_batch_sizes: tuple = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        for name in ("max_batch_size", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}.")
        for name in ("batch_timeout_micros", "max_enqueued_batches"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            if any(s < 1 for s in sizes) or any(a >= b for a, b in zip(sizes, sizes[1:])):
                raise ValueError(f"allowed_batch_sizes must be positive and strictly increasing, "
                                 f"got {sizes!r}.")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(f"The final entry in allowed_batch_sizes ({sizes[-1]}) must "
                                 f"equal max_batch_size ({self.max_batch_size}).")


@functools.cache
def _message_class():
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="keras_fgvc/serving/batching_parameters.proto", package="tensorflow.serving",
        dependency=[wrappers.name], syntax="proto3")
    message = proto.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, name in enumerate(_WRAPPED_INT_FIELDS, start=1):
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE,
                          type_name=".google.protobuf.Int64Value", label=field.LABEL_OPTIONAL)
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64,
                      label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL,
                      label=field.LABEL_OPTIONAL)
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def parse_batching_parameters(text, defaults=None, source="batching parameters"):
    """Parse a text-format ``BatchingParameters`` proto.

    Args:
        text: the proto text.
        defaults: a `BatchingParameters` whose values fill fields the text
            does not set (default: `BatchingParameters()`).
        source: name used in error messages (e.g. the file path).

    Returns:
        A validated `BatchingParameters`.

    Raises:
        ValueError: an unknown field, bad syntax, or an invalid value.
    """
    proto = _message_class()()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise ValueError(f"Cannot parse {source} as a BatchingParameters text proto "
                         f"(supported fields: {', '.join(_WRAPPED_INT_FIELDS)}, "
                         f"allowed_batch_sizes, pad_variable_length_inputs): {err}") from None
    values = {}
    for name in _WRAPPED_INT_FIELDS:
        if proto.HasField(name):
            values[name] = int(getattr(proto, name).value)
    if proto.allowed_batch_sizes:
        values["allowed_batch_sizes"] = tuple(int(s) for s in proto.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = bool(proto.pad_variable_length_inputs)
    try:
        return dataclasses.replace(defaults or BatchingParameters(), **values)
    except ValueError as err:
        raise ValueError(f"Invalid {source}: {err}") from None


def read_batching_parameters(path, defaults=None):
    """`parse_batching_parameters` on the file at `path` (ValueError if it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ValueError(f"Cannot read --batching_parameters_file {path!r}: {err}") from None
    return parse_batching_parameters(text, defaults, source=f"--batching_parameters_file {path!r}")
