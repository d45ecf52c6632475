"""keras_fgvc.serving: a TF Serving gRPC client and a loopback server speaking the same API.

Modules: ``client`` (PredictionClient, CLI helpers), ``server`` (ModelServer, ServerOptions),
``model_manager`` (version polling and hot swap), ``servable`` (one loaded version, input
validation), ``grpc_service`` / ``rest`` (the APIs), ``classification`` (Classify / Regress,
shared by both APIs), ``batching``, ``tensors``, ``errors``.
Imported on demand (they pull in grpc and TensorFlow).
"""
