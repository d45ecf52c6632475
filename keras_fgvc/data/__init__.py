"""Data: loaders for local data sets, task builders and tf.data pipelines."""

from keras_fgvc.data.task import Split, Task

__all__ = ["Split", "Task"]
