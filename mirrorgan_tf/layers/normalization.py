"""BatchNormalization that runs TensorFlow's fused kernel on NHWC feature maps when training.

Keras 3's `BatchNormalization` computes training-mode statistics with separate moment and
normalisation ops; on CPU its backward pass was measured about 1.7x slower than
`FusedBatchNormV3`, and BatchNorm sits in every block of the generator and discriminators.
This subclass keeps the Keras layer's weights, config and inference path unchanged (so
`.weights.h5` files, converted checkpoints and `isinstance` checks are unaffected) and only
swaps the training-mode computation of 4-D inputs for the fused kernel.

One difference from Keras, towards PyTorch: the moving variance is updated with the unbiased
(Bessel-corrected, n / (n - 1)) batch variance, as `torch.nn.BatchNorm2d` updates
`running_var`; Keras updates it with the biased one. The normalisation itself uses the
biased variance in all three.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with the fused TensorFlow kernel for NHWC training.

    Falls back to the Keras computation for anything the fused kernel does not cover: inputs
    that are not 4-D, an axis other than the last, masks, renormalisation, synchronized
    (cross-replica) statistics, and non-TensorFlow backends.

    Args:
        **kwargs: as for `keras.layers.BatchNormalization`.

    Example:
    >>> bn = BatchNormalization(epsilon=1e-5, momentum=0.9)
    >>> bn(np.ones([2, 4, 4, 3], "float32"), training=True).shape
    TensorShape([2, 4, 4, 3])
    """

    def fold_into(self, kernel: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """This layer in inference mode folded into the convolution kernel before it.

        `bn(conv(x, kernel), training=False) == conv(x, scaled) + shift` (up to float
        rounding) with `scaled = kernel * s` over the output channels (the kernel's last
        axis) and `shift = beta - moving_mean * s`, `s = gamma / sqrt(moving_variance + eps)`:
        the convolution then does the normalisation's work, and the map is not read and
        written once more. Computed in float32 from the current weights at every call.

        Args:
            kernel: the convolution kernel `[..., C]`, C = this layer's channels.

        Returns:
            `(scaled, shift)`: float32 `kernel.shape` and `[C]`.

        Example:
        >>> bn = BatchNormalization()
        >>> bn.build((None, 4, 4, 3))
        >>> scaled, shift = bn.fold_into(np.ones([3, 3, 2, 3], "float32"))
        """
        variance = tf.cast(self.moving_variance, tf.float32)
        factor = tf.math.rsqrt(variance + self.epsilon)
        if self.scale:
            factor *= tf.cast(self.gamma, tf.float32)
        shift = -tf.cast(self.moving_mean, tf.float32) * factor
        if self.center:
            shift += tf.cast(self.beta, tf.float32)
        return tf.cast(kernel, tf.float32) * factor, shift

    def _fused_applies(self, inputs, training, mask) -> bool:
        axis = self.axis[0] if isinstance(self.axis, list | tuple) else self.axis
        return (
            bool(training)
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and axis in (-1, 3)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        # The fused kernel takes float16/bfloat16/float32 inputs with float32 parameters and
        # computes its statistics in float32.
        x = tf.cast(inputs, self.compute_dtype)
        if x.dtype not in (tf.float16, tf.bfloat16, tf.float32):
            x = tf.cast(x, tf.float32)
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=scale,
            offset=offset,
            mean=tf.zeros([0]),
            variance=tf.zeros([0]),
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )
        # `variance` is the unbiased batch variance (see the module docstring).
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum)
        )
        return tf.cast(outputs, self.compute_dtype)
