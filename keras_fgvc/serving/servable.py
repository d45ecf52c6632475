"""One loaded model version: its SignatureDefs, input validation and execution.

Validation follows TF Serving (``predict_util.cc``): the request's input keys
must match the signature's exactly, dtypes must match, shapes must be
compatible, and the batch may not exceed ``max_batch_size``. Beyond TF
Serving, encoded images must be within the pixel limits, read from their
headers (`limits.RequestLimits`), and the caller's deadline is checked before
the model runs (`limits.CallContext`). Every failure is a `ServingError` with
TF Serving's status code; the model is never called with bad input, and
runtime errors (e.g. truncated image bytes) come back as INVALID_ARGUMENT
instead of crashing the server.
"""

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from keras_fgvc.serving import errors, limits

INIT_OP_SIGNATURE = "__saved_model_init_op"
DEFAULT_SIGNATURE = "serving_default"
_DTYPE_NAMES = {}


def _numpy_dtype_name(dtype):
    """TensorFlow's name of a NumPy dtype ("string" for bytes / str / object), cached."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = "string" if dtype.kind in "OSU" else tf.dtypes.as_dtype(dtype).name
        _DTYPE_NAMES[dtype] = name
    return name


def read_signature_defs(saved_model_dir):
    """The serving SignatureDefs of a SavedModel directory, ``{name: SignatureDef}``."""
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    if not saved_model.meta_graphs:
        raise ValueError(f"{saved_model_dir!r} holds no MetaGraph.")
    defs = saved_model.meta_graphs[0].signature_def
    return {k: defs[k] for k in sorted(defs) if k != INIT_OP_SIGNATURE}


def _shape_str(dims):
    return "[" + ",".join(str(d) for d in dims) + "]"


def _first_tf_message(err):
    """The informative line of a TF runtime error (skips 'Graph execution error' and traces)."""
    text = getattr(err, "message", "") or str(err)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.lstrip().startswith("[[") and i > 0:
            return lines[i - 1].strip()
    return lines[-1].strip() if lines else repr(err)


class Servable:
    """A loaded SavedModel version.

    Args:
        name: model name.
        version: int version.
        path: the version directory.
        request_limits: `limits.RequestLimits` (rows per request, pixels per
            image and per request); over a limit is RESOURCE_EXHAUSTED.
            Default: no limit.
        batcher_factory: optional ``fn(run_fn) -> batcher`` (see
            `keras_fgvc.serving.batching`) used for batchable signatures.
    """

    def __init__(self, name, version, path, request_limits=None, batcher_factory=None):
        self.name = name
        self.version = int(version)
        self.path = path
        self.limits = request_limits or limits.RequestLimits(0, 0, 0)
        self.signature_defs = read_signature_defs(path)
        self._loaded = tf.saved_model.load(path)
        self._functions = {k: self._loaded.signatures[k] for k in self.signature_defs}
        # Per signature, per input: (dtype name, dims or None for unknown rank, whether
        # it is encoded images whose headers `limits` checks); read once, not per request.
        self._input_specs = {
            key: {name: (tf.dtypes.as_dtype(info.dtype).name,
                         None if info.tensor_shape.unknown_rank
                         else [d.size for d in info.tensor_shape.dim],
                         info.dtype == tf.string.as_datatype_enum
                         and name.endswith("image_bytes"))
                  for name, info in sig.inputs.items()}
            for key, sig in self.signature_defs.items()}
        self._batchers = {}
        if batcher_factory is not None:
            for key, sig in self.signature_defs.items():
                if self._batchable(sig):
                    self._batchers[key] = batcher_factory(
                        lambda inputs, key=key: self.run_unbatched(key, inputs))

    @staticmethod
    def _batchable(signature):
        tensors = list(signature.inputs.values()) + list(signature.outputs.values())
        return bool(signature.inputs) and all(
            not t.tensor_shape.unknown_rank and t.tensor_shape.dim
            and t.tensor_shape.dim[0].size == -1 for t in tensors)

    def close(self):
        """Stop batching threads (in-flight batches finish first)."""
        for batcher in self._batchers.values():
            batcher.close()

    def signature(self, signature_name):
        """``(resolved_name, SignatureDef)``; '' means serving_default."""
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self.signature_defs:
            raise errors.invalid_argument(f'Serving signature key "{key}" not found.')
        return key, self.signature_defs[key]

    def check_inputs(self, signature_key, inputs):
        """Validate a dict of NumPy inputs against the signature; returns the batch size."""
        specs = self._input_specs[signature_key]
        if inputs.keys() != specs.keys():
            sent, expected = set(inputs), set(specs)
            raise errors.invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        batch = None
        for key in sorted(inputs):
            (want, dims, _), value = specs[key], inputs[key]
            got = _numpy_dtype_name(value.dtype)
            if got != want:
                raise errors.invalid_argument(
                    f"Expects arg[{key}] to be {want} but {got} is provided")
            if dims is not None:
                ok = len(dims) == value.ndim and all(
                    d == -1 or d == s for d, s in zip(dims, value.shape))
                if not ok:
                    raise errors.invalid_argument(
                        f"The shape of input {key} is {_shape_str(value.shape)} but the "
                        f"signature expects {_shape_str(dims)}.")
                if dims and dims[0] == -1:
                    if batch is not None and value.shape[0] != batch:
                        raise errors.invalid_argument(
                            f"Input {key} has batch size {value.shape[0]}, other inputs {batch}.")
                    batch = value.shape[0]
        if batch is not None:
            self.limits.check_batch(batch)
        for key in sorted(inputs):
            if specs[key][2]:
                self.limits.check_images(key, inputs[key].reshape(-1))
        return batch or 0

    def run_unbatched(self, signature_key, inputs):
        """Call the signature function on validated inputs; NumPy outputs."""
        fn = self._functions[signature_key]
        try:
            outputs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.OpError as err:
            code = errors.from_tf_error(err).code
            raise errors.ServingError(code, _first_tf_message(err)) from None
        return {k: v.numpy() for k, v in outputs.items()}

    def predict(self, signature_name, inputs, output_filter=(), context=limits.NO_DEADLINE):
        """Validate and run one request.

        Args:
            signature_name: signature key ('' = serving_default).
            inputs: dict of NumPy arrays.
            output_filter: output keys to return (empty = all).
            context: the caller's `limits.CallContext`; the model is not run
                once the caller has cancelled or its deadline has passed.

        Returns:
            ``(resolved_signature_name, {output_key: ndarray})``.
        """
        key, sig = self.signature(signature_name)
        if len(set(output_filter)) != len(output_filter):
            raise errors.invalid_argument(f"duplicate output tensor alias: {list(output_filter)}")
        for name in output_filter:
            if name not in sig.outputs:
                raise errors.invalid_argument(
                    f"output tensor alias not found in signature: {name} Outputs expected to be "
                    f"in the set {{{','.join(sorted(sig.outputs))}}}.")
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        self.check_inputs(key, inputs)
        context.check()
        batcher = self._batchers.get(key)
        if batcher is not None:
            outputs = batcher.run(inputs, context)
        else:
            outputs = self.run_unbatched(key, inputs)
        if output_filter:
            outputs = {k: outputs[k] for k in output_filter}
        return key, outputs
