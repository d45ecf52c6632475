"""keras_fgvc.serving."""
