"""DAMSM pretraining of STEM (the text encoder) with the DAMSM image encoder.

AttnGAN (Xu et al., CVPR 2018, Sec. 3.3, Eqs. 7-13) pretrains the text encoder and the image
encoder's projections so that words match image regions and sentences match images; MirrorGAN
(Qiao et al., CVPR 2019, Sec. 3.1) takes the pretrained text encoder as STEM and freezes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from mirrorgan_tf.distribute import (
    all_reduce_sum,
    gather_batch,
    num_replicas,
    replica_context,
    step_logs,
)
from mirrorgan_tf.losses import (
    cell_code_loss,
    cell_code_width,
    damsm_sentence_loss,
    damsm_word_loss,
    keyword_code_loss,
)
from mirrorgan_tf.training.base import PrebuiltTrainer


def stage_images(images):
    """The largest stage's images of a batch: `data["images"][-1]` (or the tensor itself).

    Args:
        images: a tuple/list of per-stage image batches (smallest first), or one batch.

    Example:
    >>> stage_images((tf.zeros([1, 64, 64, 3]), tf.zeros([1, 128, 128, 3]))).shape
    TensorShape([1, 128, 128, 3])
    """
    if isinstance(images, list | tuple):
        return images[-1]
    return images


def _cosine_matrix(a, b, eps: float = 1e-8):
    a = tf.math.l2_normalize(tf.cast(a, tf.float32), axis=-1, epsilon=eps)
    b = tf.math.l2_normalize(tf.cast(b, tf.float32), axis=-1, epsilon=eps)
    return tf.matmul(a, b, transpose_b=True)


def batch_retrieval_accuracy(image_global, sentence):
    """Top-1 caption retrieval on a batch: how often an image's own caption is the closest.

    The in-batch form of R-precision (see `evaluation.r_precision` for the B = 100, 10-run
    protocol): cosine of each image's global feature with every sentence of the batch; a hit
    when the argmax is the image's own caption.

    Args:
        image_global: [B, nef] global image features.
        sentence: [B, nef] sentence features.

    Returns:
        float32 scalar in [0, 1].

    Example:
    >>> float(batch_retrieval_accuracy(tf.eye(3), tf.eye(3)))
    1.0
    """
    similarities = _cosine_matrix(image_global, sentence)
    best = tf.argmax(similarities, axis=1, output_type=tf.int32)
    hits = tf.equal(best, tf.range(tf.shape(similarities)[0], dtype=tf.int32))
    return tf.reduce_mean(tf.cast(hits, tf.float32))


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class DAMSMLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The published DAMSM schedule: x`decay` per epoch until it reaches `min_ratio` x start.

    AttnGAN's `pretrain_DAMSM.py` multiplies the rate by 0.98 after each epoch while it is
    above a tenth of the starting rate, then keeps it there: lr_e = lr * decay^min(e, E) with
    E = ceil(log(min_ratio) / log(decay)) (114 epochs for 0.98 and 0.1). With
    `min_ratio=None` this is `ExponentialDecay(lr, steps_per_epoch, decay, staircase=True)`.
    (The published code also rebuilds Adam each epoch, resetting its moments; we do not.)

    Args:
        initial_learning_rate: the rate of the first epoch (2e-3).
        steps_per_epoch: optimizer steps per epoch.
        decay: factor per epoch (0.98).
        min_ratio: where the decay stops, as a fraction of the start (0.1), or None.

    Example:
    >>> schedule = DAMSMLearningRate(2e-3, steps_per_epoch=10)
    >>> round(float(schedule(25)), 8)  # epoch 2
    0.0019208
    """

    def __init__(
        self,
        initial_learning_rate: float,
        steps_per_epoch: int,
        decay: float = 0.98,
        min_ratio: float | None = 0.1,
    ):
        if steps_per_epoch < 1:
            raise ValueError(f"`steps_per_epoch` must be >= 1; got {steps_per_epoch}.")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"`decay` must be in (0, 1]; got {decay}.")
        self.initial_learning_rate = initial_learning_rate
        self.steps_per_epoch = steps_per_epoch
        self.decay = decay
        self.min_ratio = min_ratio
        if min_ratio is None or decay == 1.0:
            self.last_decayed_epoch = None
        else:
            self.last_decayed_epoch = max(math.ceil(math.log(min_ratio) / math.log(decay)), 0)

    def __call__(self, step):
        epoch = tf.floor(tf.cast(step, tf.float32) / float(self.steps_per_epoch))
        if self.last_decayed_epoch is not None:
            epoch = tf.minimum(epoch, float(self.last_decayed_epoch))
        return self.initial_learning_rate * tf.pow(tf.constant(self.decay, tf.float32), epoch)

    def get_config(self) -> dict:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "decay": self.decay,
            "min_ratio": self.min_ratio,
        }


def damsm_optimizer(
    learning_rate: float = 2e-3,
    steps_per_epoch: int = 1,
    decay: float = 0.98,
    min_ratio: float | None = 0.1,
) -> keras.optimizers.Optimizer:
    """The published DAMSM optimizer: Adam(2e-3, betas (0.5, 0.999)), x0.98 per epoch.

    Args:
        learning_rate: starting rate (AttnGAN's TRAIN.ENCODER_LR, 2e-3).
        steps_per_epoch: optimizer steps per epoch, for the per-epoch decay.
        decay: factor per epoch (0.98).
        min_ratio: the decay stops at this fraction of the start (published 0.1); None
            decays forever.

    Example:
    >>> optimizer = damsm_optimizer(steps_per_epoch=185)
    >>> optimizer.beta_1
    0.5
    """
    schedule = DAMSMLearningRate(learning_rate, steps_per_epoch, decay, min_ratio)
    return keras.optimizers.Adam(learning_rate=schedule, beta_1=0.5, beta_2=0.999)


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class DAMSMTrainer(PrebuiltTrainer):
    """Pretrains STEM and the DAMSM image encoder with the DAMSM loss (AttnGAN Eqs. 7-13).

    loss = word loss (image->text + text->image, Eqs. 7-11 and 13 on regions and words)
         + sentence loss (both directions, Eqs. 12-13 on global image and sentence features),
    with negatives of the same class masked out (`data["class_id"]`). The image encoder sees
    the largest stage's images (`data["images"][-1]`). As in the published
    `pretrain_DAMSM.py`, one optimizer updates both encoders, and only the text encoder's
    gradients are clipped to global norm `rnn_grad_clip` (`clip_grad_norm_(rnn.parameters(),
    0.25)`); the image encoder's trainable part (its projections; the ImageNet trunk is
    frozen) is not clipped. Under a loss-scaling optimizer the clip norm is scaled with the
    loss, which equals clipping the unscaled gradients.

    `compile` defaults to `jit_compile=False` (tested path): dataset elements carry strings
    (keys, raw captions) that XLA has no use for, and XLA was not faster on CPU.

    Args:
        text_encoder: a `TextEncoder` (STEM).
        image_encoder: an `ImageEncoder`.
        gamma1: attention sharpness over regions (4).
        gamma2: word relevance aggregation (5).
        gamma3: the scale of the matching scores (10).
        rnn_grad_clip: global-norm clip of the text encoder's gradients (0.25); None: no clip.
        keyword_groups: None (published), or G groups of token ids: the first G dimensions
            of the sentence also learn to name which groups' words a caption holds
            (`losses.keyword_code_loss`, a recipe option; README, the deviations).
        keyword_weight: the weight of that loss.
        cell_code_classes: None (published), or the class count of each attribute of a cell
            (the built-in dataset's `data.shapes.CELL_CODE_CLASSES`): the first dimensions of
            the sentence also learn what each cell of the scene holds, from the batches'
            `cell_labels` (`losses.cell_code_loss`, a recipe option; README, the deviations).
        cell_code_weight: the weight of that loss.
        **kwargs: passed to `keras.Model`.

    Example:
    >>> trainer = DAMSMTrainer(TextEncoder(20, embedding_dim=8, nef=8),
    ...                        ImageEncoder(nef=8, backbone="small"))
    >>> trainer.compile(optimizer=damsm_optimizer(steps_per_epoch=100))
    >>> history = trainer.fit(dataset.batch(48), epochs=1)  # dataset: the data contract's
    """

    def __init__(
        self,
        text_encoder: keras.Model,
        image_encoder: keras.Model,
        gamma1: float = 4.0,
        gamma2: float = 5.0,
        gamma3: float = 10.0,
        rnn_grad_clip: float | None = 0.25,
        keyword_groups: Sequence[Sequence[int]] | None = None,
        keyword_weight: float = 1.0,
        cell_code_classes: Sequence[int] | None = None,
        cell_code_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)

        # === Layers ===
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder

        # === Config ===
        self.gamma1 = gamma1
        self.gamma2 = gamma2
        self.gamma3 = gamma3
        self.rnn_grad_clip = rnn_grad_clip
        self.keyword_groups = None
        if keyword_groups:
            groups = [[int(i) for i in group] for group in keyword_groups]
            if not all(groups) or len(groups) > text_encoder.nef:
                raise ValueError(
                    "`keyword_groups` must be non-empty groups of token ids, at most one per "
                    f"dimension of the sentence ({text_encoder.nef}); got {keyword_groups!r}."
                )
            self.keyword_groups = groups
        self.keyword_weight = keyword_weight
        self.cell_code_classes = None
        if cell_code_classes:
            classes = [int(c) for c in cell_code_classes]
            if min(classes) < 2:
                raise ValueError(
                    f"`cell_code_classes` must count at least 2 classes per attribute; got "
                    f"{cell_code_classes!r}."
                )
            self.cell_code_classes = classes
        self.cell_code_weight = cell_code_weight

        # === Metrics ===
        self.word_loss_tracker = keras.metrics.Mean(name="word_loss")
        self.sentence_loss_tracker = keras.metrics.Mean(name="sentence_loss")
        self.keyword_loss_tracker = keras.metrics.Mean(name="keyword_loss")
        self.cell_code_loss_tracker = keras.metrics.Mean(name="cell_code_loss")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.r_precision_tracker = keras.metrics.Mean(name="r_precision")
        # The encoders build their weights in their constructors: nothing is left to build.
        self.built = True

    @property
    def metrics(self) -> list:
        return [
            self.word_loss_tracker,
            self.sentence_loss_tracker,
            self.keyword_loss_tracker,
            self.cell_code_loss_tracker,
            self.loss_tracker,
            self.r_precision_tracker,
        ]

    def compile(self, optimizer="adam", jit_compile: bool | str = False, **kwargs) -> None:
        """Sets the optimizer (see `damsm_optimizer`); XLA off by default (see the class doc)."""
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config: dict) -> None:
        """Recompiles on `load_model` (Keras skips models whose `compile` is overridden)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        # Create the optimizer's variables so that the saved ones load into them.
        self.optimizer.build(self.trainable_variables)

    def call(self, data, training: bool | None = None):
        """Encodes a batch: `(words, sentence, regions, image_global)`."""
        words, sentence = self.text_encoder(data["token_ids"], training=training)
        regions, image_global = self.image_encoder(stage_images(data["images"]), training=training)
        return words, sentence, regions, image_global

    def word_loss(self, regions, words, lengths, class_ids):
        """Word-level DAMSM loss, both directions (AttnGAN Eqs. 7-11, 13)."""
        image_to_text, text_to_image = damsm_word_loss(
            regions, words, lengths, class_ids, self.gamma1, self.gamma2, self.gamma3
        )
        return image_to_text + text_to_image

    def sentence_loss(self, image_global, sentence, class_ids):
        """Sentence-level DAMSM loss, both directions (AttnGAN Eqs. 12-13)."""
        image_to_text, text_to_image = damsm_sentence_loss(
            image_global, sentence, class_ids, self.gamma3
        )
        return image_to_text + text_to_image

    def damsm_losses(self, data, training: bool):
        """`(word loss, sentence loss, image_global, sentence)` of a batch, same-class masked."""
        words, sentence, regions, image_global = self(data, training=training)
        class_ids = data.get("class_id")
        word = self.word_loss(regions, words, data["caption_length"], class_ids)
        sentence_term = self.sentence_loss(image_global, sentence, class_ids)
        return word, sentence_term, image_global, sentence

    def keyword_loss(self, sentence, token_ids):
        """`losses.keyword_code_loss` of a batch with `keyword_groups` (0 without)."""
        if self.keyword_groups is None:
            return tf.constant(0.0)
        return keyword_code_loss(sentence, token_ids, self.keyword_groups, self.gamma3)

    def cell_loss(self, sentence, cell_labels):
        """`losses.cell_code_loss` of a batch with `cell_code_classes` (0 without)."""
        if self.cell_code_classes is None:
            return tf.constant(0.0)
        return cell_code_loss(sentence, cell_labels, self.cell_code_classes)

    def _cell_labels(self, data):
        """The batch's `cell_labels` when the cell code is on (None otherwise)."""
        if self.cell_code_classes is None:
            return None
        if "cell_labels" not in data:
            raise ValueError(
                "The cell code (`cell_code_classes`, `training.damsm_cell_code_weight`) needs "
                "`cell_labels` in every batch: data that says what each cell holds, as the "
                "built-in dataset (`--data shapes`) does."
            )
        labels = data["cell_labels"]
        width = cell_code_width(self.cell_code_classes, labels.shape[1])
        if width > self.text_encoder.nef:
            raise ValueError(
                f"The cell code needs {width} sentence dimensions; STEM has nef "
                f"{self.text_encoder.nef} (`--set nef=...`)."
            )
        return labels

    def total_loss(self, word, sentence, keyword, cells):
        """The loss the encoders minimise: DAMSM's two terms plus the weighted codes."""
        return word + sentence + self.keyword_weight * keyword + self.cell_code_weight * cells

    def _update_trackers(self, word, sentence, keyword, cells) -> dict:
        self.word_loss_tracker.update_state(word)
        self.sentence_loss_tracker.update_state(sentence)
        self.keyword_loss_tracker.update_state(keyword)
        self.cell_code_loss_tracker.update_state(cells)
        self.loss_tracker.update_state(self.total_loss(word, sentence, keyword, cells))
        logs = {
            "word_loss": self.word_loss_tracker.result(),
            "sentence_loss": self.sentence_loss_tracker.result(),
            "loss": self.loss_tracker.result(),
        }
        if self.keyword_groups is not None:
            logs["keyword_loss"] = self.keyword_loss_tracker.result()
        if self.cell_code_classes is not None:
            logs["cell_code_loss"] = self.cell_code_loss_tracker.result()
        return step_logs(logs)

    def _global_damsm_losses(self, data, training: bool):
        """The DAMSM losses of the *global* batch, computed on every replica.

        The DAMSM loss is contrastive within a batch (every other caption of the batch is a
        negative), so per-replica losses would only see a replica's slice as negatives. The
        features are all-gathered instead (gradients flow back to each replica's own rows);
        with one replica this is `damsm_losses`.
        """
        if replica_context() is None:
            return self.damsm_losses(data, training=training)
        words, sentence, regions, image_global = self(data, training=training)
        words, sentence, regions, image_global, lengths, class_ids = gather_batch(
            (words, sentence, regions, image_global, data["caption_length"], data.get("class_id"))
        )
        word = self.word_loss(regions, words, lengths, class_ids)
        sentence_term = self.sentence_loss(image_global, sentence, class_ids)
        return word, sentence_term, image_global, sentence

    def train_step(self, data):
        text_variables = list(self.text_encoder.trainable_variables)
        image_variables = list(self.image_encoder.trainable_variables)
        replicas = num_replicas()
        cell_labels = self._cell_labels(data)
        with tf.GradientTape() as tape:
            word, sentence, _, sentence_features = self._global_damsm_losses(data, training=True)
            # Not contrastive, but computed on the global batch like the rest of the loss.
            keyword = self.keyword_loss(sentence_features, gather_batch(data["token_ids"]))
            cells = self.cell_loss(sentence_features, gather_batch(cell_labels))
            loss = self.total_loss(word, sentence, keyword, cells)
            # Every replica holds the global loss: each contributes 1 / replicas of it (the
            # all-gather's gradient sums the replicas' shares back for each replica's rows).
            scaled_loss = self.optimizer.scale_loss(loss / replicas if replicas > 1 else loss)
        gradients = tape.gradient(scaled_loss, text_variables + image_variables)
        text_gradients = gradients[: len(text_variables)]
        image_gradients = gradients[len(text_variables) :]
        if self.rnn_grad_clip is not None:
            # The embedding's gradient arrives as IndexedSlices whose rows repeat for repeated
            # words; clip_by_global_norm would measure the slices, not the summed (dense)
            # gradient that PyTorch's `clip_grad_norm_` measures. Densify first.
            text_gradients = [
                tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                for g in text_gradients
            ]
            # Clip the global-batch gradient, not each replica's part of it: sum the parts,
            # clip, and hand each replica 1 / replicas of the result, which the optimizer's
            # own all-reduce sums back to the clipped gradient.
            if replicas > 1:
                text_gradients = all_reduce_sum(text_gradients)
            # Clipping the loss-scaled gradients at clip x scale == clipping the true ones.
            scale = tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
            text_gradients, _ = tf.clip_by_global_norm(text_gradients, self.rnn_grad_clip * scale)
            if replicas > 1:
                text_gradients = [g / replicas for g in text_gradients]
        self.optimizer.apply_gradients(
            zip(
                list(text_gradients) + list(image_gradients),
                text_variables + image_variables,
                strict=True,
            )
        )
        return self._update_trackers(word, sentence, keyword, cells)

    def test_step(self, data):
        word, sentence, image_global, sentence_features = self.damsm_losses(data, training=False)
        keyword = self.keyword_loss(sentence_features, data["token_ids"])
        cells = self.cell_loss(sentence_features, self._cell_labels(data))
        logs = self._update_trackers(word, sentence, keyword, cells)
        self.r_precision_tracker.update_state(
            batch_retrieval_accuracy(image_global, sentence_features)
        )
        logs["r_precision"] = self.r_precision_tracker.result()
        return step_logs(logs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            text_encoder=keras.saving.serialize_keras_object(self.text_encoder),
            image_encoder=keras.saving.serialize_keras_object(self.image_encoder),
            gamma1=self.gamma1,
            gamma2=self.gamma2,
            gamma3=self.gamma3,
            rnn_grad_clip=self.rnn_grad_clip,
            keyword_groups=self.keyword_groups,
            keyword_weight=self.keyword_weight,
            cell_code_classes=self.cell_code_classes,
            cell_code_weight=self.cell_code_weight,
        )
        return config

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["text_encoder"] = keras.saving.deserialize_keras_object(config["text_encoder"])
        config["image_encoder"] = keras.saving.deserialize_keras_object(config["image_encoder"])
        return cls(**config)
