"""A dry run: build everything a run needs and take a few train steps, writing nothing.

``python train/fit.py --config NAME --dry_run`` (`Trainer.dry_run`) proves a config end to
end in seconds: task, model, loss recipe, optimizer, the input pipeline and
one forward pass of the evaluation path.

Example:

>>> result = dry_run(Trainer(resolve_config("fashion_bg_ft")), steps=1)
>>> result["losses"], result["probabilities_shape"]  # one loss; 4 rows of class scores
"""

import numpy as np
import tensorflow as tf

from keras_fgvc.training import inputs


def dry_run(trainer, steps=1, forward=True):
    """Build `trainer`'s task, model, loss and input pipeline; run `steps` train steps.

    ``steps=0`` draws one batch instead and reports its shape. With `forward`,
    also predicts 4 validation examples. Writes nothing.
    Returns ``{"losses": [...], "batch_shape": [...], "probabilities_shape": [...]}``.
    """
    if trainer.stages is None:
        trainer.setup()
    stage = trainer._build(0)
    if stage.name != "train":  # a head stage first: the dry run exercises full backprop
        stage = next(s for s in trainer.stages if s.name == "train")
        trainer._build_stage(stage)
    trainer.global_step, trainer.epoch, trainer.step_in_epoch = 0, 0, 0
    config, batch = trainer.config, trainer.config.batch_size
    trainer._order = inputs.epoch_order(stage.split.labels, 0, max(steps, 1), batch,
                                        config.seed, stage.sampling)
    iterator = iter(inputs.distributed_dataset(
        trainer.strategy, stage.split, trainer._order, batch, trainer.image_size,
        trainer.channels, augment=config.augment, seed=config.seed,
        counter=trainer.skip_counter))
    losses = (trainer._train_step(iterator, tf.constant(steps, tf.int32)).numpy().tolist()
              if steps else [])
    result = {"losses": losses}
    if not steps:
        parts = trainer.strategy.experimental_local_results(next(iterator)["images"])
        result["batch_shape"] = [sum(int(p.shape[0]) for p in parts),
                                 *[int(d) for d in parts[0].shape[1:]]]
    if forward:
        probe = trainer.task.val.subset(np.arange(min(4, len(trainer.task.val))))
        result["probabilities_shape"] = list(trainer.predict(probe).shape)
    return result
