"""keras_fgvc.export: SavedModel versions for TF Serving (signatures, assets, warmup, config).

Main entry points: `export_model(model, model_base_path, model_name, class_names, ...)` and
`export_from_workdir(workdir, model_base_path, model_name)`.

They are imported on first use, so the model server (which needs only `versions`,
`model_config` and `warmup` from here) never imports Keras.
"""

__all__ = ["export_from_workdir", "export_model"]


def __getattr__(name):
    if name in __all__:
        from keras_fgvc.export import saved_model

        return getattr(saved_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
