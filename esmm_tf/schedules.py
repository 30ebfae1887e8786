"""The learning rate of a run: ``learning_rate(config, steps_per_epoch)``.

``--learning_rate_decay=d`` (default 1: constant) multiplies the rate by d at
the end of every epoch: epoch e (from 0) trains at ``learning_rate * d**e``.
Sparse CTR models overfit from the second epoch on (their rare ids' rows are
fitted to the examples they saw); a smaller rate after the first epoch makes
the later epochs fine-tune rather than memorise. The rate is a function of the
optimizer's step counter, so a resumed run continues the same schedule.
"""

from __future__ import annotations

import keras

from esmm_tf.config import Config


def learning_rate(config: Config, steps_per_epoch: int):
    """What to give ``esmm_tf.optimizer.Adam`` as its learning rate: the float
    ``config.learning_rate``, or a schedule of the step with the per-epoch
    decay."""
    if config.learning_rate_decay == 1:
        return config.learning_rate
    return keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate,
        decay_steps=steps_per_epoch,
        decay_rate=config.learning_rate_decay,
        staircase=True,
    )
