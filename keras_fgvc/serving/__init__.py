"""keras_fgvc.serving: a TF Serving gRPC client and a loopback server speaking the same API.

Modules: ``client`` (PredictionClient, CLI helpers), ``server`` (ModelServer, ServerOptions),
``model_manager`` (version polling and hot swap), ``servable`` (one loaded version, input
validation), ``grpc_service`` / ``rest`` (the APIs), ``classification`` (Classify / Regress,
shared by both APIs), ``http_server`` (the REST front's bounded HTTP/1.1, on h11), ``limits``
(per-request bounds, admission, deadlines), ``image_headers`` (image sizes before decoding),
``batching``, ``tensors``, ``errors``, ``soak`` (the soak benchmark's engine).
Imported on demand (they pull in grpc and TensorFlow).
"""
