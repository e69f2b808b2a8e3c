"""GLAM's global-local collaborative attention (MirrorGAN paper Sec. 3.2, Eqs. 4 and 5)."""

from __future__ import annotations

import keras
from keras import ops

from mirrorgan_tf.layers.initializers import kernel_initializer

# Score given to padded words before the softmax. The published code uses -inf, which turns an
# all-padding row into NaN; a large finite value in float32 cannot, and exp() of it is exactly 0.
_MASK_SCORE = -1e9


def _softmax(x, axis: int = -1):
    """Softmax written out: `ops.softmax` warns on a size-1 axis, e.g. a one-word caption."""
    x = ops.exp(x - ops.max(x, axis=axis, keepdims=True))
    return x / ops.sum(x, axis=axis, keepdims=True)


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class GlobalLocalAttention(keras.layers.Layer):
    """Word-level (Eq. 4) and sentence-level (Eq. 5) attention on the image features h.

    Word level, as AttnGAN's `GlobalAttentionGeneral`: words are projected to the image channel
    count (conv1x1 nef -> C, no bias); scores[b, y, x, t] = <h[b, y, x], word[b, t]>; padded words
    are masked; softmax over words; word_context = sum_t attn * word.
    Sentence level, as MirrorGAN's addition: s = Linear(c -> C, bias)(c_code) tiled over H x W;
    sent_att = softmax over the channel axis of conv1x1(C -> C, no bias)(h * s);
    sentence_context = s * sent_att.

    Deviation from the published code: there the [B, T] padding mask is repeated batch-major
    (`mask.repeat(queryL, 1)`) while the scores are laid out query-major ([B*HW, T]), so most rows
    receive another sample's mask (AttnGAN issue #93). Here each sample is masked with its own
    mask by broadcasting it over H x W. Scores, masking and both softmaxes run in float32.

    Weight mapping from PyTorch (`h_net{2,3}.att.*`): `conv_context.weight` [C, nef, 1, 1] ->
    `word_projection.kernel` = w[:, :, 0, 0].T (a Dense on the word axis); `linear.{weight,bias}`
    -> `sentence_projection.{kernel (transposed), bias}`; `conv_sentence_vis.weight` [C, C, 1, 1]
    -> `sentence_vision.kernel` (a 1x1 Conv2D, transpose (2, 3, 1, 0)).

    Args:
        channels: C, the channel count of the image features h.
        **kwargs: passed to `keras.layers.Layer`.

    Call args:
        h: image features [B, H, W, C].
        words: word features [B, T, nef].
        c_code: conditioning code [B, c] (the CA output, not the raw sentence feature).
        word_mask: bool [B, T], True for real words; None means every word is real.

    Returns:
        (word_context [B, H, W, C], sentence_context [B, H, W, C], word_attention [B, H, W, T]
        in float32). Padded words get exactly zero attention, also when a caption is empty.

    Example:
    >>> att = GlobalLocalAttention(4)
    >>> wc, sc, attn = att(np.zeros([1, 8, 8, 4], "float32"), np.zeros([1, 5, 16], "float32"),
    ...                    np.zeros([1, 10], "float32"), np.ones([1, 5], bool))
    >>> attn.shape
    TensorShape([1, 8, 8, 5])
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)

        # === Layers ===
        self.word_projection = keras.layers.Dense(
            channels, use_bias=False, kernel_initializer=kernel_initializer(),
            name="word_projection",
        )
        self.sentence_projection = keras.layers.Dense(
            channels, use_bias=True, kernel_initializer=kernel_initializer(),
            name="sentence_projection",
        )
        self.sentence_vision = keras.layers.Conv2D(
            channels, 1, use_bias=False, kernel_initializer=kernel_initializer(),
            name="sentence_vision",
        )

        # === Config ===
        self.channels = channels

    def build(self, h_shape, words_shape, c_code_shape, word_mask_shape=None):
        if h_shape[-1] is not None and h_shape[-1] != self.channels:
            raise ValueError(
                f"GlobalLocalAttention({self.channels}) got h with {h_shape[-1]} channels."
            )
        self.word_projection.build(words_shape)
        self.sentence_projection.build(c_code_shape)
        self.sentence_vision.build((*h_shape[:-1], self.channels))

    def call(self, h, words, c_code, word_mask=None):
        # --- Word level (Eq. 4) ---
        words = self.word_projection(words)  # [B, T, C]
        scores = ops.einsum(
            "byxc,btc->byxt", ops.cast(h, "float32"), ops.cast(words, "float32")
        )
        if word_mask is not None:
            # Each sample's own mask, broadcast over its H x W queries (see class docstring).
            mask = ops.cast(word_mask, "bool")[:, None, None, :]
            scores = ops.where(mask, scores, ops.full_like(scores, _MASK_SCORE))
        word_attention = _softmax(scores, axis=-1)
        if word_mask is not None:
            # Exact zeros for padded words, and no uniform weights for an empty caption.
            word_attention = word_attention * ops.cast(mask, "float32")
        word_context = ops.einsum(
            "byxt,btc->byxc", ops.cast(word_attention, words.dtype), words
        )

        # --- Sentence level (Eq. 5) ---
        sentence = self.sentence_projection(c_code)[:, None, None, :]  # [B, 1, 1, C]
        sentence = ops.cast(sentence, h.dtype)
        vision = self.sentence_vision(h * sentence)
        # Softmax over channels: PyTorch's implicit nn.Softmax() dim is 1 (C) for 4-D input.
        sentence_attention = _softmax(ops.cast(vision, "float32"), axis=-1)
        sentence_context = sentence * ops.cast(sentence_attention, h.dtype)
        return word_context, sentence_context, word_attention

    def compute_output_shape(self, h_shape, words_shape, c_code_shape, word_mask_shape=None):
        context = (*h_shape[:-1], self.channels)
        return context, context, (*h_shape[:-1], words_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels)
        return config
