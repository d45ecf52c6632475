"""keras_fgvc.export: SavedModel versions for TF Serving (signatures, assets, warmup, config).

Main entry points: `export_model(model, model_base_path, model_name, class_names, ...)` and
`export_from_workdir(workdir, model_base_path, model_name)`.
"""

from keras_fgvc.export.saved_model import export_from_workdir, export_model

__all__ = ["export_from_workdir", "export_model"]
