"""The MirrorGAN training step: STEM and STREAM frozen, GLAM and the discriminators trained.

One iteration follows the published trainer: generate once; update every discriminator on the
detached images (unconditional real/fake, conditional real/fake/mismatched); then update the
generator with, per stage, the adversarial terms against the *updated* discriminators, plus the
KL term of conditioning augmentation and lambda x STREAM's caption cross-entropy on the
last-stage image (gradients flow through the frozen captioner into the generator; MirrorGAN
Eq. 10). An optional AttnGAN-style DAMSM term has its own weight (0 by default, as in the
published MirrorGAN birds configuration). The generator's exponential moving average is kept
in `ema_generator`: it is what gets saved, sampled and exported.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from mirrorgan_tf import losses
from mirrorgan_tf.distribute import (
    gather_batch,
    global_normal,
    global_share,
    replica_rows,
    step_logs,
)
from mirrorgan_tf.networks.text_encoder import caption_mask
from mirrorgan_tf.training.base import PrebuiltTrainer


def _call_on_dummy_batch(generator: keras.Model, **kwargs) -> None:
    nef = generator.nef
    generator(
        tf.zeros([1, generator.z_dim]),
        tf.zeros([1, nef]),
        tf.zeros([1, 1, nef]),
        tf.ones([1, 1], tf.bool),
        training=False,
        **kwargs,
    )


def _clone_generator(generator: keras.Model) -> keras.Model:
    """A new generator of the same configuration, built by one call on a dummy batch."""
    clone = generator.__class__.from_config(generator.get_config())
    _call_on_dummy_batch(clone)
    return clone


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class MirrorGANTrainer(PrebuiltTrainer):
    """Trains GLAM and the discriminators against frozen STEM and STREAM (MirrorGAN, Sec. 3).

    Args:
        text_encoder: a pretrained `TextEncoder` (STEM); frozen here.
        generator: the `Generator` (GLAM) to train, built.
        discriminators: one `Discriminator` per generator stage, smallest first, built.
        captioner: a pretrained `Captioner` (STREAM); frozen here, but differentiable.
        image_encoder: the DAMSM `ImageEncoder`; needed only when `damsm_loss_weight > 0`.
        caption_loss_weight: lambda of L_G = sum_i L_Gi + lambda L_stream (published birds: 10).
        kl_loss_weight: weight of the conditioning-augmentation KL term (published: 1).
        damsm_loss_weight: weight of the AttnGAN DAMSM term (0 = MirrorGAN as published).
        paired_loss_weight: weight of `losses.centred_l1_loss` between every stage's image and
            the real image of its caption (DEVIATION, a recipe option for data whose caption
            nearly fixes the image, see the README; 0 = MirrorGAN as published).
        ema_decay: decay of the generator's moving average (published: 0.999).
        ema_warmup: use decay min(ema_decay, (1 + n) / (10 + n)) at the generator's n-th
            update, as `tf.train.ExponentialMovingAverage(num_updates=n)` does, so the average
            spans about the last ninth of the steps until it reaches `ema_decay` (DEVIATION,
            a recipe option: with the published constant 0.999 from step 0 the average lags
            the live generator by thousands of steps early on, see the README). False:
            published.
        gamma1, gamma2, gamma3: DAMSM smoothing factors, used by the DAMSM term only.
        seed: seed of the noise and conditioning-augmentation draws.
        ca_noise: sample conditioning augmentation's c_code = mu + sigma * eps, as published;
            False trains with c_code = mu (DEVIATION, a recipe option: see the README).
        swap_negatives: token-id groups, one per meaning (e.g. the ids of "circle", "disc",
            "round" for circles), the group's canonical word first. Given, every
            discriminator also learns to reject each real image paired with its own caption
            in which every word of a group is replaced by the canonical word of another,
            random group: BCE(cond(real, s_swapped), 0) / 3, over the captions holding such a
            word (DEVIATION, a recipe option: the published mismatched pairs differ in
            colour far more often than only in shape; see the README). None: published.

    Example:
    >>> trainer = MirrorGANTrainer(text_encoder, generator, [d64, d128, d256], captioner)
    >>> trainer.compile(g_optimizer=generator_optimizer(), d_optimizer=discriminator_optimizer())
    >>> trainer.fit(dataset, epochs=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        text_encoder: keras.Model,
        generator: keras.Model,
        discriminators: Sequence[keras.Model],
        captioner: keras.Model,
        image_encoder: keras.Model | None = None,
        caption_loss_weight: float = 10.0,
        kl_loss_weight: float = 1.0,
        damsm_loss_weight: float = 0.0,
        paired_loss_weight: float = 0.0,
        ema_decay: float = 0.999,
        ema_warmup: bool = False,
        gamma1: float = 4.0,
        gamma2: float = 5.0,
        gamma3: float = 10.0,
        seed: int | None = None,
        ca_noise: bool = True,
        swap_negatives: Sequence[Sequence[int]] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(discriminators) != generator.num_stages:
            raise ValueError(
                f"`discriminators` must hold one discriminator per generator stage "
                f"({generator.num_stages}); got {len(discriminators)}."
            )
        if paired_loss_weight < 0:
            raise ValueError(f"`paired_loss_weight` must be >= 0; got {paired_loss_weight}.")
        if damsm_loss_weight > 0 and image_encoder is None:
            raise ValueError("`damsm_loss_weight > 0` needs the DAMSM `image_encoder`.")
        # === Networks ===
        self.text_encoder = text_encoder
        self.generator = generator
        self.discriminators = list(discriminators)
        self.captioner = captioner
        self.image_encoder = image_encoder
        # STEM, STREAM and the DAMSM image encoder are frozen: no weight changes, BatchNorm in
        # inference mode, but gradients still flow through STREAM into the generator.
        for frozen in (text_encoder, captioner, image_encoder):
            if frozen is not None:
                frozen.trainable = False
        # Weightless layers (GLU) are built by a first call. Keras builds a model
        # symbolically before `fit` under a tf.distribute strategy and cannot for a trainer
        # without `call`: build them now. Deterministic and in inference mode, the call
        # draws no noise and leaves the BatchNorm statistics alone.
        _call_on_dummy_batch(generator, deterministic=True)
        self.ema_generator = _clone_generator(generator)
        self.ema_generator.set_weights(generator.get_weights())
        self.ema_generator.trainable = False
        self.seed_generator = keras.random.SeedGenerator(seed)
        # === Config ===
        self.caption_loss_weight = float(caption_loss_weight)
        self.kl_loss_weight = float(kl_loss_weight)
        self.damsm_loss_weight = float(damsm_loss_weight)
        self.paired_loss_weight = float(paired_loss_weight)
        self.ema_decay = float(ema_decay)
        self.ema_warmup = bool(ema_warmup)
        self.gamma1, self.gamma2, self.gamma3 = float(gamma1), float(gamma2), float(gamma3)
        self.seed = seed
        self.ca_noise = bool(ca_noise)
        self.swap_negatives = None
        if swap_negatives:
            groups = [[int(i) for i in group] for group in swap_negatives]
            flat = [i for group in groups for i in group]
            if len(groups) < 2 or not all(groups) or len(set(flat)) != len(flat):
                raise ValueError(
                    "`swap_negatives` must be at least two non-empty groups of distinct token "
                    f"ids; got {swap_negatives!r}."
                )
            self.swap_negatives = groups
        # === Trackers ===
        sizes = [d.image_size for d in self.discriminators]
        names = ["d_loss", "g_loss", "kl_loss", "caption_loss", "damsm_loss", "paired_loss"]
        names += [f"d_loss_{s}" for s in sizes] + [f"g_adv_loss_{s}" for s in sizes]
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        if not self.damsm_loss_weight:
            del self._trackers["damsm_loss"]
        if not self.paired_loss_weight:
            del self._trackers["paired_loss"]
        self.built = True

    @property
    def metrics(self):
        return list(self._trackers.values())

    def compile(
        self,
        g_optimizer: keras.optimizers.Optimizer | None = None,
        d_optimizer: keras.optimizers.Optimizer | None = None,
        **kwargs,
    ) -> None:
        """Sets the generator and discriminator optimizers (published Adam by default).

        One `d_optimizer` updates every discriminator: Adam's state is per variable, so this
        equals the published one optimizer per discriminator.

        Args:
            g_optimizer: the generator's optimizer (default Adam 2e-4, betas (0.5, 0.999)).
            d_optimizer: the discriminators' optimizer (same default).
            **kwargs: passed to `keras.Model.compile` (e.g. `jit_compile`).

        Example:
        >>> trainer.compile(g_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5))  # doctest: +SKIP
        """
        super().compile(optimizer=None, **kwargs)
        self.g_optimizer = _maybe_loss_scaled(g_optimizer or published_adam())
        self.d_optimizer = _maybe_loss_scaled(d_optimizer or published_adam())
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self._discriminator_variables())

    def _discriminator_variables(self) -> list:
        return [v for d in self.discriminators for v in d.trainable_variables]

    # === Loss terms ===
    def _discriminator_losses(
        self, real_images, fake_images, sentence, rows=None, swapped=None
    ) -> tuple[list[tf.Tensor], tf.Tensor]:
        """Per-stage discriminator losses, and the (summed) loss to differentiate.

        `swapped` (one device only): `(sentence of the swapped captions, which captions were
        swapped)` from `_swapped_sentence`; each stage then adds
        BCE(cond(real, s_swapped), 0) / 3 over the swapped captions, on the same real codes.

        Without `rows` the two are the same. Under tf.distribute (`rows` = (offset, total)
        of this replica's rows in the global batch, see `replica_rows`) the mismatched pairs
        follow the *global* batch: real image i with the sentence of global sample i + 1, so
        a replica's last image pairs with the next replica's first sentence, and the global
        batch has total - 1 pairs, as on one device. The differentiated loss weights each
        term by this replica's share of the term's global count; summed over replicas it is
        the single-device loss of the global batch. (Needs >= 2 samples per replica.)
        """
        stage_losses, objective = [], []
        if rows is not None:
            offset, total = rows
            batch = tf.shape(sentence)[0]
            all_sentences = gather_batch(sentence)
            pairs = tf.minimum(batch, total - 1 - offset)
            next_sentence = all_sentences[offset + 1 : offset + 1 + pairs]
            share = tf.cast(batch, tf.float32) / tf.cast(total, tf.float32)
            pair_share = tf.cast(pairs, tf.float32) / tf.cast(total - 1, tf.float32)
        for d, real, fake in zip(self.discriminators, real_images, fake_images, strict=True):
            real_code = d.encode(real, training=True)
            fake_code = d.encode(tf.stop_gradient(fake), training=True)
            if rows is None:
                # Real images paired with the next sample's sentence (published).
                mismatched = d.conditional_logits(real_code[:-1], sentence[1:], training=True)
            else:
                mismatched = d.conditional_logits(
                    real_code[:pairs], next_sentence, training=True
                )
            stage = losses.discriminator_loss(
                real_uncond=d.unconditional_logits(real_code),
                fake_uncond=d.unconditional_logits(fake_code),
                real_cond=d.conditional_logits(real_code, sentence, training=True),
                fake_cond=d.conditional_logits(fake_code, sentence, training=True),
                mismatched_cond=mismatched,
            )
            if swapped is not None:
                swapped_sentence, was_swapped = swapped
                stage += losses.masked_binary_cross_entropy(
                    d.conditional_logits(real_code, swapped_sentence, training=True),
                    0.0, was_swapped,
                ) / 3.0
            stage_losses.append(stage)
            if rows is not None:
                # discriminator_loss = ... + BCE(mismatched) / 3: reweight that term alone.
                mismatched_term = losses.binary_cross_entropy(mismatched, 0.0) / 3.0
                stage = share * (stage - mismatched_term) + pair_share * mismatched_term
            objective.append(stage)
        return stage_losses, tf.add_n(objective)

    def swapped_captions(self, token_ids) -> tuple[tf.Tensor, tf.Tensor]:
        """The captions with every `swap_negatives` word replaced by another group's word.

        Each such word becomes the canonical word of a different group, drawn at random per
        word. Returns the swapped token ids and, per caption, whether any word was swapped.

        Args:
            token_ids: int32 `[batch, T]`.

        Example:
        >>> ids, swapped = trainer.swapped_captions(token_ids)  # doctest: +SKIP
        """
        offset = keras.random.randint(
            tf.shape(token_ids), 1, len(self.swap_negatives), seed=self.seed_generator,
            dtype="int32",
        )
        return losses.swap_group_words(token_ids, self.swap_negatives, offset)

    def _swapped_sentence(self, token_ids) -> tuple[tf.Tensor, tf.Tensor]:
        """STEM's sentence feature of the swapped captions, and which captions were swapped.

        What the option adds to a step: this STEM pass and one conditional head per
        discriminator on the real codes (`_discriminator_losses`).
        """
        swapped_ids, was_swapped = self.swapped_captions(token_ids)
        _, swapped_sentence = self.text_encoder(swapped_ids, training=False)
        return swapped_sentence, was_swapped

    def _generator_adversarial_losses(self, fake_images, sentence) -> list[tf.Tensor]:
        stage_losses = []
        for d, fake in zip(self.discriminators, fake_images, strict=True):
            code = d.encode(fake, training=True)
            stage_losses.append(
                losses.generator_adversarial_loss(
                    d.unconditional_logits(code),
                    d.conditional_logits(code, sentence, training=True),
                )
            )
        return stage_losses

    def _caption_loss(self, image, token_ids, lengths) -> tf.Tensor:
        """STREAM re-describes the last-stage image; cross-entropy against the input caption."""
        logits = self.captioner(image, token_ids, training=False)
        return losses.caption_loss(logits, token_ids, lengths)

    def _damsm_loss(self, image, words, sentence, lengths, class_ids) -> tf.Tensor:
        regions, global_feature = self.image_encoder(image, training=False)
        w0, w1 = losses.damsm_word_loss(
            regions, words, lengths, class_ids, self.gamma1, self.gamma2, self.gamma3
        )
        s0, s1 = losses.damsm_sentence_loss(global_feature, sentence, class_ids, self.gamma3)
        return w0 + w1 + s0 + s1

    # === Steps ===
    def _encode_text(self, data):
        token_ids = tf.cast(data["token_ids"], tf.int32)
        words, sentence = self.text_encoder(token_ids, training=False)
        return token_ids, caption_mask(token_ids), words, sentence

    def train_step(self, data):
        real_images = tuple(data["images"])
        lengths = data["caption_length"]
        token_ids, word_mask, words, sentence = self._encode_text(data)
        batch = tf.shape(token_ids)[0]
        # tf.distribute: the optimizers sum the replicas' gradients, so each replica weights
        # its batch-mean losses by its share of the global batch (1 / replicas for equal
        # slices); see `_discriminator_losses` for the mismatched pairs and the caption loss
        # below for its word count. With one replica all weights are 1 and no op is added.
        distributed = tf.distribute.get_strategy().num_replicas_in_sync > 1
        rows = replica_rows(batch) if distributed else None
        # The noise of the global batch, this replica's rows (`global_normal`).
        noise = global_normal(batch, (self.generator.z_dim,), self.seed_generator, rows=rows)
        if distributed:
            share = tf.cast(batch, tf.float32) / tf.cast(rows[1], tf.float32)

        with tf.GradientTape() as g_tape:
            out = self.generator(noise, sentence, words, word_mask, training=True,
                                 deterministic=not self.ca_noise)
            fake_images = out["images"]
            with g_tape.stop_recording():
                # Discriminators first, on the detached images (published order).
                with tf.GradientTape() as d_tape:
                    swapped = None
                    if self.swap_negatives:
                        if distributed:
                            raise NotImplementedError(
                                "`swap_negatives` trains on one device only."
                            )
                        swapped = self._swapped_sentence(token_ids)
                    d_stage_losses, d_objective = self._discriminator_losses(
                        real_images, fake_images, sentence, rows, swapped
                    )
                    d_loss = tf.add_n(d_stage_losses)
                    d_scaled = self.d_optimizer.scale_loss(d_objective)
                d_vars = self._discriminator_variables()
                d_grads = d_tape.gradient(d_scaled, d_vars)
                self.d_optimizer.apply(d_grads, d_vars)
            g_adv_losses = self._generator_adversarial_losses(fake_images, sentence)
            kl = losses.kl_loss(out["mu"], out["logvar"])
            caption = self._caption_loss(fake_images[-1], token_ids, lengths)
            g_loss = tf.add_n(g_adv_losses) + self.kl_loss_weight * kl
            g_loss += self.caption_loss_weight * caption
            if self.damsm_loss_weight:
                damsm = self._damsm_loss(
                    fake_images[-1], words, sentence, lengths, data.get("class_id")
                )
                g_loss += self.damsm_loss_weight * damsm
            if self.paired_loss_weight:
                paired = tf.add_n([losses.centred_l1_loss(fake, real) for fake, real
                                   in zip(fake_images, real_images, strict=True)])
                g_loss += self.paired_loss_weight * paired
            g_objective = g_loss
            if distributed:
                # Batch means weigh by the replica's share of the batch; the caption loss, a
                # mean over words, by its share of the words. The DAMSM term stays per
                # replica: its negatives are the replica's slice (DAMSMTrainer gathers them).
                caption_words = tf.reduce_sum(tf.minimum(lengths, tf.shape(token_ids)[1]))
                g_objective = share * (g_loss - self.caption_loss_weight * caption)
                g_objective += global_share(caption_words) * (self.caption_loss_weight * caption)
            g_scaled = self.g_optimizer.scale_loss(g_objective)
        g_vars = self.generator.trainable_variables
        g_grads = g_tape.gradient(g_scaled, g_vars)
        self.g_optimizer.apply(g_grads, g_vars)
        self._update_ema()

        values = {"d_loss": d_loss, "g_loss": g_loss, "kl_loss": kl, "caption_loss": caption}
        if self.damsm_loss_weight:
            values["damsm_loss"] = damsm
        if self.paired_loss_weight:
            values["paired_loss"] = paired
        for d, dl, gl in zip(self.discriminators, d_stage_losses, g_adv_losses, strict=True):
            values[f"d_loss_{d.image_size}"] = dl
            values[f"g_adv_loss_{d.image_size}"] = gl
        return self._track(values)

    def test_step(self, data):
        """Caption loss and KL of the moving-average generator's images (no updates)."""
        token_ids, word_mask, words, sentence = self._encode_text(data)
        batch = tf.shape(token_ids)[0]
        noise = keras.random.normal([batch, self.generator.z_dim], seed=self.seed_generator)
        out = self.ema_generator(noise, sentence, words, word_mask, training=False)
        caption = self._caption_loss(out["images"][-1], token_ids, data["caption_length"])
        kl = losses.kl_loss(out["mu"], out["logvar"])
        return self._track({"caption_loss": caption, "kl_loss": kl})

    def _track(self, values):
        for name, value in values.items():
            self._trackers[name].update_state(value)
        return step_logs({name: self._trackers[name].result() for name in values})

    def _update_ema(self) -> None:
        """EMA of the generator's parameters; BatchNorm statistics are copied (published)."""
        decay = self.ema_decay
        if self.ema_warmup:
            # The update after the optimizer's n-th step (n >= 1 here).
            n = tf.cast(self.g_optimizer.iterations, tf.float32)
            decay = tf.minimum(decay, (1.0 + n) / (10.0 + n))
        trainable = {id(v) for v in self.generator.trainable_weights}
        for ema, live in zip(self.ema_generator.weights, self.generator.weights, strict=True):
            if id(live) in trainable:
                ema.assign(decay * ema + (1.0 - decay) * live)
            else:
                ema.assign(live)

    # === Config ===
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "text_encoder": keras.layers.serialize(self.text_encoder),
                "generator": keras.layers.serialize(self.generator),
                "discriminators": [keras.layers.serialize(d) for d in self.discriminators],
                "captioner": keras.layers.serialize(self.captioner),
                "image_encoder": (
                    keras.layers.serialize(self.image_encoder) if self.image_encoder else None
                ),
                "caption_loss_weight": self.caption_loss_weight,
                "kl_loss_weight": self.kl_loss_weight,
                "damsm_loss_weight": self.damsm_loss_weight,
                "paired_loss_weight": self.paired_loss_weight,
                "ema_decay": self.ema_decay,
                "ema_warmup": self.ema_warmup,
                "gamma1": self.gamma1,
                "gamma2": self.gamma2,
                "gamma3": self.gamma3,
                "seed": self.seed,
                "ca_noise": self.ca_noise,
                "swap_negatives": self.swap_negatives,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("text_encoder", "generator", "captioner", "image_encoder"):
            if config.get(key) is not None:
                config[key] = keras.layers.deserialize(config[key])
        config["discriminators"] = [keras.layers.deserialize(d) for d in config["discriminators"]]
        return cls(**config)


def published_adam(learning_rate: float = 2e-4) -> keras.optimizers.Adam:
    """Adam with the published GAN settings: lr 2e-4, betas (0.5, 0.999).

    Args:
        learning_rate: the learning rate.

    Example:
    >>> published_adam().beta_1
    0.5
    """
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5, beta_2=0.999)


def _maybe_loss_scaled(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Wraps in a LossScaleOptimizer under the mixed_float16 policy (bfloat16 needs none)."""
    policy = keras.mixed_precision.global_policy().name
    if policy == "mixed_float16" and not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
