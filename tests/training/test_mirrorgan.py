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


def _published_step_and_rewind(parts, batch):
    """One published `train_step` (c_code = mu) from the parts' weights, then those weights
    back: its logs, the generator's weights after it and the discriminators' before it."""
    g_start = _snapshot(parts["generator"])
    d_start = [_snapshot(d) for d in parts["discriminators"]]
    # c_code = mu: the conditioning-augmentation noise would differ between two steps.
    logs = _trainer(parts, ca_noise=False).train_step(batch)
    g_after = _snapshot(parts["generator"])
    parts["generator"].set_weights(g_start)
    for d, weights in zip(parts["discriminators"], d_start, strict=True):
        d.set_weights(weights)
    return logs, g_after, d_start


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


def _step_and_check_moving_average(trainer, parts, batch, decay):
    """One `train_step`; then each trainable EMA weight is decay * before + (1 - decay) * live
    and each other one (BatchNorm statistics) a copy of the live one."""
    before = _snapshot(trainer.ema_generator)
    trainer.train_step(batch)
    trainable = {id(v) for v in parts["generator"].trainable_weights}
    for old, ema, live in zip(
        before, trainer.ema_generator.weights, parts["generator"].weights, strict=True
    ):
        if id(live) in trainable:
            np.testing.assert_allclose(
                ema, decay * old + (1 - decay) * np.array(live), atol=1e-6
            )
        else:  # BatchNorm statistics are copied, as the published code copies buffers
            np.testing.assert_array_equal(ema, live)


def test_moving_average_follows_the_published_update():
    config, parts = _parts()
    trainer = _trainer(parts, ema_decay=0.75)
    _step_and_check_moving_average(trainer, parts, _batch(config), 0.75)


def test_moving_average_warms_up_with_the_update_count():
    """ema_warmup: decay min(ema_decay, (1 + n) / (10 + n)) at update n: 2/11, then 3/12."""
    config, parts = _parts()
    trainer = _trainer(parts, ema_decay=0.999, ema_warmup=True)
    for n in (1, 2):
        _step_and_check_moving_average(trainer, parts, _batch(config), (1.0 + n) / (10.0 + n))


def test_damsm_term_needs_the_image_encoder():
    _, parts = _parts()
    with pytest.raises(ValueError, match="image_encoder"):
        MirrorGANTrainer(
            parts["text_encoder"], parts["generator"], parts["discriminators"],
            parts["captioner"], damsm_loss_weight=5.0,
        )


def test_paired_loss_adds_the_centred_l1_of_every_stage_to_the_generator_loss():
    """g_loss = published g_loss + w * sum_i centred_l1(fake_i, real_i), and it trains G."""
    config, parts = _parts()
    batch = _batch(config)
    published, g_published, _ = _published_step_and_rewind(parts, batch)
    assert "paired_loss" not in published
    logs = _trainer(parts, ca_noise=False, paired_loss_weight=7.0).train_step(batch)
    assert float(logs["paired_loss"]) > 0.1  # random images: far from the real ones
    assert float(logs["g_loss"]) - float(published["g_loss"]) == pytest.approx(
        7.0 * float(logs["paired_loss"]), rel=1e-4
    )
    assert float(logs["d_loss"]) == pytest.approx(float(published["d_loss"]), rel=1e-5)
    moved = [not np.allclose(a, b) for a, b in
             zip(g_published, _snapshot(parts["generator"]), strict=True)]
    assert any(moved)  # the term's gradient reaches the generator


def test_paired_loss_weight_must_not_be_negative():
    _, parts = _parts()
    with pytest.raises(ValueError, match="paired_loss_weight"):
        _trainer(parts, paired_loss_weight=-1.0)


def test_config_round_trip_keeps_every_recipe_option():
    _, parts = _parts()
    options = {"caption_loss_weight": 3.0, "kl_loss_weight": 0.5, "paired_loss_weight": 7.0,
               "ema_decay": 0.9, "ema_warmup": True, "ca_noise": False,
               "swap_negatives": [[3, 4], [5]]}
    config = _trainer(parts, **options).get_config()
    restored = MirrorGANTrainer.from_config(config)
    for name, value in options.items():
        assert getattr(restored, name) == value, name
    assert restored.generator.get_config() == parts["generator"].get_config()


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


def test_swapped_captions_replace_each_group_word_by_another_groups_canonical_word():
    config, parts = _parts()
    groups = [[3, 4], [5], [6, 7]]
    trainer = _trainer(parts, swap_negatives=groups)
    ids = tf.constant([[3, 9, 4, 0], [9, 9, 0, 0], [5, 7, 2, 0]] * 20, tf.int32)
    group_of = {i: g for g, group in enumerate(groups) for i in group}
    seen = set()
    for _ in range(3):
        swapped, flags = (t.numpy() for t in trainer.swapped_captions(ids))
        np.testing.assert_array_equal(flags, [True, False, True] * 20)
        for before, after in zip(ids.numpy().ravel(), swapped.ravel(), strict=True):
            if before in group_of:
                assert after in (3, 5, 6) and group_of[after] != group_of[before]
                seen.add((before, after))
            else:
                assert after == before
    assert {after for before, after in seen if before == 3} == {5, 6}  # both other groups


def test_swap_negatives_add_the_swapped_pairs_term_to_the_discriminator_loss():
    """d_loss = published d_loss + sum_i BCE(cond_i(real, s_swapped), 0) / 3 (first step)."""
    config, parts = _parts()
    batch = _batch(config)
    published, _, d_start = _published_step_and_rewind(parts, batch)
    trainer = _trainer(parts, ca_noise=False, swap_negatives=[[3, 4], [5], [6]])
    swapped_ids = tf.where(batch["token_ids"] == 2, 5, batch["token_ids"])
    mask = tf.reduce_any(batch["token_ids"] == 2, axis=1)
    assert bool(tf.reduce_any(mask))
    trainer.swapped_captions = lambda token_ids: (swapped_ids, mask)
    _, sentence = parts["text_encoder"](swapped_ids, training=False)
    want = []
    for d, real in zip(parts["discriminators"], batch["images"], strict=True):
        d.set_weights(d_start[len(want)])
        logits = d.conditional_logits(d.encode(real, training=True), sentence, training=True)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(logits),
                                                      logits=logits)
        want.append(float(tf.reduce_mean(tf.boolean_mask(bce, mask))) / 3.0)
    for d, weights in zip(parts["discriminators"], d_start, strict=True):
        d.set_weights(weights)  # the BatchNorm statistics that call moved
    logs = trainer.train_step(batch)
    for d, term in zip(parts["discriminators"], want, strict=True):
        name = f"d_loss_{d.image_size}"
        assert float(logs[name]) - float(published[name]) == pytest.approx(term, rel=1e-4)


@pytest.mark.parametrize("groups", [[[3, 4]], [[3], []], [[3, 4], [4]]])
def test_swap_negatives_need_two_groups_of_distinct_ids(groups):
    config, parts = _parts()
    with pytest.raises(ValueError, match="swap_negatives"):
        _trainer(parts, swap_negatives=groups)
