"""tf.distribute helpers shared by the layers and the trainers (a leaf: TensorFlow only).

Under a strategy with several replicas each replica computes its step on its slice of the
global batch, and Keras' optimizers *sum* the replicas' gradients. The trainers therefore
weight each replica's loss by its share of the global batch (what Keras' own `compute_loss`
does with 1 / replicas), so that the summed gradient is the single-device gradient of the
global batch. Random draws per sample (z, conditioning-augmentation noise, dropout masks)
are made for the global batch by every replica, which keeps its own rows: one device would
draw the same numbers, and no two replicas get the same ones. With one replica these helpers
return their inputs and add no ops.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def replica_context():
    """The replica context when several replicas train in sync; None otherwise.

    Example:
    >>> replica_context() is None  # no strategy
    True
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync < 2:
        return None
    return context


def replica_rows(batch) -> tuple[tf.Tensor, tf.Tensor]:
    """`(offset, total)`: where this replica's rows start in the global batch, and its size.

    Args:
        batch: this replica's batch size (scalar).

    Example:
    >>> [int(x) for x in replica_rows(4)]  # one replica: all of the batch
    [0, 4]
    """
    batch = tf.cast(batch, tf.int32)
    context = replica_context()
    if context is None:
        return tf.constant(0, tf.int32), batch
    sizes = context.all_gather(tf.reshape(batch, [1]), axis=0)
    return tf.reduce_sum(sizes[: context.replica_id_in_sync_group]), tf.reduce_sum(sizes)


def global_share(count) -> tf.Tensor | float:
    """This replica's share `count / sum over replicas of count` (1.0 with one replica).

    Weighting a replica's mean loss over `count` items by its share makes the sum over
    replicas the mean over the global batch's items.

    Args:
        count: how many items this replica's mean loss averages (scalar).

    Example:
    >>> global_share(3.0)
    1.0
    """
    context = replica_context()
    if context is None:
        return 1.0
    count = tf.cast(count, tf.float32)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return count / tf.maximum(total, 1.0)


def gather_batch(values):
    """All-gathers a (nested) batch over replicas along axis 0 (identity with one replica).

    Gradients flow back to each replica's own rows; `None` leaves stay `None`.

    Args:
        values: a nest of tensors of rank >= 1 (and Nones).

    Example:
    >>> gather_batch({"a": tf.ones([2, 3]), "b": None})["a"].shape
    TensorShape([2, 3])
    """
    context = replica_context()
    if context is None:
        return values
    # One all-gather per tensor: a batched one refuses a mix of host (int32) and device
    # tensors.
    flat = [None if v is None else context.all_gather(v, axis=0) for v in tf.nest.flatten(values)]
    return tf.nest.pack_sequence_as(values, flat)


def all_reduce_sum(values: list) -> list:
    """Sums (dense) tensors over replicas (identity with one replica).

    Example:
    >>> [float(v) for v in all_reduce_sum([tf.constant(2.0)])]
    [2.0]
    """
    context = replica_context()
    if context is None:
        return list(values)
    return list(context.all_reduce(tf.distribute.ReduceOp.SUM, list(values)))


def step_logs(logs: dict) -> dict:
    """A train/test step's logs, shaped for Keras' reduction over replicas.

    Keras 3 averages the logs of a multi-worker step with `strategy.reduce("MEAN", v,
    axis=0)`, which fails on scalars ("Invalid reduction dimension 0 for input with 0
    dimensions", tensorflow/tensorflow#72388; `distribute_reduction_method` is not read).
    Under a multi-worker strategy the logs become `[1]` tensors, which that reduces back to
    scalars; otherwise they are returned unchanged.

    Example:
    >>> step_logs({"loss": tf.constant(1.0)})["loss"].shape
    TensorShape([])
    """
    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def num_replicas() -> int:
    """How many replicas train in sync (1 without a strategy).

    Example:
    >>> num_replicas()
    1
    """
    return tf.distribute.get_strategy().num_replicas_in_sync


def _replica_rows_of(batch, draw, rows=None):
    """`draw(total)` for the whole global batch, then this replica's rows of it."""
    offset, total = replica_rows(batch) if rows is None else rows
    return draw(total)[offset : offset + tf.cast(batch, tf.int32)]


def global_normal(batch, shape: tuple[int, ...], seed_generator, dtype: str = "float32",
                  rows=None):
    """Standard normal noise `[batch, *shape]` for this replica's rows of the global batch.

    Every replica draws the noise of the whole global batch (replicas share the seed state)
    and keeps its rows, so the global batch gets what one device would draw. Drawing
    `[batch, ...]` per replica would give every replica the same numbers.

    Args:
        batch: this replica's batch size (scalar).
        shape: the per-sample shape.
        seed_generator: a `keras.random.SeedGenerator`.
        dtype: the dtype of the noise.
        rows: `replica_rows(batch)` if the caller has it already (saves an all-gather).

    Example:
    >>> global_normal(2, (3,), keras.random.SeedGenerator(0)).shape
    TensorShape([2, 3])
    """
    if replica_context() is None:
        return keras.random.normal([batch, *shape], dtype=dtype, seed=seed_generator)
    return _replica_rows_of(
        batch,
        lambda total: keras.random.normal([total, *shape], dtype=dtype, seed=seed_generator),
        rows,
    )


def global_dropout(inputs, rate: float, seed_generator, training=None):
    """Dropout whose masks are this replica's rows of the global batch's (see `global_normal`).

    With one replica it is `keras.random.dropout`, so single-device results do not change.

    Args:
        inputs: a batch (axis 0 is the batch).
        rate: the fraction of units dropped.
        seed_generator: a `keras.random.SeedGenerator` (a `Dropout` layer's, to share its
            state and seed).
        training: dropout only when true.

    Example:
    >>> global_dropout(tf.ones([2, 3]), 0.5, keras.random.SeedGenerator(0), True).shape
    TensorShape([2, 3])
    """
    if not training or rate <= 0:
        return inputs
    if replica_context() is None:
        return keras.random.dropout(inputs, rate, seed=seed_generator)
    rest = tf.shape(inputs)[1:]
    mask = _replica_rows_of(
        tf.shape(inputs)[0],
        lambda total: keras.random.dropout(
            tf.ones(tf.concat([[total], rest], 0), inputs.dtype), rate, seed=seed_generator
        ),
    )
    return inputs * mask
