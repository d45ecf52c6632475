"""gRPC PredictionService and ModelService servicers over a `ModelManager`.

Predict, Classify and Regress are admitted by the shared `limits.Admission`
(RESOURCE_EXHAUSTED when the server already runs its limit of requests) and
carry the call's cancellation and deadline (`limits.CallContext`) to the model.
"""

from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from keras_fgvc.serving import classification, errors, limits, tensors

_STATE_ENUM = get_model_status_pb2.ModelVersionStatus.State


def tensor_to_ndarray(key, proto):
    """TensorProto -> NumPy; a malformed tensor is INVALID_ARGUMENT naming the input."""
    try:
        return tensors.to_ndarray(proto)
    except Exception as err:  # noqa: BLE001 - any malformed proto is the caller's error
        raise errors.invalid_argument(f"Input {key} is not a valid TensorProto: {err}") from err


def requested_version(model_spec):
    """The int version of a ModelSpec, or None for the latest; labels are not supported."""
    if model_spec.HasField("version"):
        return int(model_spec.version.value)
    if model_spec.version_label:
        raise errors.not_found(
            f"Servable not found for request: Label({model_spec.name}, {model_spec.version_label})"
        )
    return None


def _abort(context, err):
    context.abort(err.code, err.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress (its errors only; see `classification`) and GetModelMetadata."""

    def __init__(self, manager, admission=None):
        self._manager = manager
        self._admission = admission or limits.Admission(0)

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        try:
            with self._admission.admit():
                call = limits.CallContext(context)
                call.check()
                servable = self._manager.get(request.model_spec.name,
                                             requested_version(request.model_spec))
                inputs = {k: tensor_to_ndarray(k, v) for k, v in request.inputs.items()}
                key, outputs = servable.predict(request.model_spec.signature_name, inputs,
                                                list(request.output_filter), call)
        except errors.ServingError as err:
            return _abort(context, err)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = key
        for name, value in outputs.items():
            tensors.fill_tensor_proto(response.outputs[name], value)
        return response

    def Classify(self, request, context):  # noqa: N802 - gRPC method name
        try:
            with self._admission.admit():
                call = limits.CallContext(context)
                call.check()
                servable = self._manager.get(request.model_spec.name,
                                             requested_version(request.model_spec))
                return classification.classify(servable, request, call)
        except errors.ServingError as err:
            return _abort(context, err)

    def Regress(self, request, context):  # noqa: N802 - gRPC method name
        try:
            servable = self._manager.get(request.model_spec.name,
                                         requested_version(request.model_spec))
            return classification.regress(servable, request)
        except errors.ServingError as err:
            return _abort(context, err)

    def GetModelMetadata(self, request, context):  # noqa: N802 - gRPC method name
        try:
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise errors.invalid_argument(
                    f"Metadata field {','.join(fields) or '(none)'} is not supported; "
                    "request metadata_field: signature_def")
            servable = self._manager.get(request.model_spec.name,
                                         requested_version(request.model_spec))
        except errors.ServingError as err:
            return _abort(context, err)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(sig)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus (HandleReloadConfigRequest is left UNIMPLEMENTED)."""

    def __init__(self, manager):
        self._manager = manager

    def GetModelStatus(self, request, context):  # noqa: N802 - gRPC method name
        try:
            statuses = self._manager.status(request.model_spec.name,
                                            requested_version(request.model_spec))
        except errors.ServingError as err:
            return _abort(context, err)
        return status_response(statuses)


def status_response(statuses):
    """A GetModelStatusResponse from `[VersionStatus]`."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        item = response.model_version_status.add()
        item.version = status.version
        item.state = _STATE_ENUM.Value(status.state)
        item.status.error_code = status.error_code.value[0]
        item.status.error_message = status.error_message
    return response


def add_services(server, manager, admission=None):
    """Register both servicers on a `grpc.Server` (`admission`: a shared `limits.Admission`)."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager, admission), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), server)
