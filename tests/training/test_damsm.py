import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf.losses import damsm_sentence_loss, damsm_word_loss, read_cell_code
from mirrorgan_tf.networks.image_encoder import ImageEncoder
from mirrorgan_tf.networks.text_encoder import TextEncoder
from mirrorgan_tf.training.damsm import (
    DAMSMLearningRate,
    DAMSMTrainer,
    batch_retrieval_accuracy,
    damsm_optimizer,
)

VOCAB, T = 20, 6


def make_batch(batch=4, seed=0, class_ids=(0, 1, 2, 0)):
    """A batched element of the data contract: one 64x64 stage, padded ids, strings."""
    rng = np.random.default_rng(seed)
    lengths = np.array([6, 4, 3, 5, 2, 6][:batch], np.int32)
    ids = rng.integers(2, VOCAB, size=(batch, T)).astype(np.int32)
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 0
    return {
        "images": (rng.uniform(-1, 1, (batch, 64, 64, 3)).astype(np.float32),),
        "token_ids": ids,
        "caption_length": lengths,
        "class_id": np.array(class_ids[:batch], np.int32),
        "key": np.array([f"k{i}".encode() for i in range(batch)]),
        "caption": np.array([b"a caption"] * batch),
    }


def make_trainer(dropout=0.5, **kwargs):
    keras.utils.set_random_seed(0)
    return DAMSMTrainer(
        TextEncoder(VOCAB, embedding_dim=8, nef=8, dropout=dropout),
        ImageEncoder(nef=8, backbone="small"),
        **kwargs,
    )


class SpyAdam(keras.optimizers.Adam):
    """Records the gradients it is given (run eagerly)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def apply_gradients(self, grads_and_vars):
        grads_and_vars = list(grads_and_vars)
        self.seen.append({v.path: tf.convert_to_tensor(g).numpy() for g, v in grads_and_vars})
        return super().apply_gradients(grads_and_vars)


def _global_norm(arrays):
    return math.sqrt(sum(float(np.sum(np.square(a))) for a in arrays))


def test_overfits_a_fixed_batch_and_updates_the_right_weights():
    trainer = make_trainer()
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2, beta_1=0.5))
    batch = make_batch()
    dataset = tf.data.Dataset.from_tensors(batch)
    before = trainer.evaluate(dataset, return_dict=True, verbose=0)
    text_before = [w.numpy().copy() for w in trainer.text_encoder.weights]
    trunk_before = [w.numpy().copy() for w in trainer.image_encoder.trunk.weights]
    projection_before = trainer.image_encoder.emb_features.kernel.numpy().copy()

    history = trainer.fit(dataset.repeat(), steps_per_epoch=40, epochs=1, verbose=0)
    after = trainer.evaluate(dataset, return_dict=True, verbose=0)

    assert set(history.history) == {"loss", "word_loss", "sentence_loss"}
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    assert after["loss"] == pytest.approx(after["word_loss"] + after["sentence_loss"], rel=1e-5)
    assert 0.0 <= after["r_precision"] <= 1.0 and after["r_precision"] >= before["r_precision"]
    # STEM trains (embedding and RNN); the frozen trunk (weights and BN statistics) does not;
    # the image encoder's projections do.
    for a, w in zip(text_before, trainer.text_encoder.weights, strict=True):
        assert not np.allclose(a, w.numpy()), w.path
    for a, w in zip(trunk_before, trainer.image_encoder.trunk.weights, strict=True):
        np.testing.assert_array_equal(a, w.numpy())
    assert not np.allclose(projection_before, trainer.image_encoder.emb_features.kernel.numpy())



def _two_word_batch():
    """Each caption starts with word 2 or word 3 and holds neither elsewhere."""
    batch = make_batch(class_ids=(0, 1, 2, 3))
    batch["token_ids"][:, 0] = [2, 3, 2, 3]
    batch["token_ids"][:, 1:][np.isin(batch["token_ids"][:, 1:], [2, 3])] = 4
    return batch


def _fit_fixed_batch(trainer, batch, steps):
    """`(losses before, fit history, losses after)` of `steps` steps on one batch."""
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2, beta_1=0.5))
    dataset = tf.data.Dataset.from_tensors(batch)
    before = trainer.evaluate(dataset, return_dict=True, verbose=0)
    history = trainer.fit(dataset.repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
    return before, history, trainer.evaluate(dataset, return_dict=True, verbose=0)


def _assert_added_loss_learnt(history, before, after, name, weight, shrink):
    """The trainer logs `name`, adds it to DAMSM's loss at `weight`, and cut it by `shrink`."""
    assert name in history.history
    assert after["loss"] == pytest.approx(
        after["word_loss"] + after["sentence_loss"] + weight * after[name], rel=1e-5
    )
    assert after[name] < shrink * before[name], (before, after)


def test_keyword_groups_teach_the_sentence_to_name_the_group():
    # Two groups: word 2 and word 3.
    batch = _two_word_batch()
    trainer = make_trainer(keyword_groups=[[2], [3]], keyword_weight=2.0)
    before, history, after = _fit_fixed_batch(trainer, batch, 40)

    _assert_added_loss_learnt(history, before, after, "keyword_loss", 2.0, 0.3)
    _, sentence = trainer.text_encoder(batch["token_ids"], training=False)
    np.testing.assert_array_equal(np.argmax(sentence[:, :2], axis=1), [0, 1, 0, 1])
    restored = DAMSMTrainer.from_config(trainer.get_config())
    assert (restored.keyword_groups, restored.keyword_weight) == ([[2], [3]], 2.0)
    with pytest.raises(ValueError, match="one per"):
        make_trainer(keyword_groups=[[i] for i in range(2, 11)])  # 9 groups, nef 8


def test_cell_code_teaches_the_sentence_what_each_cell_holds():
    # Two cells, two attributes of two classes each (8 dims = nef); the first word says
    # which of two scenes a caption describes: cell 0 holds (0, 1) or (1, 0), cell 1 is the
    # other colour with its second attribute not applying (-1).
    batch = _two_word_batch()
    scenes = {2: [[0, 1], [1, -1]], 3: [[1, 0], [0, -1]]}
    batch["cell_labels"] = np.array([scenes[i] for i in batch["token_ids"][:, 0]], np.int32)
    keras.utils.set_random_seed(0)
    # The shapes preset's sentence (norm sqrt(nef)): logits beyond the LSTM's (-1, 1).
    trainer = DAMSMTrainer(
        TextEncoder(VOCAB, embedding_dim=8, nef=8, normalize_sentence=True),
        ImageEncoder(nef=8, backbone="small"), cell_code_classes=(2, 2), cell_code_weight=2.0,
    )
    before, history, after = _fit_fixed_batch(trainer, batch, 100)

    _assert_added_loss_learnt(history, before, after, "cell_code_loss", 2.0, 0.5)
    _, sentence = trainer.text_encoder(batch["token_ids"], training=False)
    read = read_cell_code(sentence, (2, 2), 2).numpy()
    np.testing.assert_array_equal(read[:, :, 0], batch["cell_labels"][:, :, 0])
    np.testing.assert_array_equal(read[:, 0, 1], batch["cell_labels"][:, 0, 1])
    restored = DAMSMTrainer.from_config(trainer.get_config())
    assert (restored.cell_code_classes, restored.cell_code_weight) == ([2, 2], 2.0)


def test_cell_code_refuses_batches_without_labels_and_a_sentence_too_narrow():
    batch = make_batch()
    trainer = make_trainer(cell_code_classes=(2, 2))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    with pytest.raises(ValueError, match="needs `cell_labels`"):
        trainer.evaluate(tf.data.Dataset.from_tensors(batch), verbose=0)
    batch["cell_labels"] = np.zeros([4, 3, 2], np.int32)  # 3 cells x 4 classes > nef 8
    with pytest.raises(ValueError, match="12 sentence dimensions; STEM has nef 8"):
        trainer.evaluate(tf.data.Dataset.from_tensors(batch), verbose=0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        make_trainer(cell_code_classes=(2, 1))


def test_text_gradients_are_clipped_and_image_gradients_are_not():
    batch = make_batch()
    seen = {}
    for clip in (None, 0.25):
        # Dropout off and lr 0: both runs see identical weights and identical gradients.
        trainer = make_trainer(dropout=0.0, rnn_grad_clip=clip)
        spy = SpyAdam(learning_rate=0.0)
        trainer.compile(optimizer=spy, run_eagerly=True)
        trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        text_paths = {v.path for v in trainer.text_encoder.trainable_variables}
        grads = spy.seen[0]
        seen[clip] = (
            [grads[p] for p in sorted(grads) if p in text_paths],
            [grads[p] for p in sorted(grads) if p not in text_paths],
        )
        assert len(seen[clip][1]) == len(trainer.image_encoder.trainable_variables) == 3
    raw_text_norm = _global_norm(seen[None][0])
    assert raw_text_norm > 0.5  # the clip has something to do
    assert _global_norm(seen[0.25][0]) == pytest.approx(0.25, rel=1e-4)
    # Same direction, scaled down.
    for clipped, raw in zip(seen[0.25][0], seen[None][0], strict=True):
        np.testing.assert_allclose(clipped, raw * 0.25 / raw_text_norm, rtol=1e-3, atol=1e-7)
    for clipped, raw in zip(seen[0.25][1], seen[None][1], strict=True):
        np.testing.assert_allclose(clipped, raw, rtol=1e-5, atol=1e-7)
    assert _global_norm(seen[0.25][1]) > 0.25


def test_same_class_negatives_are_masked():
    trainer = make_trainer(dropout=0.0)
    same = make_batch(class_ids=(0, 0, 1, 1))
    distinct = dict(same, class_id=np.array([0, 1, 2, 3], np.int32))
    word, sentence, _, _ = trainer.damsm_losses(same, training=False)
    words, sentences, regions, image_global = trainer(same, training=False)
    expected_word = sum(
        damsm_word_loss(regions, words, same["caption_length"], same["class_id"], 4.0, 5.0, 10.0)
    )
    expected_sentence = sum(damsm_sentence_loss(image_global, sentences, same["class_id"], 10.0))
    np.testing.assert_allclose(word, expected_word, rtol=1e-5)
    np.testing.assert_allclose(sentence, expected_sentence, rtol=1e-5)
    unmasked_word, unmasked_sentence, _, _ = trainer.damsm_losses(distinct, training=False)
    assert abs(float(word) - float(unmasked_word)) > 1e-4
    assert abs(float(sentence) - float(unmasked_sentence)) > 1e-4


def test_train_step_traces_in_tf_function_and_uses_the_largest_stage():
    trainer = make_trainer()
    trainer.compile(optimizer=damsm_optimizer(steps_per_epoch=2))
    batch = make_batch(batch=3)
    small = batch["images"][0]
    # Three stages: the encoder must see the last (here 64x64), not the 16x16 first one.
    batch["images"] = (small[:, ::4, ::4], small[:, ::2, ::2], small)
    step = tf.function(trainer.train_step)
    logs = step(batch)
    logs = step(batch)
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert int(trainer.optimizer.iterations) == 2
    _, _, regions, _ = trainer(batch, training=False)
    assert regions.shape[1:3] == (8, 8)  # 64 / 8: the small trunk's region grid


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        trainer = make_trainer()
        trainer.compile(optimizer=damsm_optimizer(steps_per_epoch=2))
        if policy == "mixed_float16":
            assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
        history = trainer.fit(
            tf.data.Dataset.from_tensors(make_batch()).repeat(2), epochs=1, verbose=0
        )
        assert np.isfinite(history.history["loss"][0])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_optimizer_and_schedule():
    optimizer = damsm_optimizer(learning_rate=2e-3, steps_per_epoch=10)
    assert optimizer.beta_1 == 0.5 and optimizer.beta_2 == 0.999
    schedule = optimizer._learning_rate
    assert isinstance(schedule, DAMSMLearningRate)
    assert float(schedule(0)) == pytest.approx(2e-3)
    assert float(schedule(9)) == pytest.approx(2e-3)
    assert float(schedule(10)) == pytest.approx(2e-3 * 0.98)
    assert float(schedule(35)) == pytest.approx(2e-3 * 0.98**3)
    # Published: x0.98 while above a tenth of the start -> stops after 114 epochs.
    assert schedule.last_decayed_epoch == 114
    assert float(schedule(10 * 500)) == pytest.approx(2e-3 * 0.98**114, rel=1e-5)
    assert 2e-4 * 0.98 < float(schedule(10 * 500)) <= 2e-4
    plain = DAMSMLearningRate(2e-3, 10, min_ratio=None)
    reference = keras.optimizers.schedules.ExponentialDecay(2e-3, 10, 0.98, staircase=True)
    for step in (0, 15, 2000):
        assert float(plain(step)) == pytest.approx(float(reference(step)), rel=1e-5)
    restored = DAMSMLearningRate.from_config(schedule.get_config())
    assert float(restored(1234)) == pytest.approx(float(schedule(1234)))


def test_batch_retrieval_accuracy():
    image = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = tf.constant([[2.0, 0.1], [0.1, 3.0], [-1.0, 0.0]])
    # Image 2 is closest to... caption 0 or 1 (cos 0.74), not its own (cos -0.71): 2 of 3.
    assert float(batch_retrieval_accuracy(image, text)) == pytest.approx(2 / 3)


def test_config_and_save_round_trip(tmp_path):
    trainer = make_trainer(gamma1=5.0, rnn_grad_clip=0.5)
    restored = DAMSMTrainer.from_config(trainer.get_config())
    assert (restored.gamma1, restored.gamma2, restored.gamma3) == (5.0, 5.0, 10.0)
    assert restored.rnn_grad_clip == 0.5
    assert restored.text_encoder.get_config()["nef"] == 8
    assert restored.image_encoder.backbone == "small"

    # A saved trainer resumes: weights, optimizer schedule and state come back.
    trainer.compile(optimizer=damsm_optimizer(steps_per_epoch=3))
    batch = make_batch()
    trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    trainer.save(tmp_path / "damsm.keras")
    loaded = keras.saving.load_model(tmp_path / "damsm.keras")
    assert int(loaded.optimizer.iterations) == 1
    assert isinstance(loaded.optimizer._learning_rate, DAMSMLearningRate)
    for a, b in zip(trainer(batch, training=False), loaded(batch, training=False), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
