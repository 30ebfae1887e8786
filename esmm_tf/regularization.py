"""Regularization terms added to the training loss: ``penalty(model, inputs, config)``.

The train step adds it to the loss of ``esmm_tf.objectives`` (a mean over the
batch's impressions) before taking gradients::

    loss["regularization"] = regularization.penalty(model, inputs, config)
    total = loss["total"] + loss["regularization"]

**Embeddings, ``--embedding_l2`` = λ: mini-batch-aware L2** (Zhou et al.,
"Deep Interest Network", KDD 2018, section 5.1). A whole-table L2,
``λ · Σ_j ||w_j||²`` added to the mean loss (``keras.regularizers.L2`` on the
tables, DeepCTR's ``l2_reg_embedding``), reads and updates every row of every
table at every step. With ``n_j`` the train count of row j's id (the
vocabulary files' second column) and N the number of train impressions,
``Σ_j ||w_j||² = Σ_{impressions i} Σ_{j in i} ||w_j||² / n_j``: the table's
norm spread over the impressions that hold each id. A batch B of |B|
impressions, in which c_j impressions hold row j's id, carries the share::

    penalty_B = λ · N / |B| · Σ_{j touched by B} c_j / n_j · ||w_j||²
              = λ · Σ_j (c_j / |B|) / (n_j / N) · ||w_j||²

(batch frequency over train frequency of each id). Only the rows the batch
read appear, so its cost and its gradient (``tf.IndexedSlices`` of those rows,
2λ · N c_j / (|B| n_j) · w_j each) are proportional to the batch, not to the
tables; lazy Adam then updates only those rows, and dense Adam gets the same
gradient densified. The factor N / |B| matches the loss's normalisation: the
loss is a mean over |B| impressions, so an epoch of N / |B| steps sums
N / |B| means of the loss while the penalty_B sum to λ · N / |B| · Σ ||w_j||²
(each id's c_j add up to n_j): relative to the loss, the epoch applies exactly
the whole-table λ · Σ ||w_j||², so λ means what it means for a whole-table
L2 (the peer's 1e-5 is comparable), whatever the batch size or the dataset
size. (DIN writes the per-step term as λ · Σ_j α_j / n_j · ||w_j||², with
α_j = 1 if the batch holds id j: the same up to the factor N / |B| and the
counts c_j for α_j.) Frequencies are ratios, so training on a sample of the
train split (``--train_fraction``) keeps the scale. Counts are in the
vocabulary's unit: a user-side id counts once per impression of its group.
The counts come from the vocabulary files of the embedding layer's directory,
and N is the largest total count of a single-valued field (see
``FieldEmbeddings.train_counts``); ids counted 0 (OOV rows of a vocabulary
without OOV ids) count as 1.

**Towers, ``--tower_l2``: L2 on the kernels** (not the biases) of every Dense
layer of each tower, ``λ · Σ ||K||²`` added to the mean loss, as
``keras.regularizers.L2`` and DeepCTR's ``l2_reg_dnn``. Chosen over
decoupled weight decay (AdamW) because it is one mechanism for both
regularizers, in the loss, that works unchanged with lazy and dense Adam and
every strategy, and the towers are small dense layers updated every step.

Under a multi-replica strategy each replica's penalty is its share, so that
the replicas' terms (and their summed gradients) add up to the global batch's:
the embedding term divides by the global |B| (summed over replicas), the tower
term by the number of replicas.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from esmm_tf import features as F
from esmm_tf.config import Config
from esmm_tf.embedding import FieldEmbeddings
from esmm_tf.towers import Tower


def _replicas() -> tf.distribute.ReplicaContext | None:
    """The replica context of a multi-replica strategy; None on one replica."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def embedding_penalty(layer: FieldEmbeddings, inputs: dict, l2: float) -> tf.Tensor:
    """λ · N / |B| · Σ_{rows j the batch read} c_j / n_j · ||w_j||² (module
    docstring), a float32 scalar; its gradient touches only those rows."""
    rows, impressions = layer.touched_rows(inputs)
    counts, train_impressions = layer.train_counts()
    train_count = tf.maximum(tf.gather(counts, rows), 1.0)
    batch = tf.cast(tf.size(inputs[F.GROUP_INDEX]), tf.float32)
    context = _replicas()
    if context is not None:
        batch = context.all_reduce(tf.distribute.ReduceOp.SUM, batch)
    vectors = tf.gather(layer.embeddings.value, rows)
    squares = tf.reduce_sum(tf.square(vectors), axis=1)
    weighted = tf.reduce_sum(impressions / train_count * squares)
    return l2 * train_impressions * tf.math.divide_no_nan(weighted, batch)


def tower_penalty(tower: Tower, l2: float) -> tf.Tensor:
    """λ · Σ ||K||² over the tower's kernels, a float32 scalar."""
    total = tf.add_n([tf.reduce_sum(tf.square(k.value)) for k in tower.kernels])
    context = _replicas()
    if context is not None:
        total = total / context.num_replicas_in_sync
    return l2 * total


def penalty(model: keras.Model, inputs: dict, config: Config) -> tf.Tensor:
    """The regularization term of one train step on the batch ``inputs``: the
    embedding term of every embedding set (``--embedding_l2``) plus the tower
    term of every tower (``--tower_l2``); 0.0 when both are off."""
    terms = []
    if config.embedding_l2 > 0:
        terms += [
            embedding_penalty(layer, inputs, config.embedding_l2)
            for layer in model.layers
            if isinstance(layer, FieldEmbeddings)
        ]
    if config.tower_l2 > 0:
        terms += [
            tower_penalty(layer, config.tower_l2)
            for layer in model.layers
            if isinstance(layer, Tower)
        ]
    return tf.add_n(terms) if terms else tf.constant(0.0)
