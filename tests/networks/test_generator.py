"""GLAM generator: published parameter counts, shapes, masking exactness, seeds, saving."""

import keras
import numpy as np
import pytest

from mirrorgan_tf.networks.generator import Generator
from mirrorgan_tf.networks.text_encoder import TextEncoder, caption_mask

SMALL = dict(gf_dim=4, z_dim=8, condition_dim=8, nef=16, r_num=1)


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _inputs(rng, batch=3, length=6, lengths=(6, 2, 4), nef=16, z_dim=8):
    noise = rng.normal(size=[batch, z_dim]).astype("float32")
    sentence = rng.normal(size=[batch, nef]).astype("float32")
    words = rng.normal(size=[batch, length, nef]).astype("float32")
    mask = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
    words = words * mask[..., None]
    return noise, sentence, words, mask


def _randomize_batch_norms(model, rng):
    """Non-trivial moving statistics so that inference-mode BN is exercised."""
    for weight in model.non_trainable_weights:
        if weight.path.endswith("moving_mean"):
            weight.assign(rng.normal(0, 0.1, weight.shape))
        elif weight.path.endswith("moving_variance"):
            weight.assign(rng.uniform(0.5, 2.0, weight.shape))


def _flat(out):
    return [out["c_code"], out["mu"], out["logvar"], *out["images"], *out["attention"]]


@pytest.mark.parametrize(
    "config, expected",
    [
        (dict(gf_dim=32, r_num=2), 7_105_392),  # birds
        (dict(gf_dim=48, r_num=3), 13_853_408),  # COCO
    ],
)
def test_parameter_count_matches_published(config, expected):
    generator = Generator(z_dim=100, condition_dim=100, nef=256, num_stages=3, **config)
    assert _trainable_count(generator) == expected


@pytest.mark.parametrize("num_stages", [1, 2, 3])
def test_output_shapes(num_stages):
    rng = np.random.default_rng(num_stages)
    generator = Generator(num_stages=num_stages, **SMALL)
    assert generator.image_sizes == [64, 128, 256][:num_stages]
    for batch, length in [(1, 1), (3, 18)]:
        noise, sentence, words, mask = _inputs(
            rng, batch=batch, length=length, lengths=[length] * batch
        )
        out = generator(noise, sentence, words, mask, training=False)
        assert [tuple(i.shape) for i in out["images"]] == [
            (batch, s, s, 3) for s in generator.image_sizes
        ]
        assert [tuple(a.shape) for a in out["attention"]] == [
            # Attention of stage i is computed on the features of stage i - 1.
            (batch, s, s, length) for s in generator.image_sizes[:-1]
        ]
        for key in ("c_code", "mu", "logvar"):
            assert tuple(out[key].shape) == (batch, 8)
        for image in out["images"]:
            image = np.asarray(image)
            assert image.dtype == np.float32 and np.abs(image).max() <= 1.0


def test_attention_is_zero_on_padded_words():
    rng = np.random.default_rng(10)
    noise, sentence, words, mask = _inputs(rng)
    out = Generator(num_stages=3, **SMALL)(noise, sentence, words, mask, training=False)
    for attention in out["attention"]:
        attention = np.asarray(attention).transpose(0, 3, 1, 2)  # [B, T, H, W]
        assert np.all(attention[~mask] == 0.0)
        np.testing.assert_allclose(attention.sum(1), 1.0, rtol=1e-5)


def test_batch_permutation_permutes_every_output():
    rng = np.random.default_rng(11)
    encoder = TextEncoder(vocab_size=20, embedding_dim=8, nef=16)
    generator = Generator(num_stages=3, **SMALL)
    _randomize_batch_norms(generator, rng)
    tokens = np.array(
        [[3, 5, 7, 9, 2, 0], [4, 4, 0, 0, 0, 0], [1, 2, 3, 0, 0, 0]], dtype="int32"
    )
    noise = rng.normal(size=[3, 8]).astype("float32")
    perm = np.array([2, 0, 1])

    def run(ids, z):
        words, sentence = encoder(ids, training=False)
        out = generator(z, sentence, words, caption_mask(ids), training=False,
                        deterministic=True)
        return [np.asarray(words), np.asarray(sentence), *(np.asarray(t) for t in _flat(out))]

    full = run(tokens, noise)
    permuted = run(tokens[perm], noise[perm])
    assert len(full) == 2 + 3 + 3 + 2
    for a, b in zip(full, permuted, strict=True):
        np.testing.assert_allclose(a[perm], b, rtol=1e-5, atol=1e-5)


def test_padded_token_ids_change_nothing():
    rng = np.random.default_rng(12)
    encoder = TextEncoder(vocab_size=20, embedding_dim=8, nef=16)
    generator = Generator(num_stages=2, **SMALL)
    tokens = np.array([[3, 5, 7, 0, 0, 0], [4, 0, 0, 0, 0, 0]], dtype="int32")
    changed = tokens.copy()
    changed[0, 4:] = [11, 12]
    changed[1, 2:] = [19, 1, 2, 3]
    noise = rng.normal(size=[2, 8]).astype("float32")

    def run(ids):
        words, sentence = encoder(ids, training=False)
        out = generator(noise, sentence, words, caption_mask(ids), training=False,
                        deterministic=True)
        return [words, sentence, *_flat(out)]

    for a, b in zip(run(tokens), run(changed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_seeded_sampling_and_deterministic_mode():
    rng = np.random.default_rng(13)
    noise, sentence, words, mask = _inputs(rng)
    first = Generator(num_stages=1, seed=5, **SMALL)
    second = Generator(num_stages=1, seed=5, **SMALL)
    second.set_weights(first.get_weights())
    a = first(noise, sentence, words, mask, training=False)
    b = second(noise, sentence, words, mask, training=False)
    np.testing.assert_array_equal(a["c_code"], b["c_code"])
    np.testing.assert_array_equal(a["images"][0], b["images"][0])
    assert not np.allclose(a["c_code"], a["mu"])
    again = first(noise, sentence, words, mask, training=False)
    assert not np.allclose(again["c_code"], a["c_code"])  # the sampler advances
    fixed = first(noise, sentence, words, mask, training=False, deterministic=True)
    np.testing.assert_array_equal(fixed["c_code"], fixed["mu"])
    np.testing.assert_allclose(fixed["mu"], a["mu"], rtol=1e-6)


def test_rejects_bad_configuration_and_inputs():
    with pytest.raises(ValueError, match="num_stages"):
        Generator(num_stages=4, **SMALL)
    with pytest.raises(ValueError, match="num_stages"):
        Generator(num_stages=0, **SMALL)
    generator = Generator(num_stages=1, **SMALL)
    noise, sentence, words, mask = _inputs(np.random.default_rng(14))
    with pytest.raises(ValueError, match="noise"):
        generator(noise[:, None], sentence, words, mask)
    with pytest.raises(ValueError, match="sentence"):
        generator(noise, sentence[:, None], words, mask)
    with pytest.raises(ValueError, match="words"):
        generator(noise, sentence, words[:, 0], mask)
    with pytest.raises(ValueError, match="word_mask"):
        generator(noise, sentence, words, mask[..., None])
    with pytest.raises(ValueError, match="z_dim"):
        generator(noise[:, :4], sentence, words, mask)
    with pytest.raises(ValueError, match="nef"):
        generator(noise, sentence, words[..., :8], mask)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    noise, sentence, words, mask = _inputs(np.random.default_rng(15))
    try:
        keras.mixed_precision.set_global_policy(policy)
        generator = Generator(num_stages=2, **SMALL)
        out = generator(noise, sentence, words, mask, training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for tensor in [*out["images"], *out["attention"], out["c_code"], out["mu"], out["logvar"]]:
        assert tensor.dtype == "float32"
        assert np.all(np.isfinite(np.asarray(tensor)))


def test_config_round_trip_and_save_load(tmp_path):
    rng = np.random.default_rng(16)
    generator = Generator(num_stages=3, seed=3, name="glam", **SMALL)
    _randomize_batch_norms(generator, rng)
    config = generator.get_config()
    assert {k: config[k] for k in (*SMALL, "num_stages", "seed")} == {
        **SMALL, "num_stages": 3, "seed": 3
    }
    clone = Generator.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(generator.get_weights())

    path = str(tmp_path / "generator.keras")
    generator.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Generator)

    noise, sentence, words, mask = _inputs(rng)
    expected = _flat(generator(noise, sentence, words, mask, training=False))
    for other in (clone, loaded):
        # Same weights and the same sampler state: the sampled c_code repeats too.
        got = _flat(other(noise, sentence, words, mask, training=False))
        for a, b in zip(expected, got, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_every_weight_gets_a_gradient_in_a_traced_step():
    import tensorflow as tf

    noise, sentence, words, mask = _inputs(np.random.default_rng(17))
    generator = Generator(num_stages=2, seed=1, **SMALL)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = generator(noise, sentence, words, mask, training=True)
            loss = sum(tf.reduce_mean(image) for image in out["images"])
        return tape.gradient(loss, generator.trainable_weights)

    grads = step()
    missing = [w.path for w, g in zip(generator.trainable_weights, grads, strict=True)
               if g is None or not np.any(np.asarray(g))]
    assert not missing


def test_load_lower_stages_grows_a_smaller_generator():
    rng = np.random.default_rng(7)
    small = Generator(num_stages=1, **SMALL)
    _randomize_batch_norms(small, rng)
    big = Generator(num_stages=3, **SMALL)
    fresh_head = np.asarray(big.image_heads[2].kernel).copy()
    big.load_lower_stages(small)
    noise, sentence, words, mask = _inputs(rng)
    want = small(noise, sentence, words, mask, training=False, deterministic=True)
    got = big(noise, sentence, words, mask, training=False, deterministic=True)
    # Stage 1 (and CA) now compute exactly what the small generator computes.
    np.testing.assert_array_equal(np.asarray(want["mu"]), np.asarray(got["mu"]))
    np.testing.assert_array_equal(np.asarray(want["images"][0]), np.asarray(got["images"][0]))
    # The stages beyond keep their own weights.
    np.testing.assert_array_equal(np.asarray(big.image_heads[2].kernel), fresh_head)
    # A two-stage source fills stage 2 as well.
    two = Generator(num_stages=2, **SMALL)
    big.load_lower_stages(two)
    np.testing.assert_array_equal(
        np.asarray(big.fusion[0].kernel), np.asarray(two.fusion[0].kernel)
    )


def test_load_lower_stages_takes_the_lower_stages_of_a_larger_generator():
    rng = np.random.default_rng(8)
    big = Generator(num_stages=3, **SMALL)
    _randomize_batch_norms(big, rng)
    small = Generator(num_stages=2, **SMALL)
    small.load_lower_stages(big)
    noise, sentence, words, mask = _inputs(rng)
    want = big(noise, sentence, words, mask, training=False, deterministic=True)
    got = small(noise, sentence, words, mask, training=False, deterministic=True)
    # Stages 1 and 2 compute exactly what the larger generator's compute.
    assert len(got["images"]) == 2
    for stage in range(2):
        np.testing.assert_array_equal(np.asarray(want["images"][stage]),
                                      np.asarray(got["images"][stage]))


def test_load_lower_stages_rejects_other_configurations():
    big = Generator(num_stages=2, **SMALL)
    with pytest.raises(ValueError, match="gf_dim"):
        big.load_lower_stages(Generator(num_stages=1, **{**SMALL, "gf_dim": 8}))


def _upsampled(image, times):
    for _ in range(times):
        image = np.repeat(np.repeat(image, 2, axis=1), 2, axis=2)
    return image


def test_residual_images_start_as_the_upsampled_lower_image_and_then_refine_it():
    rng = np.random.default_rng(3)
    small = Generator(num_stages=1, residual_images=True, **SMALL)
    _randomize_batch_norms(small, rng)
    big = Generator(num_stages=3, residual_images=True, **SMALL)
    big.load_lower_stages(small)
    noise, sentence, words, mask = _inputs(rng)
    images = [np.asarray(i) for i in big(noise, sentence, words, mask, training=False,
                                          deterministic=True)["images"]]
    # Zero-initialised refinement heads: the grown stages draw the 64 px image, enlarged.
    np.testing.assert_array_equal(images[1], _upsampled(images[0], 1))
    np.testing.assert_array_equal(images[2], _upsampled(images[0], 2))
    # A non-zero head adds its correction before the tanh.
    big.image_heads[2].kernel.assign(rng.normal(0, 0.1, big.image_heads[2].kernel.shape))
    refined = np.asarray(big(noise, sentence, words, mask, training=False,
                             deterministic=True)["images"][2])
    assert np.abs(refined - images[2]).max() > 1e-3
    assert np.all(np.abs(refined) <= 1.0)
    # The published generator does not: its stages draw their own images from the start.
    plain = Generator(num_stages=2, **SMALL)
    out = plain(noise, sentence, words, mask, training=False, deterministic=True)["images"]
    assert np.abs(np.asarray(out[1]) - _upsampled(np.asarray(out[0]), 1)).max() > 1e-2
    with pytest.raises(ValueError, match="residual_images"):
        plain.load_lower_stages(small)
