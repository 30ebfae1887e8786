"""The one loss-averaging rule: a weighted mean over the GLOBAL batch.

Every loss term of every model (``esmm_tf/objectives.py``) is

    mean(values, weights) = sum(w · values) / sum(w),

with both sums over the global batch: w = 1 gives the mean over impressions,
a 0/1 or k weight the mean over a (re-weighted) sample of them. Under a
multi-replica ``tf.distribute`` strategy each replica sees its share of the
batch and divides its local numerator by the denominator summed over ALL
replicas (an all-reduce, no gradient through it), so the replicas' losses,
and their gradients, add up to the global batch's mean and its gradient (as
``tf.nn.compute_average_loss`` does for a plain mean). On one replica it is
the plain weighted mean. 0 when the weights sum to 0 (e.g. an empty batch).
"""

from __future__ import annotations

import tensorflow as tf


def global_sum(x: tf.Tensor) -> tf.Tensor:
    """``x`` summed over the replicas of the current replica context (``x``
    itself on one replica); a denominator, so no gradient flows through it."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(x))


def mean(values: tf.Tensor, weights: tf.Tensor | None = None) -> tf.Tensor:
    """sum(w · values) / global sum(w); w = 1 (impressions) when None."""
    values = tf.reshape(values, [-1])
    if weights is None:
        weights = tf.ones_like(values)
    weights = tf.reshape(tf.cast(weights, values.dtype), [-1])
    denominator = global_sum(tf.reduce_sum(weights))
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), denominator)
