"""Rare-class detectors from the user's own folder of images (DESIGN.md, "Your own images").

    DIR/rare/<class name>/...   DIR/background/...   [DIR/val/..., DIR/test/...]

Every config reads ``--set data_dir=DIR`` (or ``--set task_kwargs.manifest=FILE.csv``)
and trains a small CNN at 64 x 64 RGB that finishes in minutes on a CPU;
``--set image_size=N --set channels=1|3 --set model=NAME`` change that, and
``--set model_kwargs.weights=/path/file`` starts a pretrained backbone from a
local file (e.g. ``--set model=classifier --set model_kwargs.backbone=resnet50``).
Background splitting needs a teacher: ``--set task_kwargs.teacher_model=T``
(a ``.keras`` file or SavedModel directory giving class logits or
probabilities; ``task_kwargs.teacher_mode=hard|soft``).
"""

import dataclasses

from keras_fgvc.training.config import Config, register_config

FOLDER_BG = Config(
    task="image_folder_bg",
    image_size=64,
    channels=3,
    augment=True,  # random-resized crop + flip; evaluation: centred 87.5% square
    model="small_cnn",
    loss="softmax",
    optimizer="sgd",
    learning_rate=0.02,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="warmup_step",
    warmup_epochs=1,
    decay_epochs=(16,),
    batch_size=32,
    epochs=20,
    eval_batch_size=64,
    checkpoint_every_steps=100,
    bn_reestimate_batches=20,
)


def _register(name, summary, **changes):
    command = (f"python train/fit.py --config {name} --set data_dir=DIR"
               + (" --set task_kwargs.teacher_model=T" if "split" in name else "")
               + f" --workdir /tmp/{name}")
    config = dataclasses.replace(FOLDER_BG, name=name, **changes)
    return register_config(dataclasses.replace(config, description=f"{summary}\nRun: {command}"))


_register("folder_bg_ft", "Your images: standard fine-tuning (FT), softmax over background + N.")
_register("folder_bg_split",
          "Your images: background splitting, N+1 head + auxiliary head mimicking your teacher "
          "(weight 0.1).", model="bg_split", loss="bg_split")
_register("folder_bg_split_fixed",
          "Your images: background splitting with the fixed background logit (appendix B).",
          model="bg_split_fixed_background", loss="bg_split")
_register("folder_bg_downsample5",
          "Your images: FT with 5% of the training background kept (appendix F).",
          task_kwargs={"background_keep": 0.05})
_register("folder_bg_cb", "Your images: class-balanced softmax cross-entropy (beta 0.9999).",
          loss="cb_softmax", loss_kwargs={"beta": 0.9999})
