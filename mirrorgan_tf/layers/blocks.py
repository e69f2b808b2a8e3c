"""The generator's up-sampling and residual blocks (published `upBlock` and `ResBlock`)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import keras
import tensorflow as tf

from mirrorgan_tf.layers.glu import GLU
from mirrorgan_tf.layers.initializers import batch_norm, kernel_initializer


def conv3x3(filters: int, name: str | None = None, **kwargs) -> keras.layers.Conv2D:
    """3x3 convolution, stride 1, "same" padding, no bias: the published `conv3x3`.

    Args:
        filters: output channels.
        name: layer name.
        **kwargs: passed to `keras.layers.Conv2D` (e.g. `dtype`, `kernel_initializer`).

    Example:
    >>> conv3x3(8, name="conv").filters
    8
    """
    kwargs.setdefault("kernel_initializer", kernel_initializer())
    return keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name, **kwargs)


# Nearest x2 up-sampling repeats each input row twice, so output row 2i + a of a 3x3 "same"
# convolution only sees input rows i - 1 and i (a = 0) or i and i + 1 (a = 1): the kernel's
# taps (offsets -1, 0, +1) fold into two taps per output phase. Same for columns.
_PHASE_TAPS = (((0,), (1, 2)), ((0, 1), (2,)))
# As a stride-2 transposed convolution (padding 1), input row r reaches output rows
# 2r - 1 + k, k = 0..3, so its 4 taps are, in order: +1 (row 2r - 1 reads row r below it),
# 0 and +1 (row 2r), -1 and 0 (row 2r + 1), -1 (row 2r + 2 reads row r above it).
_TRANSPOSED_TAPS = ((2,), (1, 2), (0, 1), (0,))

# Below this input size the published order, up-sample then convolve, is the fastest form in
# TensorFlow (measured on a 2-core AVX512 CPU, fp32 and bf16, batch 1 and 4), above all for
# its kernel gradient.
_TRANSPOSED_MIN_SIZE = 16

_PHASES = contextvars.ContextVar("mirrorgan_tf_phase_upsampling", default=False)


def _fold(kernel, axis: int, groups):
    """`kernel`'s 3 taps along `axis` summed into len(groups) taps (tap i = sum of groups[i])."""
    # Slices, not tf.gather: gather would make the kernel's gradient IndexedSlices.
    def tap(i):
        return kernel[i] if axis == 0 else kernel[:, i]

    return tf.stack([tf.add_n([tap(i) for i in group]) for group in groups], axis=axis)


@contextlib.contextmanager
def phase_upsampling() -> Iterator[None]:
    """Within it, `upsample_conv3x3` traces as four 2x2 convolutions (TFLite's fastest form).

    TFLite's XNNPACK runs the four small convolutions interleaved with `depth_to_space`
    faster than its transposed convolution (16 against 22 ms for the 128 -> 256 px up block
    of `birds`, 2 threads), while TensorFlow's CPU kernels are the other way round. The
    TFLite export traces the generator inside this context.

    Example:
    >>> with phase_upsampling():
    ...     y = upsample_conv3x3(tf.ones([1, 16, 16, 2]), tf.ones([3, 3, 2, 5]))
    """
    token = _PHASES.set(True)
    try:
        yield
    finally:
        _PHASES.reset(token)


def _phases(x, kernel):
    """Each output phase as a 2x2 "valid" convolution of the zero-padded input."""
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    # Rows (cols) 0..H (0..W) of the padded map for phase 0, 1..H+1 for phase 1.
    rows = (padded[:, :-1], padded[:, 1:])
    phases = []
    for a in (0, 1):
        row_kernel = _fold(kernel, 0, _PHASE_TAPS[a])
        for b in (0, 1):
            window = rows[a][:, :, :-1] if b == 0 else rows[a][:, :, 1:]
            phases.append(
                tf.nn.conv2d(window, _fold(row_kernel, 1, _PHASE_TAPS[b]), 1, "VALID")
            )
    # depth_to_space puts channel block a * 2 + b at output pixel (2i + a, 2j + b).
    return tf.nn.depth_to_space(tf.concat(phases, axis=-1), 2)


def _transposed(x, kernel):
    """One stride-2 transposed convolution with the 3x3 kernel folded to 4x4."""
    # conv2d_transpose takes its filter as [4, 4, Cout, Cin].
    folded = _fold(_fold(kernel, 0, _TRANSPOSED_TAPS), 1, _TRANSPOSED_TAPS)
    # Static sizes where known, so the output keeps a static shape (TFLite, Keras).
    batch, height, width = (
        x.shape[i] if x.shape[i] is not None else tf.shape(x)[i] for i in range(3)
    )
    output_shape = tf.stack([batch, 2 * height, 2 * width, kernel.shape[-1]])
    return tf.nn.conv2d_transpose(
        x, tf.transpose(folded, (0, 1, 3, 2)), output_shape, strides=2, padding="SAME"
    )


def upsample_conv3x3(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """`conv3x3_same(nearest_upsample_x2(x), kernel)`, without the 4x larger intermediate.

    The 3x3 kernel's taps fold together because nearest up-sampling repeats every input
    pixel: each output pixel takes 4 instead of 9 multiply-adds per channel, and no
    up-sampled map is stored. The same function, up to float rounding (zero padding of the
    up-sampled map is zero padding of the input). Which form runs is chosen for speed:

    - from 16 pixels up, one stride-2 transposed convolution with the kernel folded to 4x4;
    - below 16 pixels, up-sampling then convolving, as published (faster there);
    - inside `phase_upsampling()` (the TFLite export), four 2x2 convolutions, one per output
      phase (even/odd row and column), interleaved with `depth_to_space`.

    DEVIATION from the published code in how, not what; the weights are the 3x3 kernel.

    Args:
        x: `[B, H, W, Cin]` feature map.
        kernel: `[3, 3, Cin, Cout]` convolution kernel (a `Conv2D` layer's).

    Returns:
        `[B, 2H, 2W, Cout]`.

    Example:
    >>> upsample_conv3x3(tf.ones([1, 16, 16, 2]), tf.ones([3, 3, 2, 5])).shape
    TensorShape([1, 32, 32, 5])
    """
    kernel = tf.cast(kernel, x.dtype)
    if _PHASES.get():
        return _phases(x, kernel)
    height, width = x.shape[1], x.shape[2]
    if height is not None and width is not None and min(height, width) < _TRANSPOSED_MIN_SIZE:
        upsampled = tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)
        return tf.nn.conv2d(upsampled, kernel, 1, "SAME")
    return _transposed(x, kernel)


def _conv_bn_inference(x, conv: keras.layers.Conv2D, bn):
    """`bn(conv(x), training=False)` with the BatchNorm folded into the kernel."""
    kernel, shift = bn.fold_into(conv.kernel)
    y = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), 1, conv.padding.upper())
    return tf.nn.bias_add(y, tf.cast(shift, x.dtype))


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class UpBlock(keras.layers.Layer):
    """Nearest x2 up-sampling, conv3x3 (no bias) to 2*out channels, BatchNorm, GLU.

    The published `upBlock(in_planes, out_planes)` (AttnGAN/MirrorGAN `model.py`); its
    Sequential indices are 0 upsample, 1 conv, 2 BN, 3 GLU, so the weights map as
    `upsample.1.weight -> conv`, `upsample.2.* -> bn`. The up-sampling and convolution run
    as one `upsample_conv3x3` (same result, and from 16 pixels up 2.25x fewer FLOPs than
    convolving the up-sampled map); the weights are the 3x3 kernel of `conv`, as published.
    In inference mode the BatchNorm is folded into that kernel (`BatchNormalization.fold_into`).

    Args:
        out_channels: channels after the GLU.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
    >>> UpBlock(4)(np.zeros([1, 4, 4, 8], "float32")).shape
    TensorShape([1, 8, 8, 4])
    """

    def __init__(self, out_channels: int, **kwargs):
        super().__init__(**kwargs)

        # === Layers ===
        # `conv` holds the published 3x3 kernel; `call` applies it with `upsample_conv3x3`.
        self.conv = conv3x3(2 * out_channels, name="conv")
        self.bn = batch_norm(name="bn")
        self.glu = GLU(name="glu")

        # === Config ===
        self.out_channels = out_channels

    def build(self, input_shape):
        batch, height, width, channels = input_shape
        up_shape = (
            batch,
            None if height is None else 2 * height,
            None if width is None else 2 * width,
            channels,
        )
        self.conv.build(up_shape)
        self.bn.build((*up_shape[:-1], 2 * self.out_channels))

    def call(self, x, training=None):
        if training:
            x = self.bn(upsample_conv3x3(x, self.conv.kernel), training=True)
        else:
            # Inference: BatchNorm folded into the kernel (same function, one pass less).
            kernel, shift = self.bn.fold_into(self.conv.kernel)
            x = upsample_conv3x3(x, kernel) + tf.cast(shift, x.dtype)
        return self.glu(x)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (
            batch,
            None if height is None else 2 * height,
            None if width is None else 2 * width,
            self.out_channels,
        )

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels)
        return config


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class ResidualBlock(keras.layers.Layer):
    """Residual block: conv3x3 C->2C, BN, GLU, conv3x3 C->C, BN, plus the input.

    The published `ResBlock(channel_num)`; Sequential indices 0 conv, 1 BN, 2 GLU, 3 conv, 4 BN
    map to `conv1`, `bn1`, `glu`, `conv2`, `bn2`. No activation after the sum, as published.
    In inference mode each BatchNorm is folded into its convolution's kernel.

    Args:
        channels: input and output channels C.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
    >>> ResidualBlock(8)(np.zeros([1, 4, 4, 8], "float32")).shape
    TensorShape([1, 4, 4, 8])
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)

        # === Layers ===
        self.conv1 = conv3x3(2 * channels, name="conv1")
        self.bn1 = batch_norm(name="bn1")
        self.glu = GLU(name="glu")
        self.conv2 = conv3x3(channels, name="conv2")
        self.bn2 = batch_norm(name="bn2")

        # === Config ===
        self.channels = channels

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.channels:
            raise ValueError(
                f"ResidualBlock({self.channels}) got {input_shape[-1]} input channels."
            )
        shape = (*input_shape[:-1], self.channels)
        self.conv1.build(shape)
        self.bn1.build((*shape[:-1], 2 * self.channels))
        self.conv2.build(shape)
        self.bn2.build(shape)

    def call(self, x, training=None):
        residual = x
        if training:
            x = self.glu(self.bn1(self.conv1(x), training=True))
            x = self.bn2(self.conv2(x), training=True)
        else:
            # Inference: each BatchNorm folded into its convolution (see `UpBlock.call`).
            x = self.glu(_conv_bn_inference(x, self.conv1, self.bn1))
            x = _conv_bn_inference(x, self.conv2, self.bn2)
        return x + residual

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels)
        return config
