"""The published initialisation: orthogonal kernels, BatchNorm gamma ~ N(1, 0.02), zero biases."""

from __future__ import annotations

import keras

from mirrorgan_tf.layers.normalization import BatchNormalization


def kernel_initializer() -> keras.initializers.Initializer:
    """Orthogonal (gain 1) initializer for conv and dense kernels, as in the published code.

    Example:
    >>> layer = keras.layers.Dense(4, kernel_initializer=kernel_initializer())
    """
    return keras.initializers.Orthogonal(gain=1.0)


def gamma_initializer() -> keras.initializers.Initializer:
    """BatchNorm scale ~ N(1, 0.02), as in the published code.

    Example:
    >>> bn = keras.layers.BatchNormalization(gamma_initializer=gamma_initializer())
    """
    return keras.initializers.RandomNormal(mean=1.0, stddev=0.02)


def batch_norm(name: str | None = None, **kwargs) -> keras.layers.BatchNormalization:
    """BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.9 in Keras) and the published init.

    The layer is the package's fused-kernel `BatchNormalization` (same weights as Keras').

    Args:
        name: layer name.
        **kwargs: passed to `keras.layers.BatchNormalization` (e.g. `momentum`, `epsilon`).

    Example:
    >>> bn = batch_norm("bn")
    """
    kwargs.setdefault("epsilon", 1e-5)
    kwargs.setdefault("momentum", 0.9)
    kwargs.setdefault("gamma_initializer", gamma_initializer())
    return BatchNormalization(name=name, **kwargs)
