"""STREAM pretraining: the image captioner trained on the dataset's own captions.

MirrorGAN (Qiao et al., CVPR 2019, Sec. 3.3) pretrains STREAM as a standard encoder-decoder
captioner with teacher forcing (Eq. 10), then freezes it while the GAN trains.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from mirrorgan_tf.data.tokenizer import tokenize_text
from mirrorgan_tf.data.vocabulary import Vocabulary
from mirrorgan_tf.distribute import global_share, step_logs
from mirrorgan_tf.evaluation.bleu import corpus_bleu
from mirrorgan_tf.losses import caption_loss
from mirrorgan_tf.training.base import PrebuiltTrainer
from mirrorgan_tf.training.damsm import stage_images


def token_accuracy(logits, captions, lengths):
    """Fraction of real (length-masked) words whose argmax logit is the caption's word.

    Args:
        logits: [B, T, V] word logits.
        captions: [B, T] token ids.
        lengths: [B] caption lengths.

    Returns:
        float32 scalar in [0, 1].

    Example:
    >>> float(token_accuracy(tf.one_hot([[1, 2, 0]], 3), [[1, 2, 1]], [2]))
    1.0
    """
    captions = tf.cast(captions, tf.int32)
    mask = tf.sequence_mask(lengths, maxlen=tf.shape(captions)[1], dtype=tf.float32)
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), captions), tf.float32)
    return tf.reduce_sum(hits * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class CaptionerTrainer(PrebuiltTrainer):
    """Pretrains STREAM with teacher-forced, length-masked cross-entropy (MirrorGAN Eq. 10).

    Inputs are the largest stage's images (`data["images"][-1]`) and `data["token_ids"]`; the
    loss counts the words before `data["caption_length"]` and, with `predict_end`, the
    `<end>` (id 0) that follows them, so that generation learns to stop. (AttnGAN-style data
    has no end token in its lengths; the captioning tutorial STREAM follows trained one.)
    `accuracy` is the token accuracy over the real words only. As in the published captioning
    code, an ImageNet ResNet-152 trunk stays frozen and only the encoder's Dense + BatchNorm
    and the decoder train (`train_trunk=None` decides by backbone: frozen for "resnet152",
    trained for the randomly initialised "small" trunk). A frozen trunk also keeps its
    BatchNorm statistics (the published code let them drift in train mode).

    Args:
        captioner: a `Captioner` (STREAM).
        train_trunk: whether the encoder's CNN trunk trains; None: only for "small".
        predict_end: also train the `<end>` after each caption (where it fits in T).
        **kwargs: passed to `keras.Model`.

    Example:
    >>> trainer = CaptionerTrainer(Captioner(vocab_size=20, embed_dim=8, hidden_dim=16,
    ...                                      backbone="small"))
    >>> trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> history = trainer.fit(dataset.batch(32), epochs=1)  # dataset: the data contract's
    """

    def __init__(
        self,
        captioner: keras.Model,
        train_trunk: bool | None = None,
        predict_end: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)

        # === Layers ===
        self.captioner = captioner
        if train_trunk is None:
            train_trunk = getattr(captioner, "backbone", None) == "small"
        captioner.encoder.resnet.trainable = train_trunk

        # === Config ===
        self.train_trunk = train_trunk
        self.predict_end = predict_end

        # === Metrics ===
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        # The networks build their weights in their constructors: nothing is left to build.
        self.built = True

    @property
    def metrics(self) -> list:
        return [self.loss_tracker, self.accuracy_tracker]

    def compile(self, optimizer=None, jit_compile: bool | str = False, **kwargs) -> None:
        """Sets the optimizer (default Adam(1e-3), as published); XLA off by default.

        Dataset elements carry strings (keys, raw captions) that XLA has no use for, and XLA
        was not faster on CPU; pass `jit_compile=True` to try it.
        """
        if optimizer is None:
            optimizer = keras.optimizers.Adam(1e-3)
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config: dict) -> None:
        """Recompiles on `load_model` (Keras skips models whose `compile` is overridden)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        # Create the optimizer's variables so that the saved ones load into them.
        self.optimizer.build(self.trainable_variables)

    def call(self, data, training: bool | None = None):
        """Teacher-forced logits `[B, T, V]` of a batch."""
        return self.captioner(stage_images(data["images"]), data["token_ids"], training=training)

    def target_lengths(self, data):
        """Positions the loss counts: the words, plus the `<end>` after them (`predict_end`)."""
        lengths = tf.cast(data["caption_length"], tf.int32)
        if not self.predict_end:
            return lengths
        return tf.minimum(lengths + 1, tf.shape(data["token_ids"])[1])

    def _step_logs(self, logits, data, loss) -> dict:
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(
            token_accuracy(logits, data["token_ids"], data["caption_length"])
        )
        return step_logs(
            {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_tracker.result()}
        )

    def train_step(self, data):
        variables = self.captioner.trainable_variables
        with tf.GradientTape() as tape:
            logits = self(data, training=True)
            lengths = self.target_lengths(data)
            loss = caption_loss(logits, data["token_ids"], lengths)
            # The loss is a mean over the batch's words. Under tf.distribute each replica
            # weights its mean by its share of the global batch's words, so that the
            # gradients the optimizer sums over replicas are those of the global mean (the
            # replicas' word counts differ). One replica: a weight of 1.0.
            words = tf.reduce_sum(tf.minimum(lengths, tf.shape(data["token_ids"])[1]))
            scaled_loss = self.optimizer.scale_loss(loss * global_share(words))
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return self._step_logs(logits, data, loss)

    def test_step(self, data):
        logits = self(data, training=False)
        loss = caption_loss(logits, data["token_ids"], self.target_lengths(data))
        return self._step_logs(logits, data, loss)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            captioner=keras.saving.serialize_keras_object(self.captioner),
            train_trunk=self.train_trunk,
            predict_end=self.predict_end,
        )
        return config

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["captioner"] = keras.saving.deserialize_keras_object(config["captioner"])
        return cls(**config)


def _as_text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def evaluate_captions(
    captioner: keras.Model,
    dataset: Iterable,
    vocabulary: Vocabulary,
    max_batches: int | None = None,
    beam_size: int = 1,
) -> dict:
    """Captions a (batched) validation split and scores corpus BLEU-1..4 against its captions.

    References are the raw captions (`data["caption"]`) split with the package's tokenization
    rule, so words outside the vocabulary count as misses, as in standard captioning
    evaluation; without raw captions the decoded `token_ids` serve. Elements that share a
    `data["key"]` (one image, several captions) are one hypothesis with all their captions as
    references; the first generation for a key is kept.

    Args:
        captioner: a `Captioner` with `generate(images, beam_size)`.
        dataset: batches of the data contract's elements (e.g. a batched `tf.data.Dataset`).
        vocabulary: the captioner's vocabulary, to decode generated ids.
        max_batches: stop after this many batches (None: the whole dataset).
        beam_size: 1 for greedy decoding (as published), more for beam search.

    Returns:
        {"bleu_1": ..., "bleu_4": ..., "samples": [(reference, hypothesis), ...]}, one sample
        per image (its first reference).

    Example:
    >>> scores = evaluate_captions(captioner, validation.batch(32), vocab, max_batches=10)
    >>> scores["bleu_4"], scores["samples"][0]
    """
    generate = tf.function(
        lambda images: captioner.generate(images, beam_size=beam_size), reduce_retracing=True
    )
    references: dict = {}
    hypotheses: dict = {}
    counter = 0
    for batch_index, data in enumerate(dataset):
        if max_batches is not None and batch_index >= max_batches:
            break
        generated = np.asarray(generate(stage_images(data["images"])))
        token_ids = np.asarray(data["token_ids"])
        captions = np.asarray(data["caption"]) if "caption" in data else None
        keys = np.asarray(data["key"]) if "key" in data else None
        for row in range(generated.shape[0]):
            key = _as_text(keys[row]) if keys is not None else f"#{counter}"
            counter += 1
            if captions is not None:
                reference = tokenize_text(_as_text(captions[row]))
            else:
                reference = vocabulary.decode(token_ids[row]).split()
            references.setdefault(key, [])
            if reference not in references[key]:
                references[key].append(reference)
            hypotheses.setdefault(key, vocabulary.decode(generated[row]).split())
    keys = list(hypotheses)
    scores = corpus_bleu([references[k] for k in keys], [hypotheses[k] for k in keys])
    result = {f"bleu_{n}": score for n, score in enumerate(scores, start=1)}
    result["samples"] = [(" ".join(references[k][0]), " ".join(hypotheses[k])) for k in keys]
    return result
