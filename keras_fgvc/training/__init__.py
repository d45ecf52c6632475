"""keras_fgvc.training."""
