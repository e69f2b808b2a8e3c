"""STEM, MirrorGAN's semantic text embedding module: a bidirectional RNN over word embeddings."""

from __future__ import annotations

import keras
from keras import ops

from mirrorgan_tf.distribute import global_dropout
from mirrorgan_tf.validation import check_token_ids

RNN_TYPES = ("lstm", "gru")


def caption_mask(token_ids):
    """Word mask of a padded caption batch: True before each caption's first 0 (padding/end).

    The caption length is the position of the first 0, so ids after it never matter, whatever
    they are. Uses a cumulative sum (a TFLite builtin) rather than a cumulative product.

    Args:
        token_ids: int [B, T] token ids, 0 = padding/end.

    Returns:
        bool [B, T].

    Example:
    >>> caption_mask(np.array([[4, 7, 0, 0], [3, 0, 9, 0]])).numpy()
    array([[ True,  True, False, False],
           [ True, False, False, False]])
    """
    is_end = ops.cast(ops.equal(token_ids, 0), "int32")
    return ops.equal(ops.cumsum(is_end, axis=1), 0)


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class TextEncoder(keras.Model):
    """STEM: embeddings, dropout and a bidirectional LSTM (or GRU) -> word and sentence features.

    MirrorGAN paper Sec. 3.1 (Eq. 1), the published `RNN_ENCODER` of AttnGAN's DAMSM:
    Embedding(V, 300) initialised uniform(-0.1, 0.1), dropout, one bidirectional layer of nef//2
    units per direction over the length-masked caption. Words w [B, T, nef] are the RNN outputs
    (zeros at padded positions, as PyTorch's `pad_packed_sequence` gives); the sentence s [B, nef]
    is [forward final state at the caption's true length, backward final state], as PyTorch's
    packed-sequence h_n. A caption ends at its first 0 (see `caption_mask`). Outputs are float32
    also under mixed precision.
    Differences from PyTorch: Keras LSTM/GRU recurrent kernels keep Keras's default init, and a
    Keras LSTM has one bias per gate block (PyTorch b_ih + b_hh), so 2 x 4 x nef//2 fewer
    parameters; a checkpoint converts with kernel = W^T and bias = b_ih + b_hh.
    Weight mapping: `encoder.weight` -> `embedding`; `rnn.*_l0` -> `rnn.forward_layer`,
    `rnn.*_l0_reverse` -> `rnn.backward_layer`.

    DEVIATION, off by default (on in the `shapes` preset): `normalize_sentence=True` rescales
    each sentence feature to norm sqrt(nef), i.e. about unit scale per dimension. DAMSM compares
    sentences by cosine, so pretraining is unchanged, but the generator's conditioning
    augmentation and the discriminators' conditional heads then receive the caption at the
    scale of their noise and image codes instead of about 0.08 per dimension. In a short CPU run
    that is the difference between a generator that ignores the caption and one that follows it
    (see the README's demo section). The published presets keep it off, so converted
    checkpoints behave exactly as published.

    Args:
        vocab_size: V, including id 0 (`<end>`/padding).
        embedding_dim: word embedding size (300).
        nef: feature size of words and sentence (256); nef//2 units per direction.
        rnn_type: "lstm" (published) or "gru".
        dropout: dropout rate on the embeddings (0.5).
        unroll: unroll the RNN over time (needs a static caption length; for TFLite export).
        normalize_sentence: rescale the sentence feature to norm sqrt(nef) (see above).
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:
    >>> encoder = TextEncoder(vocab_size=50, embedding_dim=8, nef=16)
    >>> words, sentence = encoder(np.array([[4, 9, 2, 0]]), training=False)
    >>> words.shape, sentence.shape
    (TensorShape([1, 4, 16]), TensorShape([1, 16]))
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 300,
        nef: int = 256,
        rnn_type: str = "lstm",
        dropout: float = 0.5,
        unroll: bool = False,
        normalize_sentence: bool = False,
        **kwargs,
    ):
        if rnn_type not in RNN_TYPES:
            raise ValueError(f"`rnn_type` must be one of {RNN_TYPES}; got {rnn_type!r}.")
        if nef % 2:
            raise ValueError(f"`nef` must be even (nef//2 units per direction); got {nef}.")
        if vocab_size < 2:
            raise ValueError(f"`vocab_size` must be at least 2; got {vocab_size}.")
        super().__init__(**kwargs)

        # === Layers ===
        self.embedding = keras.layers.Embedding(
            vocab_size,
            embedding_dim,
            embeddings_initializer=keras.initializers.RandomUniform(-0.1, 0.1),
            name="embedding",
        )
        self.dropout = keras.layers.Dropout(dropout, name="dropout")
        rnn_class = keras.layers.LSTM if rnn_type == "lstm" else keras.layers.GRU
        self.rnn = keras.layers.Bidirectional(
            rnn_class(nef // 2, return_sequences=True, return_state=True, unroll=unroll),
            merge_mode="concat",
            name="rnn",
        )
        # Bidirectional forces zero_output_for_mask=True; Keras's unrolled loop then zeroes the
        # backward outputs with the unreversed mask (the wrong time steps). Outputs at padded
        # steps are zeroed in `call` instead, the same way for looped and unrolled RNNs.
        self.rnn.forward_layer.zero_output_for_mask = False
        self.rnn.backward_layer.zero_output_for_mask = False

        # === Config ===
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.nef = nef
        self.rnn_type = rnn_type
        self.dropout_rate = dropout
        self.unroll = unroll
        self.normalize_sentence = bool(normalize_sentence)

        # Every weight shape is known from the config: create them now (counts, loading).
        self.embedding.build((None, None))
        self.rnn.build((None, None, embedding_dim))
        self.built = True

    def call(self, token_ids, training=None):
        check_token_ids(token_ids, self.vocab_size, "token_ids")
        token_ids = ops.cast(token_ids, "int32")
        if self.unroll and token_ids.shape[1] is None:
            raise ValueError(
                "`token_ids` needs a static caption length when `unroll=True`; got shape "
                f"{token_ids.shape}."
            )
        mask = caption_mask(token_ids)
        # The Dropout layer's rate and seed, with masks drawn for the global batch under
        # tf.distribute (`global_dropout`; with one replica this is the layer itself).
        x = global_dropout(
            self.embedding(token_ids),
            self.dropout.rate,
            getattr(self.dropout, "seed_generator", None),  # absent when the rate is 0
            training,
        )
        outputs = self.rnn(x, mask=mask, training=training)
        words = outputs[0]
        # LSTM states are [h_fw, c_fw, h_bw, c_bw]; GRU states are [h_fw, h_bw].
        states = outputs[1:]
        half = len(states) // 2
        # Masked steps carry the state through, so the forward state is the one at the true
        # length and the backward one ends at the first word: PyTorch's packed h_n.
        sentence = ops.concatenate([states[0], states[half]], axis=-1)
        words = words * ops.cast(mask, words.dtype)[:, :, None]
        if self.normalize_sentence:
            sentence = ops.cast(sentence, "float32")
            squared = ops.sum(ops.square(sentence), axis=-1, keepdims=True)
            # The epsilon keeps an all-zero sentence (an empty caption) at zero.
            sentence = sentence * ops.rsqrt(squared + 1e-12) * float(self.nef) ** 0.5
        return ops.cast(words, "float32"), ops.cast(sentence, "float32")

    def compute_output_shape(self, token_ids_shape):
        batch, length = token_ids_shape
        return (batch, length, self.nef), (batch, self.nef)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            embedding_dim=self.embedding_dim,
            nef=self.nef,
            rnn_type=self.rnn_type,
            dropout=self.dropout_rate,
            unroll=self.unroll,
            normalize_sentence=self.normalize_sentence,
        )
        return config
