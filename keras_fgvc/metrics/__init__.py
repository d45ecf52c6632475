"""keras_fgvc.metrics."""
