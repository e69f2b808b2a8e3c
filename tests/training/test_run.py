"""Training runs: the chain on the built-in data, resume after SIGKILL, non-finite losses."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from mirrorgan_tf.training import run
from mirrorgan_tf.training.callbacks import NonFiniteLossError, StopOnNonFiniteLoss
from mirrorgan_tf.training.checkpoints import latest_checkpoint
from tests.training.conftest import TINY

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    stem = run.pretrain_stem("shapes", "shapes", str(root / "stem"), steps=2, batch_size=4,
                             checkpoint_every=2, verbose=0, **TINY)
    stream = run.pretrain_stream("shapes", "shapes", str(root / "stream"), steps=2,
                                 batch_size=4, checkpoint_every=2, verbose=0, **TINY)
    return root, stem, stream


def test_the_chain_writes_checkpoints_model_losses_and_samples(pretrained):
    root, stem, stream = pretrained
    out = run.train("shapes", "shapes", str(root / "gan"), stem=stem, stream=stream, steps=4,
                    batch_size=4, checkpoint_every=2, sample_every=4, verbose=0, **TINY)
    assert os.path.basename(latest_checkpoint(os.path.join(out, "checkpoints"))) == "step-00000004"
    model = os.path.join(out, "model")
    for name in ("text_encoder", "generator", "captioner", "discriminator_64",
                 "discriminator_128"):
        assert os.path.exists(os.path.join(model, f"{name}.weights.h5")), name
    with open(os.path.join(model, "metadata.json")) as f:
        assert json.load(f)["step"] == 4
    with open(os.path.join(out, "losses.csv")) as f:
        rows = f.read().strip().splitlines()
    assert rows[0].startswith("epoch") and "g_loss" in rows[0] and len(rows) == 3
    assert os.listdir(os.path.join(out, "samples")) == ["step-00000004.png"]
    # The run's model generates through the task API; a second call resumes, finds it done.
    from mirrorgan_tf.task import TextToImage

    images = TextToImage.from_preset(out).generate(["a red circle"], seed=3)
    assert images.shape == (1, 128, 128, 3) and images.dtype == np.uint8
    run.train("shapes", "shapes", out, stem=stem, stream=stream, steps=4, batch_size=4,
              checkpoint_every=2, verbose=0, **TINY)
    with open(os.path.join(out, "losses.csv")) as f:
        assert len(f.read().strip().splitlines()) == 3  # nothing trained again


def test_init_grows_a_one_stage_run_and_can_leave_the_discriminators_fresh(pretrained):
    root, stem, stream = pretrained
    small = run.train("shapes", "shapes", str(root / "gan_64"), stem=stem, stream=stream,
                      steps=2, batch_size=4, checkpoint_every=2, verbose=0,
                      **{**TINY, "num_stages": 1})
    # Learning rate 0: whatever the grown run saves is what it started from. Another seed:
    # a fresh generator would start from other weights.
    frozen = {"g_learning_rate": 0.0, "d_learning_rate": 0.0}
    grown = run.train("shapes", "shapes", str(root / "grown"), stem=stem, stream=stream,
                      init=small, steps=1, batch_size=4, checkpoint_every=1, verbose=0, seed=1,
                      **{**TINY, "training": frozen})
    from mirrorgan_tf import presets

    before = presets.from_preset(os.path.join(small, "model"))
    after = presets.from_preset(os.path.join(grown, "model"))
    assert after["generator"].num_stages == 2
    for name in ("ca_net", "stage1_fc"):
        for a, b in zip(getattr(before["generator"], name).trainable_weights,
                        getattr(after["generator"], name).trainable_weights, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    for a, b in zip(before["discriminator_64"].trainable_weights,
                    after["discriminator_64"].trainable_weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    # With fresh_discriminators, the generator starts from `init` and the discriminator
    # does not (the seed differs, so a fresh one has other weights).
    polished = run.train("shapes", "shapes", str(root / "polish"), stem=stem, stream=stream,
                         init=small, fresh_discriminators=True, steps=1, batch_size=4,
                         checkpoint_every=1, verbose=0, seed=1,
                         **{**TINY, "num_stages": 1, "training": frozen})
    after = presets.from_preset(os.path.join(polished, "model"))
    for a, b in zip(before["generator"].trainable_weights, after["generator"].trainable_weights,
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert not np.allclose(before["discriminator_64"].trainable_weights[0],
                           after["discriminator_64"].trainable_weights[0])
    # A generator of the other image-head architecture is refused, not loaded.
    with pytest.raises(ValueError, match="residual_images"):
        run.train("shapes", "shapes", str(root / "other"), stem=stem, stream=stream,
                  init=small, steps=1, batch_size=4, verbose=0,
                  **{**TINY, "residual_images": False})


def test_train_needs_pretrained_stem_and_stream(tmp_path):
    with pytest.raises(ValueError, match="pretrained STEM and STREAM"):
        run.train("shapes", "shapes", str(tmp_path / "gan"), steps=1, **TINY)


def test_a_run_folder_cannot_be_resumed_as_another_kind(pretrained):
    _, stem, _ = pretrained
    with pytest.raises(ValueError, match="cannot be resumed"):
        run.pretrain_stream("shapes", "shapes", stem, steps=2, verbose=0, **TINY)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
    out = str(tmp_path / "stream")
    # A NaN learning rate poisons the weights at the first update: step 1 still has a finite
    # loss (checkpointed), step 2 does not.
    with pytest.raises(NonFiniteLossError, match="last good checkpoint") as error:
        run.pretrain_stream("shapes", "shapes", out, steps=3, batch_size=4,
                            checkpoint_every=1, verbose=0,
                            training={"stream_learning_rate": float("nan")}, **TINY)
    last = latest_checkpoint(os.path.join(out, "checkpoints"))
    assert os.path.basename(last) == "step-00000001"
    assert "step-00000001" in str(error.value)


def test_stop_on_non_finite_loss_callback(tmp_path):
    callback = StopOnNonFiniteLoss(str(tmp_path))
    callback.on_train_batch_end(0, {"loss": 1.0})
    with pytest.raises(NonFiniteLossError, match="`g_loss` became inf"):
        callback.on_train_batch_end(3, {"loss": 1.0, "g_loss": float("inf")})


_SCRIPT = textwrap.dedent(
    """
    import sys
    from mirrorgan_tf.training.run import pretrain_stream
    from tests.training.conftest import TINY
    pretrain_stream("shapes", "shapes", sys.argv[1], steps=int(sys.argv[2]), batch_size=4,
                    checkpoint_every=1, verbose=0, seed=5, **TINY)
    """
)


def test_resume_after_sigkill_continues_the_step_count_and_optimizer_state(tmp_path):
    out = str(tmp_path / "stream")
    env = {**os.environ, "PYTHONPATH": REPO}
    process = subprocess.Popen([sys.executable, "-c", _SCRIPT, out, "1000"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = os.path.join(out, "checkpoints")
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            last = latest_checkpoint(checkpoints)
            if last is not None and int(last.rsplit("-", 1)[1]) >= 3:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 300 s")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_at = int(latest_checkpoint(checkpoints).rsplit("-", 1)[1])
    total = killed_at + 2
    result = subprocess.run([sys.executable, "-c", _SCRIPT, out, str(total)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"step {killed_at}" in result.stdout or f"step {killed_at + 0}" in result.stdout
    last = latest_checkpoint(checkpoints)
    assert os.path.basename(last) == f"step-{total:08d}"
    # The optimizer's iteration count went on from the checkpoint: it equals the step count.
    with np.load(os.path.join(last, "optimizer.npz")) as arrays:
        iterations = int(arrays[sorted(arrays.files)[0]])
    assert iterations == total


def test_stream_trunk_starts_from_the_stem_runs_image_encoder(pretrained):
    from mirrorgan_tf import presets

    _, stem, _ = pretrained
    vocab_size = presets.from_preset(os.path.join(stem, "model"))["config"]["vocab_size"]
    config = presets.get_config("shapes", vocab_size=vocab_size, **TINY)
    captioner = presets.build_component("captioner", config)
    encoder = presets.from_preset(os.path.join(stem, "model"), components=["image_encoder"])
    expected = encoder["image_encoder"].trunk.get_weights()
    assert not all(np.array_equal(a, b) for a, b in
                   zip(captioner.encoder.resnet.get_weights(), expected, strict=True))
    run._start_trunk_from(captioner, stem, config)
    for a, b in zip(captioner.encoder.resnet.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="'small' backbone"):
        run._start_trunk_from(captioner, stem, {**config, "captioner_backbone": "resnet152"})


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The data each `run._batches` call opens, in order (the run trains as usual)."""
    names = []
    batches = run._batches

    def recording(data, *args, **kwargs):
        names.append(data)
        return batches(data, *args, **kwargs)

    monkeypatch.setattr(run, "_batches", recording)
    return names


def test_curriculum_moves_through_levels_and_resumes_in_the_level_of_its_checkpoint(
    pretrained, opened
):
    import csv

    root, stem, stream = pretrained
    out = str(root / "curriculum")
    kwargs = dict(stem=stem, stream=stream, steps=4, batch_size=4, checkpoint_every=2,
                  sample_every=4, curriculum="easy:2,medium", eval_every=2, eval_captions=4,
                  verbose=0, **TINY)
    run.train("shapes", "shapes", out, **kwargs)
    assert opened == ["shapes:easy", "shapes:medium"]
    with open(os.path.join(out, "learning_curve.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["images_seen"], r["train_level"]) for r in rows] == [
        ("2", "8", "easy"), ("4", "16", "medium")]
    assert all(0 <= float(r[a]) <= 1 for r in rows for a in ("colour", "shape", "size",
                                                             "position"))
    # Scored by scene kind too: `medium` has one-shape scenes only.
    assert all(float(r["one_shape_shape"]) == float(r["shape"]) for r in rows)
    assert "two_shapes_shape" not in rows[0]
    assert os.path.getsize(os.path.join(out, "learning_curve.png")) > 0
    # Back to the checkpoint at the level change: the resumed run opens only the second
    # level, and its evaluation replaces the step-4 row instead of adding one.
    checkpoints = os.path.join(out, "checkpoints")
    shutil.rmtree(os.path.join(checkpoints, "step-00000004"))
    with open(os.path.join(checkpoints, "latest"), "w") as f:
        f.write("step-00000002")
    opened.clear()
    run.train("shapes", "shapes", out, **kwargs)
    assert opened == ["shapes:medium"]
    with open(os.path.join(out, "learning_curve.csv")) as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["2", "4"]
    # Another curriculum is another run.
    with pytest.raises(ValueError, match="cannot be resumed"):
        run.train("shapes", "shapes", out, **{**kwargs, "curriculum": "easy:2,full"})


def test_curriculum_and_eval_need_the_built_in_data(pretrained, tmp_path):
    _, stem, stream = pretrained
    (tmp_path / "birds").mkdir()
    (tmp_path / "birds" / "captions.pickle").write_bytes(b"")  # what names the AttnGAN layout
    with pytest.raises(ValueError, match="built-in data"):
        run.train("shapes", str(tmp_path / "birds"), str(tmp_path / "gan"), stem=stem,
                  stream=stream, steps=2, eval_every=1, verbose=0, **TINY)
    for pretrain in (run.pretrain_stem, run.pretrain_stream):
        with pytest.raises(ValueError, match="`curriculum` needs the built-in data"):
            pretrain("shapes", str(tmp_path / "birds"), str(tmp_path / "pre"), steps=2,
                     curriculum="easy:1,full", verbose=0, **TINY)
    assert not (tmp_path / "pre").exists()  # refused before a run folder was written


def test_stem_learns_the_cell_code_from_the_built_in_scenes_only(tmp_path):
    cell_code = {**TINY, "nef": 144, "training": {"damsm_cell_code_weight": 2.0}}
    stem = run.pretrain_stem("shapes", "shapes", str(tmp_path / "stem"), steps=2, batch_size=4,
                             checkpoint_every=2, verbose=0, **cell_code)
    with open(os.path.join(stem, "losses.csv"), encoding="utf-8") as f:
        assert "cell_code_loss" in f.readline().split(",")
    (tmp_path / "birds").mkdir()
    (tmp_path / "birds" / "captions.pickle").write_bytes(b"")
    with pytest.raises(ValueError, match="`training.damsm_cell_code_weight` needs the built-in"):
        run.pretrain_stem("shapes", str(tmp_path / "birds"), str(tmp_path / "pre"), steps=2,
                          verbose=0, **cell_code)
    assert not (tmp_path / "pre").exists()
    with pytest.raises(ValueError, match="144 sentence dimensions; STEM has nef 16"):
        run.pretrain_stem("shapes", "shapes", str(tmp_path / "narrow"), steps=2, batch_size=4,
                          verbose=0, **{**cell_code, "nef": 16})


@pytest.mark.parametrize("kind", ["stem", "stream"])
def test_pretraining_moves_through_curriculum_levels(kind, tmp_path, opened):
    pretrain = {"stem": run.pretrain_stem, "stream": run.pretrain_stream}[kind]
    out = str(tmp_path / kind)
    kwargs = dict(steps=4, batch_size=4, checkpoint_every=2, curriculum="easy:2,full",
                  verbose=0, **TINY)
    pretrain("shapes", "shapes", out, **kwargs)
    assert opened == ["shapes:easy", "shapes:full"]
    with open(os.path.join(out, "run.json")) as f:
        assert json.load(f)["curriculum"] == "easy:2,full"
    # Another curriculum is another run.
    with pytest.raises(ValueError, match="cannot be resumed"):
        pretrain("shapes", "shapes", out, **{**kwargs, "curriculum": "medium:2,full"})


def test_learning_curve_callback_keeps_one_row_per_step(tmp_path):
    from mirrorgan_tf.training.callbacks import LearningCurve

    scores = iter([0.1, 0.2, 0.3, 0.4])
    curve = LearningCurve(lambda: {"colour": next(scores), "shape": 0.2, "size": 0.5,
                                   "position": 0.3},
                          every=2, steps_per_epoch=3, batch_size=8,
                          csv_path=str(tmp_path / "c.csv"), png_path=str(tmp_path / "c.png"),
                          train_level=lambda step: "easy" if step <= 3 else "full",
                          tensorboard_dir=str(tmp_path / "tb"))
    for epoch in range(2):
        curve.on_epoch_begin(epoch)
        for batch in range(3):
            curve.on_train_batch_end(batch)
    rows = curve.rows()
    assert [(r["step"], r["images_seen"], r["train_level"], r["colour"]) for r in rows] == [
        ("2", "16", "easy", "0.1"), ("4", "32", "full", "0.2"), ("6", "48", "full", "0.3")]
    curve.record(4)  # a resumed run evaluating step 4 again replaces it and what followed
    assert [(r["step"], r["colour"]) for r in curve.rows()] == [("2", "0.1"), ("4", "0.4")]
    with pytest.raises(ValueError, match="positive"):
        LearningCurve(dict, 0, 1, 1, "a.csv", "a.png")


def test_jit_compiled_training_runs_on_the_shapes_preset(pretrained):
    # The small trunks resize from 64 px to 64 px and 128 px to 64 px: neither may need the
    # antialiased resize kernel, which XLA does not have.
    root, stem, stream = pretrained
    out = run.train("shapes", "shapes", str(root / "jit"), stem=stem, stream=stream, steps=1,
                    batch_size=4, checkpoint_every=1, sample_every=1, jit_compile=True,
                    verbose=0, **TINY)
    assert latest_checkpoint(os.path.join(out, "checkpoints")) is not None


def test_cpu_flags_reads_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\nbugs\t: x\n")
    assert run.cpu_flags(str(cpuinfo)) == frozenset({"fpu", "avx2", "avx512_bf16"})
    assert run.cpu_flags(str(tmp_path / "missing")) is None
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # aarch64
    assert "bf16" in run.cpu_flags(str(cpuinfo))


def test_bfloat16_warns_only_where_the_cpu_emulates_it(monkeypatch):
    monkeypatch.setattr(run.tf.config, "list_physical_devices", lambda kind=None: [])
    assert run.bfloat16_is_emulated(frozenset({"avx2", "fma"}))
    assert not run.bfloat16_is_emulated(frozenset({"avx2", "avx512_bf16"}))
    assert not run.bfloat16_is_emulated(frozenset({"amx_bf16"}))
    try:
        monkeypatch.setattr(run, "cpu_flags", lambda: frozenset({"avx2"}))
        with pytest.warns(UserWarning, match="without bfloat16 instructions"):
            run._set_precision("bfloat16")
        monkeypatch.setattr(run, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            run._set_precision("bfloat16")
            run._set_precision("float32")  # float32 never warns
    finally:
        run._set_precision(None)


def test_word_group_ids_resolve_the_shape_words_and_refuse_unknown_ones():
    from mirrorgan_tf.data.shapes import SHAPE_WORD_GROUPS, shapes_vocabulary

    vocabulary = shapes_vocabulary()
    ids = run.word_group_ids("shapes", vocabulary)
    assert [[vocabulary.id_to_word(i) for i in g] for g in ids] == [
        list(g) for g in SHAPE_WORD_GROUPS
    ]
    assert [vocabulary.id_to_word(g[0]) for g in ids] == [
        "circle", "square", "triangle", "diamond", "star"
    ]
    assert run.word_group_ids(None, vocabulary) is None
    with pytest.raises(ValueError, match="not in the vocabulary"):
        run.word_group_ids([["circle"], ["hexagon"]], vocabulary)
    with pytest.raises(ValueError, match="word groups"):
        run.word_group_ids("birds", vocabulary)
