"""STREAM: MirrorGAN's semantic text regeneration and alignment module (an image captioner).

Paper: Qiao et al., "MirrorGAN: Learning Text-to-image Generation by Redescription", CVPR 2019,
Sec. 3.3 (Eqs. 9-11). The published implementation follows a widely used PyTorch captioning
tutorial: EncoderCNN (ResNet-152 -> Linear -> BatchNorm1d) and DecoderRNN (Embedding, LSTM,
Linear), the image feature being the LSTM's first input step.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from mirrorgan_tf.networks.backbones import (
    check_backbone,
    resize_for_backbone,
    resnet152_torchvision,
    small_cnn,
)
from mirrorgan_tf.networks.image_encoder import check_image_batch
from mirrorgan_tf.validation import check_rank, check_token_ids

_DEFAULT_INPUT_SIZE = {"resnet152": 224, "small": None}
# torchvision's ImageNet statistics, on [0, 1] images.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Large negative score for impossible beam extensions (finite, so no inf - inf = nan).
_NEG = -1e9


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class CaptionerEncoder(keras.Model):
    """STREAM image encoder: CNN trunk -> global pool -> Dense(embed_dim) -> BatchNorm.

    Images in [-1, 1] are resized bilinearly to `input_size` (224 for ResNet-152) and, for the
    ImageNet-trained ResNet-152, converted to ImageNet mean/std normalisation.
    DEVIATION from the published MirrorGAN: it fed [-1, 1] images straight into a ResNet
    trained on ImageNet-normalised inputs; here they get the normalisation the trunk expects.
    The "small" backbone (trained from scratch) takes [-1, 1] images unchanged.
    With ResNet-152: 58,668,864 trainable parameters (trunk 58,143,808 + Dense + BN).

    Args:
        embed_dim: size of the image feature fed to the decoder (256).
        backbone: "resnet152" (torchvision layout) or "small".
        input_size: side the images are resized to; None means the backbone's default
            (224 for ResNet-152, no resizing for "small").
        blocks: ResNet bottleneck blocks per stage ((3, 8, 36, 3) is ResNet-152; tests use
            (1, 1, 1, 1)).
        width: channels of the trunk's first stage (64 for ResNet-152, 32 for "small").
        **kwargs: passed to `keras.Model`.

    Example:
    >>> encoder = CaptionerEncoder(embed_dim=8, backbone="small")
    >>> encoder(np.zeros([2, 64, 64, 3], "float32")).shape
    TensorShape([2, 8])
    """

    def __init__(
        self,
        embed_dim: int = 256,
        backbone: str = "resnet152",
        input_size: int | None = None,
        blocks: tuple = (3, 8, 36, 3),
        width: int | None = None,
        **kwargs,
    ):
        check_backbone(backbone, list(_DEFAULT_INPUT_SIZE))
        super().__init__(**kwargs)

        # === Layers ===
        if backbone == "resnet152":
            self.resnet = resnet152_torchvision(blocks=tuple(blocks), width=width or 64)
            feature_channels = self.resnet.output.shape[-1]
        else:
            self.resnet = small_cnn(width=width or 32)
            feature_channels = self.resnet.outputs[1].shape[-1]
        # EncoderCNN.linear and EncoderCNN.bn (BatchNorm1d momentum 0.01 -> Keras 0.99).
        self.linear = keras.layers.Dense(embed_dim, name="linear")
        self.bn = keras.layers.BatchNormalization(momentum=0.99, epsilon=1e-5, name="bn")

        # === Config ===
        self.embed_dim = embed_dim
        self.backbone = backbone
        self.input_size = input_size
        self.blocks = tuple(blocks)
        self.width = width
        self.resolved_input_size = input_size or _DEFAULT_INPUT_SIZE[backbone]

        self.linear.build((None, feature_channels))
        self.bn.build((None, embed_dim))
        self.built = True

    def call(self, images, training: bool | None = None):
        """Returns `[B, embed_dim]` image features for `[B, H, W, 3]` images in [-1, 1]."""
        check_image_batch(images, "images")
        x = ops.cast(images, self.compute_dtype)
        x = resize_for_backbone(x, self.resolved_input_size, self.backbone)
        if self.backbone == "resnet152":
            # [-1, 1] -> [0, 1] -> ImageNet mean/std (see the class docstring: a deviation).
            mean = ops.cast(ops.convert_to_tensor(_IMAGENET_MEAN), x.dtype)
            std = ops.cast(ops.convert_to_tensor(_IMAGENET_STD), x.dtype)
            x = ((x + 1.0) * 0.5 - mean) / std
            features = self.resnet(x, training=training)
        else:
            features = self.resnet(x, training=training)[1]
        return self.bn(self.linear(features), training=training)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            embed_dim=self.embed_dim,
            backbone=self.backbone,
            input_size=self.input_size,
            blocks=list(self.blocks),
            width=self.width,
        )
        return config


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class CaptionerDecoder(keras.Model):
    """STREAM caption decoder: Embedding -> LSTM -> Dense, the image feature as first step.

    Teacher forcing (paper Eq. 10): the input sequence is
    `[feature, embed(captions[:, 0]), ..., embed(captions[:, T-2])]`, so the logits at step t
    predict word t (there is no start token; id 0 is padding/<end>). Logits at step t depend
    only on the image and `captions[:, :t]`. Length masking belongs in the loss: the LSTM is
    causal, so padding after a caption's end does not change its earlier logits.
    Parameters: V*E + 4H(E+H) + 4H + H*V + V (Keras LSTMs carry one bias vector where
    PyTorch's carry two: 2,048 fewer than the published 5,768,010 / 22,568,353).

    Args:
        vocab_size: V, including id 0.
        embed_dim: word embedding and image feature size (256).
        hidden_dim: LSTM units (512).
        max_length: default number of words `greedy` and `beam_search` produce (20).
        unroll: unroll the LSTM over time (needed for a TFLite export).
        **kwargs: passed to `keras.Model`.

    Example:
    >>> decoder = CaptionerDecoder(vocab_size=10, embed_dim=8, hidden_dim=16)
    >>> decoder(np.zeros([2, 8], "float32"), np.ones([2, 5], "int32")).shape
    TensorShape([2, 5, 10])
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        hidden_dim: int = 512,
        max_length: int = 20,
        unroll: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)

        # === Layers ===
        # DecoderRNN.embed, .lstm and .linear.
        self.embed = keras.layers.Embedding(
            vocab_size, embed_dim,
            embeddings_initializer=keras.initializers.RandomUniform(-0.1, 0.1), name="embed",
        )
        self.lstm = keras.layers.LSTM(
            hidden_dim, return_sequences=True, unroll=unroll, name="lstm"
        )
        # Logits stay float32 under mixed precision.
        self.linear = keras.layers.Dense(vocab_size, dtype="float32", name="linear")

        # === Config ===
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.max_length = max_length
        self.unroll = unroll

        self.embed.build((None, None))
        self.lstm.build((None, None, embed_dim))
        self.linear.build((None, None, hidden_dim))
        self.built = True

    def _check_features(self, features) -> None:
        check_rank(features, 2, "features", f"[batch, {self.embed_dim}] image features")
        if features.shape[-1] is not None and features.shape[-1] != self.embed_dim:
            raise ValueError(
                f"`features` must be [batch, {self.embed_dim}] image features; "
                f"got shape {list(features.shape)}."
            )

    def call(self, features, captions, training: bool | None = None):
        """Teacher-forced logits `[B, T, V]` (float32) for `[B, T]` captions.

        Args:
            features: `[B, embed_dim]` image features from `CaptionerEncoder`.
            captions: `[B, T]` int token ids in [0, vocab_size); T >= 1.
            training: passed to the layers.
        """
        self._check_features(features)
        check_token_ids(captions, self.vocab_size, "captions")
        features = ops.cast(features, self.compute_dtype)
        words = self.embed(ops.cast(captions[:, :-1], "int32"))
        inputs = ops.concatenate([features[:, None, :], ops.cast(words, features.dtype)], axis=1)
        hidden = self.lstm(inputs, training=training)
        return self.linear(hidden)

    def _step(self, inputs, states):
        """One LSTM step with the layer's own cell; returns float32 logits and new states."""
        hidden, states = self.lstm.cell(inputs, states, training=False)
        return self.linear(hidden), states

    def _initial_states(self, batch, dtype):
        zeros = ops.zeros((batch, self.hidden_dim), dtype=dtype)
        return [zeros, zeros]

    def greedy(self, features, max_length: int | None = None):
        """Greedy decoding: `[B, L]` int32 ids; after the first 0 (<end>) every id is 0.

        A Python loop over a fixed `max_length` of tensor ops, so it traces in `tf.function`.
        As published (DecoderRNN.sample), the argmax word is fed back at each step.

        Args:
            features: `[B, embed_dim]` image features.
            max_length: number of steps L (default: the decoder's `max_length`).

        Example:
        >>> decoder = CaptionerDecoder(vocab_size=10, embed_dim=8, hidden_dim=16)
        >>> decoder.greedy(np.zeros([2, 8], "float32"), max_length=4).shape
        TensorShape([2, 4])
        """
        self._check_features(features)
        length = max_length or self.max_length
        inputs = ops.cast(features, self.compute_dtype)
        batch = ops.shape(inputs)[0]
        states = self._initial_states(batch, inputs.dtype)
        finished = ops.zeros((batch,), dtype="bool")
        ids = []
        for _ in range(length):
            logits, states = self._step(inputs, states)
            token = ops.cast(ops.argmax(logits, axis=-1), "int32")
            token = ops.where(finished, ops.zeros_like(token), token)
            finished = ops.logical_or(finished, ops.equal(token, 0))
            ids.append(token)
            inputs = ops.cast(self.embed(token), inputs.dtype)
        return ops.stack(ids, axis=1)

    def beam_search(self, features, beam_size: int = 3, max_length: int | None = None):
        """Beam search: `[B, L]` int32 ids of the best beam; 0 after the first 0 (<end>).

        Scores are plain sums of log-probabilities (no length normalisation), counted up to
        and including the first <end>; a finished beam only extends with 0 at no cost. With
        `beam_size=1` this is exactly `greedy`. Traceable in `tf.function` (fixed loop).

        Args:
            features: `[B, embed_dim]` image features.
            beam_size: beams kept per sample (K).
            max_length: number of steps L (default: the decoder's `max_length`).

        Example:
        >>> decoder = CaptionerDecoder(vocab_size=10, embed_dim=8, hidden_dim=16)
        >>> decoder.beam_search(np.zeros([2, 8], "float32"), beam_size=3, max_length=4).shape
        TensorShape([2, 4])
        """
        self._check_features(features)
        if beam_size < 1:
            raise ValueError(f"`beam_size` must be >= 1; got {beam_size}.")
        length = max_length or self.max_length
        k, vocab = beam_size, self.vocab_size
        features = ops.cast(features, self.compute_dtype)
        batch = ops.shape(features)[0]
        # Beams are flattened batch-major: row b * K + j is beam j of sample b.
        inputs = ops.repeat(features, k, axis=0)
        states = self._initial_states(batch * k, features.dtype)
        # Only beam 0 is live at first, so the first step does not yield K copies.
        scores = ops.tile(
            ops.convert_to_tensor([[0.0] + [_NEG] * (k - 1)], dtype="float32"), [batch, 1]
        )
        finished = ops.zeros((batch, k), dtype="bool")
        history = ops.zeros((batch, k, 0), dtype="int32")
        end_only = ops.convert_to_tensor([0.0] + [_NEG] * (vocab - 1), dtype="float32")
        for _ in range(length):
            logits, states = self._step(inputs, states)
            log_probs = ops.reshape(ops.log_softmax(logits, axis=-1), (batch, k, vocab))
            log_probs = ops.where(finished[:, :, None], end_only, log_probs)
            candidates = ops.reshape(scores[:, :, None] + log_probs, (batch, k * vocab))
            scores, index = ops.top_k(candidates, k=k)
            beam = index // vocab
            token = ops.cast(index % vocab, "int32")
            history = ops.concatenate(
                [tf.gather(history, beam, batch_dims=1), token[:, :, None]], axis=2
            )
            finished = ops.logical_or(
                tf.gather(finished, beam, batch_dims=1), ops.equal(token, 0)
            )
            states = [
                ops.reshape(
                    tf.gather(ops.reshape(s, (batch, k, self.hidden_dim)), beam, batch_dims=1),
                    (batch * k, self.hidden_dim),
                )
                for s in states
            ]
            inputs = ops.cast(self.embed(ops.reshape(token, (-1,))), features.dtype)
        # top_k sorts descending: beam 0 is the best.
        return history[:, 0, :]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            embed_dim=self.embed_dim,
            hidden_dim=self.hidden_dim,
            max_length=self.max_length,
            unroll=self.unroll,
        )
        return config


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class Captioner(keras.Model):
    """STREAM: image -> caption model whose caption loss drives MirrorGAN's redescription.

    Holds a `CaptionerEncoder` (`.encoder`) and a `CaptionerDecoder` (`.decoder`). In MirrorGAN
    it is pretrained on the dataset's captions, then frozen while the GAN trains; gradients
    still flow through it into the generator (paper Eq. 11, L_stream).

    Args:
        vocab_size: V, including id 0.
        embed_dim: image feature and word embedding size (256).
        hidden_dim: LSTM units (512).
        backbone: "resnet152" or "small".
        max_length: default generated length (20).
        input_size: images are resized to this side; None means the backbone's default.
        blocks: ResNet blocks per stage (tests use (1, 1, 1, 1)).
        width: channels of the trunk's first stage (None: the backbone's default).
        unroll: unroll the decoder LSTM (for TFLite).
        **kwargs: passed to `keras.Model`.

    Example:
    >>> captioner = Captioner(vocab_size=10, embed_dim=8, hidden_dim=16, backbone="small")
    >>> images = np.zeros([2, 64, 64, 3], "float32")
    >>> captioner(images, np.ones([2, 5], "int32")).shape
    TensorShape([2, 5, 10])
    >>> captioner.generate(images, beam_size=2).shape
    TensorShape([2, 20])
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        hidden_dim: int = 512,
        backbone: str = "resnet152",
        max_length: int = 20,
        input_size: int | None = None,
        blocks: tuple = (3, 8, 36, 3),
        width: int | None = None,
        unroll: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)

        # === Layers ===
        self.encoder = CaptionerEncoder(
            embed_dim=embed_dim, backbone=backbone, input_size=input_size, blocks=blocks,
            width=width, name="encoder",
        )
        self.decoder = CaptionerDecoder(
            vocab_size, embed_dim=embed_dim, hidden_dim=hidden_dim, max_length=max_length,
            unroll=unroll, name="decoder",
        )

        # === Config ===
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.backbone = backbone
        self.max_length = max_length
        self.input_size = input_size
        self.blocks = tuple(blocks)
        self.width = width
        self.unroll = unroll
        self.built = True

    def call(self, images, captions, training: bool | None = None):
        """Teacher-forced logits `[B, T, V]` (float32) of `[B, T]` captions given images."""
        check_token_ids(captions, self.vocab_size, "captions")
        features = self.encoder(images, training=training)
        return self.decoder(features, captions, training=training)

    def generate(self, images, beam_size: int = 1, max_length: int | None = None):
        """Captions `[B, L]` int32 ids for images (greedy when `beam_size` is 1)."""
        features = self.encoder(images, training=False)
        if beam_size == 1:
            return self.decoder.greedy(features, max_length=max_length)
        return self.decoder.beam_search(features, beam_size=beam_size, max_length=max_length)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            embed_dim=self.embed_dim,
            hidden_dim=self.hidden_dim,
            backbone=self.backbone,
            max_length=self.max_length,
            input_size=self.input_size,
            blocks=list(self.blocks),
            width=self.width,
            unroll=self.unroll,
        )
        return config
