"""Data: loaders for local data sets, task builders and tf.data pipelines.

Label contract (DESIGN.md): in background tasks label 0 is background and
1..N are the rare categories.
"""

from keras_fgvc.data.background_tasks import (
    BackgroundSpec,
    background_task,
    downsample_background,
    inat_bg_tasks,
    mean_background_fraction,
    places_bg_tasks,
)
from keras_fgvc.data.cache import default_cache_dir
from keras_fgvc.data.cub import load_cub
from keras_fgvc.data.fashion_bg import make_fashion_bg
from keras_fgvc.data.fashion_mnist import (
    find_fashion_mnist,
    load_fashion_mnist,
    load_fashion_mnist_task,
)
from keras_fgvc.data.idx import read_idx, write_idx
from keras_fgvc.data.image_folder import list_image_folder, load_image_folder
from keras_fgvc.data.inaturalist import load_inaturalist, read_inaturalist_json
from keras_fgvc.data.long_tail import balanced_subset, long_tail_counts, long_tail_subsample
from keras_fgvc.data.pipeline import SkipCounter, make_dataset, make_pipeline
from keras_fgvc.data.places365 import load_places365, read_file_list
from keras_fgvc.data.splits import carve_validation
from keras_fgvc.data.task import Split, Task
from keras_fgvc.data.tfrecords import make_tfrecord_pipeline, read_tfrecords, write_tfrecords

__all__ = [
    "BackgroundSpec",
    "SkipCounter",
    "Split",
    "Task",
    "background_task",
    "balanced_subset",
    "carve_validation",
    "default_cache_dir",
    "downsample_background",
    "find_fashion_mnist",
    "inat_bg_tasks",
    "list_image_folder",
    "load_cub",
    "load_fashion_mnist",
    "load_fashion_mnist_task",
    "load_image_folder",
    "load_inaturalist",
    "load_places365",
    "long_tail_counts",
    "long_tail_subsample",
    "make_dataset",
    "make_fashion_bg",
    "make_pipeline",
    "make_tfrecord_pipeline",
    "mean_background_fraction",
    "places_bg_tasks",
    "read_file_list",
    "read_idx",
    "read_inaturalist_json",
    "read_tfrecords",
    "write_idx",
    "write_tfrecords",
]
