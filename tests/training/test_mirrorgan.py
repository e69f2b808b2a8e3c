"""The MirrorGAN train_step: frozen STEM/STREAM, gradients through STREAM, EMA, trackers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf import presets
from mirrorgan_tf.training.mirrorgan import MirrorGANTrainer, published_adam
from tests.training.conftest import TINY


def _parts(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    config = presets.get_config("shapes", vocab_size=30, **{**TINY, **overrides})
    sizes = presets.image_sizes(config)
    return config, {
        "text_encoder": presets.build_component("text_encoder", config),
        "generator": presets.build_component("generator", config),
        "discriminators": [presets.build_component(f"discriminator_{s}", config) for s in sizes],
        "captioner": presets.build_component("captioner", config),
    }


def _batch(config, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    sizes = presets.image_sizes(config)
    t = config["words_num"]
    lengths = rng.integers(1, t + 1, size=batch)
    ids = rng.integers(2, config["vocab_size"], size=[batch, t])
    ids[np.arange(t)[None, :] >= lengths[:, None]] = 0
    return {
        "images": tuple(
            tf.constant(rng.uniform(-1, 1, [batch, s, s, 3]), tf.float32) for s in sizes
        ),
        "token_ids": tf.constant(ids, tf.int32),
        "caption_length": tf.constant(lengths, tf.int32),
        "class_id": tf.constant(rng.integers(0, 3, batch), tf.int32),
    }


def _trainer(parts, **kwargs):
    trainer = MirrorGANTrainer(
        parts["text_encoder"], parts["generator"], parts["discriminators"], parts["captioner"],
        seed=1, **kwargs,
    )
    trainer.compile(g_optimizer=published_adam(), d_optimizer=published_adam())
    return trainer


def _snapshot(model):
    return [np.array(w) for w in model.weights]


def test_stem_and_stream_stay_bit_identical_while_generator_and_discriminators_train():
    config, parts = _parts()
    trainer = _trainer(parts)
    frozen_before = {k: _snapshot(parts[k]) for k in ("text_encoder", "captioner")}
    g_before = _snapshot(parts["generator"])
    d_before = [_snapshot(d) for d in parts["discriminators"]]
    data = tf.data.Dataset.from_tensors(_batch(config)).repeat(3)
    logs = trainer.fit(data, epochs=1, verbose=0).history
    for key, before in frozen_before.items():
        for a, b in zip(before, _snapshot(parts[key]), strict=True):
            np.testing.assert_array_equal(a, b)  # weights and BatchNorm statistics
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(g_before, _snapshot(parts["generator"]), strict=True)
    )
    for before, d in zip(d_before, parts["discriminators"], strict=True):
        assert any(not np.array_equal(a, b) for a, b in zip(before, _snapshot(d), strict=True))
    for name in ("d_loss", "g_loss", "kl_loss", "caption_loss", "d_loss_64", "d_loss_128",
                 "g_adv_loss_64", "g_adv_loss_128"):
        assert np.isfinite(logs[name][-1]), name


def test_caption_loss_gradient_flows_through_frozen_stream_into_generator():
    config, parts = _parts()
    trainer = _trainer(parts)
    data = _batch(config)
    token_ids, mask, words, sentence = trainer._encode_text(data)
    noise = tf.random.normal([4, config["z_dim"]])
    with tf.GradientTape() as tape:
        images = parts["generator"](noise, sentence, words, mask, training=True)["images"]
        loss = trainer._caption_loss(images[-1], token_ids, data["caption_length"])
    grads = tape.gradient(loss, parts["generator"].trainable_variables)
    norms = [float(tf.norm(g)) for g in grads if g is not None]
    assert len(norms) > 0 and sum(norms) > 0
    assert parts["captioner"].trainable_variables == []  # frozen, yet differentiable


def test_generator_loss_is_the_published_sum_of_terms():
    """g_loss = sum_i adversarial_i + kl_weight * KL + lambda * caption (no DAMSM by default)."""
    config, parts = _parts()
    trainer = _trainer(parts, caption_loss_weight=7.0, kl_loss_weight=2.0)
    logs = trainer.train_step(_batch(config))
    want = (
        float(logs["g_adv_loss_64"]) + float(logs["g_adv_loss_128"])
        + 2.0 * float(logs["kl_loss"]) + 7.0 * float(logs["caption_loss"])
    )
    assert float(logs["g_loss"]) == pytest.approx(want, rel=1e-5)
    assert float(logs["d_loss"]) == pytest.approx(
        float(logs["d_loss_64"]) + float(logs["d_loss_128"]), rel=1e-5
    )


def test_moving_average_follows_the_published_update():
    config, parts = _parts()
    trainer = _trainer(parts, ema_decay=0.75)
    before = _snapshot(trainer.ema_generator)
    trainer.train_step(_batch(config))
    trainable = {id(v) for v in parts["generator"].trainable_weights}
    for old, ema, live in zip(
        before, trainer.ema_generator.weights, parts["generator"].weights, strict=True
    ):
        if id(live) in trainable:
            np.testing.assert_allclose(ema, 0.75 * old + 0.25 * np.array(live), atol=1e-6)
        else:  # BatchNorm statistics are copied, as the published code copies buffers
            np.testing.assert_array_equal(ema, live)


def test_damsm_term_needs_the_image_encoder():
    _, parts = _parts()
    with pytest.raises(ValueError, match="image_encoder"):
        MirrorGANTrainer(
            parts["text_encoder"], parts["generator"], parts["discriminators"],
            parts["captioner"], damsm_loss_weight=5.0,
        )


def test_discriminator_count_must_match_stages():
    _, parts = _parts()
    with pytest.raises(ValueError, match="one discriminator per generator stage"):
        MirrorGANTrainer(
            parts["text_encoder"], parts["generator"], parts["discriminators"][:1],
            parts["captioner"],
        )


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_train_step_runs_under_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    config, parts = _parts()
    trainer = _trainer(parts)
    if policy == "mixed_float16":
        assert isinstance(trainer.g_optimizer, keras.optimizers.LossScaleOptimizer)
    data = tf.data.Dataset.from_tensors(_batch(config)).repeat(2)
    logs = trainer.fit(data, epochs=1, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in logs.values())


@pytest.mark.parametrize("ca_noise", [True, False])
def test_ca_noise_option_chooses_sampled_c_code_or_mu(ca_noise):
    config, parts = _parts()
    trainer = _trainer(parts, ca_noise=ca_noise)
    generator, seen = parts["generator"], []
    original = generator.call

    def call(*args, **kwargs):
        seen.append(kwargs.get("deterministic"))
        return original(*args, **kwargs)

    generator.call = call
    trainer.train_step(_batch(config))
    assert seen and set(seen) == {not ca_noise}
