"""`Hook`: the base class of the objects the trainer calls at fixed points.

The built-in hooks and `default_hooks`, which picks them from a config, are in
`keras_fgvc.training.hooks`; this module holds only the base class, so hooks
defined elsewhere (`folder_report`, `hard_negatives`) import it without
importing the module that chooses them.
"""


class Hook:
    """Base class: every method is a no-op.

    `step_period`: a hook that changes the trainer between steps every N steps (re-mines
    the example order, swaps weights) sets it to N; the trainer then never runs a
    multi-step execution (`Config.steps_per_execution`) across a multiple of N, so the
    hook sees the trainer at exactly that step. Hooks that only read per-step logs
    (progress, TensorBoard) leave it None: with K steps per execution they still get
    ``on_step_end`` for every step, after the K steps ran.
    """

    step_period = None

    def on_train_begin(self, trainer):
        pass

    def on_stage_begin(self, trainer, stage):
        pass

    def on_epoch_begin(self, trainer, epoch):
        pass

    def on_step_end(self, trainer, step, logs):
        pass

    def on_epoch_end(self, trainer, epoch, logs):
        pass

    def on_train_end(self, trainer, logs):
        pass
