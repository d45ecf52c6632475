r"""Export a training workdir as a TF Serving SavedModel version.

    python export/saved_model.py --workdir W --model_base_path models --model_name detector

writes models/detector/<next version>/ atomically and lists the model in
models/models.config.
"""

from keras_fgvc.startup import quiet_tensorflow_import

quiet_tensorflow_import()  # before absl and TF print their CPU-only start-up noise

from absl import app, flags  # noqa: E402

from keras_fgvc.export import saved_model  # noqa: E402

flags.DEFINE_string("workdir", None, "Training workdir (model.keras, labels.txt, ...).")
flags.DEFINE_string("model_base_path", "models", "MODEL_BASE directory.")
flags.DEFINE_string("model_name", None, "Served model name.")
flags.DEFINE_integer("version", None, "Version number (default: the next one).")
flags.DEFINE_string("serving_base_path", None,
                    "MODEL_BASE as the server sees it (e.g. /models in the tensorflow/serving "
                    "container), for models.config; default the absolute local path.")
flags.mark_flags_as_required(["workdir", "model_name"])


def main(argv):
    del argv
    f = flags.FLAGS
    path = saved_model.export_from_workdir(f.workdir, f.model_base_path, f.model_name,
                                           version=f.version,
                                           serving_base_path=f.serving_base_path)
    print(f"Exported {path}")


if __name__ == "__main__":
    app.run(main)
