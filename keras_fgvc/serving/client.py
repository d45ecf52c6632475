"""gRPC client for TF Serving (and the loopback server): Predict, GetModelMetadata, GetModelStatus.

Every call has a deadline; UNAVAILABLE (server starting, restarting, or a
dropped connection) is retried with exponential backoff and jitter, within the
call's overall deadline. The client only uses the ``tensorflow-serving-api``
stubs, so it works unchanged against ``tensorflow/serving``.

Example:
    >>> with PredictionClient("127.0.0.1:8500") as client:  # doctest: +SKIP
    ...     out = client.predict_image_bytes("detector", [open("a.png", "rb").read()])
    ...     out["scores"].shape
    (1, 3)
"""

import json
import random
import time

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from keras_fgvc.serving import tensors

_STATE_NAMES = get_model_status_pb2.ModelVersionStatus.State


class PredictionClient:
    """A channel to one model server.

    Args:
        server: ``host:port``.
        timeout_s: overall deadline of each call, retries included.
        max_retries: retries after an UNAVAILABLE answer.
        backoff_s: first retry delay; doubles each retry (with jitter).
        max_message_bytes: largest message sent or received.
    """

    def __init__(self, server="127.0.0.1:8500", timeout_s=10.0, max_retries=5, backoff_s=0.05,
                 max_message_bytes=64 * 1024 * 1024):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}.")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}.")
        self.server = server
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self._channel = grpc.insecure_channel(server, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ])
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self.retries = 0

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request, timeout_s=None):
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        delay = self.backoff_s
        for attempt in range(self.max_retries + 1):
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 1e-3))
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.max_retries:
                    raise
                sleep = delay * (0.5 + random.random())
                if time.monotonic() + sleep >= deadline:
                    raise
                self.retries += 1
                time.sleep(sleep)
                delay *= 2
        raise AssertionError("unreachable")

    @staticmethod
    def _spec(spec, model_name, version, signature_name=None):
        spec.name = model_name
        if version is not None:
            spec.version.value = int(version)
        if signature_name is not None:
            spec.signature_name = signature_name

    # === Predict ===
    def predict(self, model_name, inputs, signature_name="serving_default", version=None,
                output_filter=(), timeout_s=None):
        """Predict with an explicit signature; NumPy in, ``{output: ndarray}`` out.

        Args:
            model_name: served model name.
            inputs: dict of input name -> array-like.
            signature_name: signature key.
            version: int version, default latest.
            output_filter: outputs to return (default all).
            timeout_s: deadline for this call.

        Returns:
            (outputs dict, served version).
        """
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model_name, version, signature_name)
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tensors.to_tensor_proto(value))
        request.output_filter.extend(output_filter)
        response = self._call(self._predict.Predict, request, timeout_s)
        outputs = {k: tensors.to_ndarray(v) for k, v in response.outputs.items()}
        return outputs, response.model_spec.version.value

    def predict_image_bytes(self, model_name, images, version=None, timeout_s=None):
        """``serving_default`` on encoded JPEG / PNG bytes; returns the outputs dict."""
        array = np.array(list(images), dtype=object)
        return self.predict(model_name, {"image_bytes": array}, "serving_default", version,
                            timeout_s=timeout_s)[0]

    def predict_images(self, model_name, images, version=None, timeout_s=None):
        """``predict_images`` on float images [batch, H, W, C] in [0, 255]."""
        images = np.asarray(images, np.float32)
        return self.predict(model_name, {"images": images}, "predict_images", version,
                            timeout_s=timeout_s)[0]

    def labels(self, model_name, version=None):
        """``(class_names, thresholds)`` from the model's ``metadata`` signature."""
        out, _ = self.predict(model_name, {}, "metadata", version)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in out["class_names"]]
        return names, [float(t) for t in out["thresholds"]]

    def lineage(self, model_name, version=None):
        """What built the model (dict; a `keras_fgvc.bootstrap` round's lineage), or None.

        Read from the ``metadata`` signature's ``lineage`` output, which exports
        of a workdir with a ``lineage.json`` carry.
        """
        out, _ = self.predict(model_name, {}, "metadata", version)
        if "lineage" not in out:
            return None
        text = np.asarray(out["lineage"]).reshape(-1)[0]
        return json.loads(text.decode() if isinstance(text, bytes) else str(text))

    # === Metadata and status ===
    def get_model_metadata(self, model_name, version=None, timeout_s=None):
        """``{signature_name: SignatureDef}`` and the version that answered."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec, model_name, version)
        request.metadata_field.append("signature_def")
        response = self._call(self._predict.GetModelMetadata, request, timeout_s)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return dict(signature_map.signature_def), response.model_spec.version.value

    def get_model_status(self, model_name, version=None, timeout_s=None):
        """List of ``{"version", "state", "error_code", "error_message"}``."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model_name, version)
        response = self._call(self._models.GetModelStatus, request, timeout_s)
        return [
            {
                "version": s.version,
                "state": _STATE_NAMES.Name(s.state),
                "error_code": s.status.error_code,
                "error_message": s.status.error_message,
            }
            for s in response.model_version_status
        ]

    def wait_until_available(self, model_name, version=None, timeout_s=60.0, poll_s=0.1):
        """Poll GetModelStatus until a (the) version is AVAILABLE; returns that version."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                for status in self.get_model_status(model_name, version, timeout_s=poll_s * 20):
                    if status["state"] == "AVAILABLE":
                        return status["version"]
            except grpc.RpcError as err:
                if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"Model {model_name} not AVAILABLE after {timeout_s} s.")
            time.sleep(poll_s)


def detections(outputs, class_names):
    """Per image, ``[(class_name, score)]`` of detected classes, highest score first."""
    result = []
    for scores, detected in zip(outputs["scores"], outputs["detected"]):
        hits = [(class_names[j], float(scores[j])) for j in np.flatnonzero(detected)]
        result.append(sorted(hits, key=lambda item: -item[1]))
    return result


def format_detections(names, outputs, class_names):
    """One line per image: ``name: cls (0.93), cls2 (0.61)`` or ``name: background (0.97)``."""
    lines = []
    for name, hits, background in zip(names, detections(outputs, class_names),
                                      outputs["background"]):
        if hits:
            lines.append(f"{name}: " + ", ".join(f"{c} ({s:.3f})" for c, s in hits))
        else:
            lines.append(f"{name}: background ({float(background):.3f})")
    return lines


def classify_files(server, model_name, paths, version=None, timeout_s=10.0):
    """Read image files, call ``serving_default`` once, return the `format_detections` lines."""
    images = []
    for path in paths:
        with open(path, "rb") as f:
            images.append(f.read())
    with PredictionClient(server, timeout_s=timeout_s) as client:
        class_names, _ = client.labels(model_name, version)
        outputs = client.predict_image_bytes(model_name, images, version)
    return format_detections(paths, outputs, class_names)
