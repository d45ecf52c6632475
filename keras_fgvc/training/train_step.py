"""The distributed train step: `strategy.run` of a GradientTape step, one for every strategy.

Each replica computes its per-example losses, averages them over the
*global* batch (`tf.nn.compute_average_loss`), adds the model's weight-decay
losses scaled by the replica count (`tf.nn.scale_regularization_loss`), and
calls `optimizer.apply`, which sums the gradients over the replicas (Keras
all-reduce) and unscales them for ``mixed_float16`` (`LossScaleOptimizer`).

Gradient clipping to [-c, c] (Ch. 3) must act on the summed gradient; Keras
clips each replica's part before the sum, so with several replicas the step
all-reduces itself, clips (keeping non-finite values, so loss scaling still
sees an overflow), and divides by the replica count before `apply` sums again.

Keras 3 state such as BatchNorm moving statistics has aggregation "none", so
each replica / worker would keep its own copy; it is averaged over the
replicas after every step, so every worker ends with identical weights.

Execution (as Keras' ``steps_per_execution`` and Orbit do): one call of the
returned function runs ``num_steps`` steps in a `tf.while_loop` over the
iterator and returns the loss of each, so the host syncs once per call, not
once per step (what keeps a TPU busy). With ``jit_compile`` the per-replica
step is compiled by XLA; the loop around it, which reads the iterator, is not
(iterator ops cannot be compiled), as in Keras' own trainer.
"""

import tensorflow as tf


def make_train_step(model, optimizer, recipe, strategy, variables, global_batch, clip_value=0.0,
                    explicit_clip=False, jit_compile=False, steps_per_execution=None,
                    training=True):
    """A `tf.function` ``train_steps(iterator, num_steps) -> losses [num_steps]``.

    Each loss is summed over the replicas (the global batch's mean loss). `num_steps`
    is a scalar int32 tensor, so every number of steps shares one trace.

    Args:
        model: the Keras model (dict outputs).
        optimizer: a built Keras optimizer (clips by itself when not `explicit_clip`).
        recipe: a `loss_recipes.LossRecipe` (per-example loss).
        strategy: the `tf.distribute.Strategy` everything was built under.
        variables: the variables to train.
        global_batch: the batch size over all replicas.
        clip_value: the clip bound c (0 = off).
        explicit_clip: clip the all-reduced gradient in the step (several replicas).
        jit_compile: compile the per-replica step with XLA.
        steps_per_execution: 1 when every call runs exactly one step (the function then
            has no loop); None (default) for any `num_steps`.
        training: the model's mode in the step (False: BatchNorm uses and keeps its
            moving statistics, no dropout: a head fit on fixed features).
    """
    replicas = strategy.num_replicas_in_sync
    clip = float(clip_value)

    def replica_step(batch):
        with tf.GradientTape() as tape:
            outputs = model(batch["images"], training=training)
            per_example = recipe(batch, outputs)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(
                    tf.add_n([tf.cast(x, tf.float32) for x in model.losses])
                )
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        grads, used = [g for g, _ in pairs], [v for _, v in pairs]
        if explicit_clip:
            # Clip the all-reduced gradient; `apply` sums again, hence / replicas.
            grads = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, grads
            )
            bound = clip * tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
            grads = [
                tf.where(tf.math.is_finite(g), tf.clip_by_value(g, -bound, bound), g) / replicas
                for g in grads
            ]
        optimizer.apply(grads, used)
        return loss

    # Keras 3 state such as BatchNorm moving statistics has aggregation "none": each
    # replica / worker would keep its own copy. Average it after every step so all
    # replicas hold identical weights (what TF2 Keras did with aggregation MEAN).
    state = [v for v in model.non_trainable_variables
             if v.dtype in ("float16", "bfloat16", "float32", "float64")]
    state = state if replicas > 1 else []

    step_fn = (tf.function(replica_step, jit_compile=True, autograph=False) if jit_compile
               else replica_step)

    def one_step(iterator):
        losses = strategy.run(step_fn, args=(next(iterator),))
        if state:
            local = strategy.run(lambda: [tf.identity(v.value) for v in state])
            for variable, value in zip(state, local):
                variable.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    # Written without AutoGraph (the loop is an explicit tf.while_loop, every Python `if`
    # above is on Python values): converting the step's code costs seconds of CPU per trace.
    if steps_per_execution == 1:
        @tf.function(autograph=False)
        def train_steps(iterator, num_steps):
            del num_steps  # always 1
            return tf.reshape(tf.cast(one_step(iterator), tf.float32), [1])

        return train_steps

    @tf.function(autograph=False)
    def train_steps(iterator, num_steps):
        def body(i, losses):
            return i + 1, losses.write(i, tf.cast(one_step(iterator), tf.float32))

        _, losses = tf.while_loop(lambda i, _: i < num_steps, body,
                                  (tf.constant(0), tf.TensorArray(tf.float32, size=num_steps)))
        return losses.stack()

    return train_steps
