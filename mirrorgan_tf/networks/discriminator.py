"""The per-scale discriminators of MirrorGAN (the same as AttnGAN's D_NET64/128/256)."""

from __future__ import annotations

import keras
from keras import ops

from mirrorgan_tf.layers.convolution import SmallMapConv2D
from mirrorgan_tf.layers.initializers import batch_norm, kernel_initializer
from mirrorgan_tf.validation import check_images, check_rank

IMAGE_SIZES = (64, 128, 256)


def _build_chain(layers: list, shape: tuple) -> tuple:
    """Builds `layers` in order from `shape`; returns the output shape (no computation)."""
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return tuple(shape)


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class Discriminator(keras.Model):
    """Discriminator for one image scale with an unconditional and a sentence-conditional head.

    Follows the published code (AttnGAN `D_NET64/128/256`, used unchanged by MirrorGAN, paper
    Sec. 3.4): an encoder down to a 4x4 code of 8*df_dim channels (conv4x4/2 steps, then conv3x3
    steps back to 8*df_dim for 128 and 256), an unconditional head conv4x4/4 -> logit, and a
    conditional head that concatenates the sentence feature tiled 4x4, applies conv3x3 + BN +
    LeakyReLU(0.2) and its own conv4x4/4 -> logit. All convs have no bias except the two heads.
    Layer names follow the PyTorch state_dict (`img_code_s16_0` is `img_code_s16.0`, etc.).
    Deviation: the published heads end in a sigmoid (trained with BCELoss); these return the
    logits before it, to be used with a from-logits BCE (numerically safer, same optimum).
    Convolutions whose output is at most 8x8 run as one matrix product (`SmallMapConv2D`:
    the same function and weights, 1.5-2x faster forward+backward on CPU at these sizes).

    Args:
        image_size: 64, 128 or 256.
        df_dim: base channel count (DF_DIM: 64 for birds, 96 for COCO).
        nef: size of the sentence feature the conditional head takes (256).
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:
    >>> d = Discriminator(image_size=64, df_dim=4, nef=8)
    >>> uncond, cond = d(np.zeros([2, 64, 64, 3], "float32"), np.zeros([2, 8], "float32"))
    >>> uncond.shape, cond.shape
    (TensorShape([2]), TensorShape([2]))
    """

    def __init__(self, image_size: int = 64, df_dim: int = 64, nef: int = 256, **kwargs):
        if image_size not in IMAGE_SIZES:
            raise ValueError(f"`image_size` must be one of {IMAGE_SIZES}; got {image_size!r}.")
        super().__init__(**kwargs)

        # === Layers ===
        ndf = df_dim

        def conv4x4_down(filters: int, name: str) -> list:
            # PyTorch conv4x4, stride 2, padding 1: pad both sides explicitly, then "valid".
            return [
                keras.layers.ZeroPadding2D(1, name=f"{name}_pad"),
                SmallMapConv2D(
                    filters, 4, strides=2, use_bias=False,
                    kernel_initializer=kernel_initializer(), name=name,
                ),
            ]

        def conv3x3(filters: int, name: str) -> SmallMapConv2D:
            # Stride 1, padding 1: "same" is PyTorch's symmetric padding here.
            return SmallMapConv2D(
                filters, 3, padding="same", use_bias=False,
                kernel_initializer=kernel_initializer(), name=name,
            )

        def lrelu(name: str) -> keras.layers.LeakyReLU:
            return keras.layers.LeakyReLU(negative_slope=0.2, name=name)

        # encode_image_by_16times: Sequential indices 0 (conv), 2/3, 5/6, 8/9 (conv, BN).
        encoder = [*conv4x4_down(ndf, "img_code_s16_0"), lrelu("img_code_s16_1")]
        for index, multiple in zip((2, 5, 8), (2, 4, 8), strict=True):
            encoder += [
                *conv4x4_down(ndf * multiple, f"img_code_s16_{index}"),
                batch_norm(f"img_code_s16_{index + 1}"),
                lrelu(f"img_code_s16_{index + 2}"),
            ]

        def down_block(filters: int, name: str) -> list:
            return [*conv4x4_down(filters, f"{name}_0"), batch_norm(f"{name}_1"),
                    lrelu(f"{name}_2")]

        def block3x3(filters: int, name: str) -> list:
            return [conv3x3(filters, f"{name}_0"), batch_norm(f"{name}_1"), lrelu(f"{name}_2")]

        if image_size == 128:
            encoder += down_block(ndf * 16, "img_code_s32")
            encoder += block3x3(ndf * 8, "img_code_s32_1")
        elif image_size == 256:
            encoder += down_block(ndf * 16, "img_code_s32")
            encoder += down_block(ndf * 32, "img_code_s64")
            encoder += block3x3(ndf * 16, "img_code_s64_1")
            encoder += block3x3(ndf * 8, "img_code_s64_2")
        self.encoder_layers = encoder

        def out_logits(name: str) -> SmallMapConv2D:
            # D_GET_LOGITS.outlogits: conv4x4 stride 4 with bias on the 4x4 code -> 1x1x1.
            return SmallMapConv2D(
                1, 4, strides=4, use_bias=True, kernel_initializer=kernel_initializer(),
                name=name,
            )

        self.uncond_outlogits = out_logits("UNCOND_DNET_outlogits_0")
        # COND_DNET.jointConv = Block3x3_leakRelu(8ndf + nef -> 8ndf).
        self.cond_joint_layers = block3x3(ndf * 8, "COND_DNET_jointConv")
        self.cond_outlogits = out_logits("COND_DNET_outlogits_0")

        # === Config ===
        self.image_size = image_size
        self.df_dim = df_dim
        self.nef = nef

        # All shapes follow from the config: build now so the weights exist (and load) at once.
        code_shape = _build_chain(self.encoder_layers, (None, image_size, image_size, 3))
        if tuple(code_shape[1:]) != (4, 4, ndf * 8):
            raise AssertionError(f"unexpected code shape {code_shape}")
        self.uncond_outlogits.build(code_shape)
        joint_shape = _build_chain(self.cond_joint_layers, (None, 4, 4, ndf * 8 + nef))
        self.cond_outlogits.build(joint_shape)
        self.built = True

    def encode(self, images, training: bool | None = None):
        """Encodes `[B, S, S, 3]` images in [-1, 1] into the `[B, 4, 4, 8*df_dim]` code.

        Args:
            images: float images of the discriminator's size.
            training: BatchNorm mode.

        Example:
        >>> code = Discriminator(64, df_dim=4, nef=8).encode(np.zeros([1, 64, 64, 3], "float32"))
        """
        check_images(images, [self.image_size], "images")
        x = ops.cast(images, self.compute_dtype)
        for layer in self.encoder_layers:
            x = layer(x, training=training)
        return x

    def unconditional_logits(self, code):
        """Logits `[B]` (float32) of the unconditional head on a `[B, 4, 4, 8*df_dim]` code.

        Example:
        >>> d = Discriminator(64, df_dim=4, nef=8)
        >>> logits = d.unconditional_logits(d.encode(np.zeros([1, 64, 64, 3], "float32")))
        """
        logits = self.uncond_outlogits(code)
        return ops.cast(ops.reshape(logits, [-1]), "float32")

    def conditional_logits(self, code, sentence, training: bool | None = None):
        """Logits `[B]` (float32) of the sentence-conditional head.

        Args:
            code: `[B, 4, 4, 8*df_dim]` image code from `encode`.
            sentence: `[B, nef]` sentence features (STEM's raw sentence feature, not c_code).
            training: BatchNorm mode.

        Example:
        >>> d = Discriminator(64, df_dim=4, nef=8)
        >>> code = d.encode(np.zeros([2, 64, 64, 3], "float32"))
        >>> logits = d.conditional_logits(code, np.zeros([2, 8], "float32"))
        """
        check_rank(sentence, 2, "sentence", f"[batch, {self.nef}] sentence features")
        if sentence.shape[-1] is not None and sentence.shape[-1] != self.nef:
            raise ValueError(
                f"`sentence` must be [batch, {self.nef}] sentence features; "
                f"got shape {list(sentence.shape)}."
            )
        sentence = ops.cast(sentence, code.dtype)
        # Tile the sentence over the 4x4 code and put it after the image channels, as
        # torch.cat((h_code, c_code), 1) does in D_GET_LOGITS.
        tiled = ops.tile(sentence[:, None, None, :], [1, 4, 4, 1])
        x = ops.concatenate([code, tiled], axis=-1)
        for layer in self.cond_joint_layers:
            x = layer(x, training=training)
        logits = self.cond_outlogits(x)
        return ops.cast(ops.reshape(logits, [-1]), "float32")

    def call(self, images, sentence=None, training: bool | None = None):
        """Returns `(unconditional [B], conditional [B] or None)` float32 logits.

        Args:
            images: `[B, S, S, 3]` images in [-1, 1], S = image_size.
            sentence: optional `[B, nef]` sentence features; without it the conditional
                logits are None.
            training: BatchNorm mode.
        """
        code = self.encode(images, training=training)
        uncond = self.unconditional_logits(code)
        cond = None
        if sentence is not None:
            cond = self.conditional_logits(code, sentence, training=training)
        return uncond, cond

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(image_size=self.image_size, df_dim=self.df_dim, nef=self.nef)
        return config
