"""keras_fgvc.bootstrap."""
