"""keras_fgvc.layers."""
