import keras
import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf.data.vocabulary import Vocabulary
from mirrorgan_tf.evaluation.bleu import corpus_bleu
from mirrorgan_tf.losses import caption_loss
from mirrorgan_tf.networks.captioner import Captioner
from mirrorgan_tf.training.captioner import CaptionerTrainer, evaluate_captions, token_accuracy

VOCAB = Vocabulary(["<end>", "<unk>"] + [f"w{i}" for i in range(18)])  # 20 ids
T = 6


def make_batch(batch=4, seed=0):
    """A batched element of the data contract: one 64x64 stage, padded ids, raw captions."""
    rng = np.random.default_rng(seed)
    lengths = np.array([6, 4, 3, 5][:batch], np.int32)
    ids = rng.integers(2, VOCAB.size, size=(batch, T)).astype(np.int32)
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 0
    return {
        "images": (rng.uniform(-1, 1, (batch, 64, 64, 3)).astype(np.float32),),
        "token_ids": ids,
        "caption_length": lengths,
        "class_id": np.arange(batch, dtype=np.int32),
        "key": np.array([f"k{i}".encode() for i in range(batch)]),
        "caption": np.array([VOCAB.decode(row).upper().encode() + b"." for row in ids]),
    }


def small_captioner(**kwargs):
    keras.utils.set_random_seed(0)
    return Captioner(VOCAB.size, embed_dim=8, hidden_dim=16, max_length=8, **kwargs)


def test_overfits_a_fixed_batch_and_captions_it():
    captioner = small_captioner(backbone="small")
    trainer = CaptionerTrainer(captioner)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    dataset = tf.data.Dataset.from_tensors(make_batch())
    trunk_before = [w.numpy().copy() for w in captioner.encoder.resnet.trainable_weights]
    before = trainer.evaluate(dataset, return_dict=True, verbose=0)

    history = trainer.fit(dataset.repeat(), steps_per_epoch=40, epochs=1, verbose=0)
    after = trainer.evaluate(dataset, return_dict=True, verbose=0)

    assert set(history.history) == {"loss", "accuracy"}
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    assert after["accuracy"] > before["accuracy"] + 0.3
    # The randomly initialised "small" trunk trains by default.
    assert trainer.train_trunk is True
    assert any(
        not np.allclose(a, w.numpy())
        for a, w in zip(trunk_before, captioner.encoder.resnet.trainable_weights, strict=True)
    )

    scores = evaluate_captions(captioner, dataset, VOCAB)
    assert set(scores) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "samples"}
    assert len(scores["samples"]) == 4
    # References are the raw captions through the package's tokenization (lowercase, \w+).
    assert scores["samples"][1][0] == VOCAB.decode(make_batch()["token_ids"][1])
    assert 0.0 <= scores["bleu_4"] <= scores["bleu_1"] <= 1.0
    assert scores["bleu_1"] > 0.3  # an overfitted captioner mostly repeats its captions


def test_resnet_trunk_is_frozen_by_default():
    captioner = small_captioner(backbone="resnet152", blocks=(1, 1, 1, 1), width=8, input_size=64)
    trainer = CaptionerTrainer(captioner)
    assert trainer.train_trunk is False and not captioner.encoder.resnet.trainable
    trainer.compile()
    assert float(trainer.optimizer.learning_rate) == pytest.approx(1e-3)
    trunk_before = [w.numpy().copy() for w in captioner.encoder.resnet.weights]
    linear_before = captioner.encoder.linear.kernel.numpy().copy()
    trainer.fit(tf.data.Dataset.from_tensors(make_batch(batch=2)).repeat(2), verbose=0)
    # Weights and BatchNorm statistics alike.
    for a, w in zip(trunk_before, captioner.encoder.resnet.weights, strict=True):
        np.testing.assert_array_equal(a, w.numpy())
    assert not np.allclose(linear_before, captioner.encoder.linear.kernel.numpy())


def test_loss_counts_the_words_and_the_end_token():
    captioner = small_captioner(backbone="small")
    batch = make_batch()
    logits = CaptionerTrainer(captioner)(batch, training=False)
    with_end = CaptionerTrainer(captioner)
    words_only = CaptionerTrainer(captioner, predict_end=False)
    # Lengths 6, 4, 3, 5 in T = 6: the <end> fits after all but the first.
    np.testing.assert_array_equal(with_end.target_lengths(batch), [6, 5, 4, 6])
    np.testing.assert_array_equal(words_only.target_lengths(batch), [6, 4, 3, 5])
    assert batch["token_ids"][1, 4] == 0  # the target at the extra position is <end>
    for trainer in (with_end, words_only):
        trainer.compile()
        logs = trainer.test_step(batch)
        expected = caption_loss(logits, batch["token_ids"], trainer.target_lengths(batch))
        np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
        np.testing.assert_allclose(
            logs["accuracy"],
            token_accuracy(logits, batch["token_ids"], batch["caption_length"]),
            rtol=1e-6,
        )


def test_token_accuracy_ignores_padding():
    logits = tf.one_hot([[3, 4, 5, 5], [2, 9, 9, 9]], 10)
    captions = [[3, 4, 1, 0], [2, 0, 0, 0]]
    # Row 0: 2 of 3 real words right; row 1: 1 of 1; padding mistakes do not count.
    assert float(token_accuracy(logits, captions, [3, 1])) == pytest.approx(3 / 4)


class StubCaptioner:
    """Generates a fixed caption per image, identified by its first pixel."""

    def __init__(self, captions):
        self.captions = tf.constant(captions, tf.int32)

    def generate(self, images, beam_size=1):
        index = tf.cast(images[:, 0, 0, 0], tf.int32)
        return tf.gather(self.captions, index)


def test_evaluate_captions_groups_references_by_key():
    w = VOCAB.word_to_id
    generated = [
        [w("w1"), w("w2"), w("w3"), w("w4"), 0, 0],
        [w("w5"), w("w6"), w("w7"), 0, 0, 0],
    ]
    # Image 0 has two captions (two elements with key "a"), image 1 one; a second batch
    # repeats image 1's element; max_batches stops before the third batch.
    images = np.zeros([3, 4, 4, 3], np.float32)
    images[2] = 1.0
    first = {
        "images": (images,),
        "token_ids": np.zeros([3, 6], np.int32),
        "caption_length": np.ones([3], np.int32),
        "key": np.array([b"a", b"a", b"b"]),
        "caption": np.array([b"W1 w2 w3 w9", b"w1 w2 w3 w4!", b"w5 w6 w8"]),
    }
    second = {key: value[2:] for key, value in first.items() if key != "images"}
    second["images"] = (images[2:],)
    third = dict(second, key=np.array([b"c"]))
    scores = evaluate_captions(
        StubCaptioner(generated), [first, second, third], VOCAB, max_batches=2
    )
    references = [
        ["w1 w2 w3 w9".split(), "w1 w2 w3 w4".split()],
        ["w5 w6 w8".split()],
    ]
    hypotheses = ["w1 w2 w3 w4".split(), "w5 w6 w7".split()]
    expected = corpus_bleu(references, hypotheses)
    assert [scores[f"bleu_{n}"] for n in (1, 2, 3, 4)] == pytest.approx(expected)
    assert scores["bleu_1"] == pytest.approx(6 / 7)
    assert scores["samples"] == [("w1 w2 w3 w9", "w1 w2 w3 w4"), ("w5 w6 w8", "w5 w6 w7")]


def test_mixed_float16_step():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        trainer = CaptionerTrainer(small_captioner(backbone="small"))
        trainer.compile()
        assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
        history = trainer.fit(
            tf.data.Dataset.from_tensors(make_batch()).repeat(2), epochs=1, verbose=0
        )
        assert np.isfinite(history.history["loss"][0])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_config_and_save_round_trip(tmp_path):
    trainer = CaptionerTrainer(small_captioner(backbone="small"), predict_end=False)
    restored = CaptionerTrainer.from_config(trainer.get_config())
    assert restored.predict_end is False and restored.train_trunk is True
    assert restored.captioner.get_config() == trainer.captioner.get_config()

    trainer.compile()
    batch = make_batch()
    trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    trainer.save(tmp_path / "captioner.keras")
    loaded = keras.saving.load_model(tmp_path / "captioner.keras")
    assert int(loaded.optimizer.iterations) == 1 and loaded.predict_end is False
    np.testing.assert_allclose(
        trainer(batch, training=False), loaded(batch, training=False), atol=1e-6
    )
