"""keras_fgvc.losses."""
