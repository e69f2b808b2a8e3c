"""Input checks shared by the networks, the data pipelines and the exports.

Each check raises a `ValueError` that names the argument and says what was expected. Checks on
values (not shapes) only run when the tensor is concrete (eager); inside a traced graph they are
skipped so that serving graphs stay free of assertion ops.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tensorflow as tf


def _is_concrete(x) -> bool:
    return isinstance(x, np.ndarray | np.generic | list | tuple | int) or (
        tf.is_tensor(x) and hasattr(x, "numpy") and tf.executing_eagerly()
    )


def check_token_ids(token_ids, vocab_size: int, name: str = "token_ids") -> None:
    """Checks that `token_ids` is a rank-2 integer batch with ids in `[0, vocab_size)`.

    Args:
        token_ids: tensor or array of shape `[batch, length]`.
        vocab_size: size of the vocabulary the ids index into.
        name: the argument name used in the error message.

    Raises:
        ValueError: on a rank other than 2, a non-integer dtype, or ids outside the vocabulary.

    Example:
    >>> check_token_ids([[3, 4, 0]], vocab_size=10)
    """
    shape = tf.TensorShape(np.shape(token_ids) if not tf.is_tensor(token_ids) else token_ids.shape)
    if shape.rank is not None and shape.rank != 2:
        raise ValueError(
            f"`{name}` must have rank 2 ([batch, length] integer token ids); "
            f"got shape {shape.as_list()}."
        )
    dtype = tf.as_dtype(token_ids.dtype) if hasattr(token_ids, "dtype") else None
    if dtype is not None and not dtype.is_integer:
        raise ValueError(f"`{name}` must hold integer token ids; got dtype {dtype.name}.")
    if not _is_concrete(token_ids):
        return
    values = np.asarray(token_ids)
    if values.size == 0:
        return
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"`{name}` holds token id {bad}, outside the vocabulary [0, {vocab_size}). "
            "Was the caption tokenized with a different vocabulary than the model's?"
        )


def check_images(
    images, sizes: Iterable[int], name: str = "images", channels: int = 3
) -> None:
    """Checks that `images` is `[batch, size, size, channels]` with `size` in `sizes`.

    Args:
        images: tensor or array.
        sizes: the spatial sizes that are supported.
        name: the argument name used in the error message.
        channels: the expected channel count.

    Raises:
        ValueError: on a wrong rank, non-square or unsupported size, or wrong channel count.

    Example:
    >>> check_images(np.zeros([2, 64, 64, 3]), sizes=[64])
    """
    sizes = sorted(set(int(s) for s in sizes))
    shape = tf.TensorShape(np.shape(images) if not tf.is_tensor(images) else images.shape)
    expected = f"[batch, S, S, {channels}] with S in {sizes}"
    if shape.rank != 4:
        raise ValueError(f"`{name}` must be {expected}; got shape {shape.as_list()}.")
    _, height, width, depth = shape.as_list()
    if depth is not None and depth != channels:
        raise ValueError(f"`{name}` must be {expected}; got {depth} channels.")
    if height is not None and width is not None and (height != width or height not in sizes):
        raise ValueError(f"`{name}` must be {expected}; got {height}x{width}.")


def check_rank(x, rank: int, name: str, what: str) -> None:
    """Checks the static rank of `x`.

    Args:
        x: tensor or array.
        rank: the expected rank.
        name: the argument name used in the error message.
        what: a description of the expected layout, e.g. "[batch, nef] sentence features".

    Raises:
        ValueError: when the rank is known and differs.

    Example:
    >>> check_rank(np.zeros([2, 256]), 2, "sentence", "[batch, nef] sentence features")
    """
    shape = tf.TensorShape(np.shape(x) if not tf.is_tensor(x) else x.shape)
    if shape.rank is not None and shape.rank != rank:
        raise ValueError(f"`{name}` must be {what} (rank {rank}); got shape {shape.as_list()}.")
