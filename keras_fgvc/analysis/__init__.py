"""keras_fgvc.analysis."""
