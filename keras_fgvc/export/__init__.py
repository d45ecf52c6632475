"""keras_fgvc.export."""
