"""keras_fgvc: fine-grained and long-tailed recognition with Keras 3.

Sub-packages: ``layers``, ``losses``, ``models``, ``data``, ``metrics``,
``analysis``, ``training``, ``export``, ``serving``, ``bootstrap``. They are
imported on demand so that ``import keras_fgvc`` stays cheap.
"""

__version__ = "0.1.0"
