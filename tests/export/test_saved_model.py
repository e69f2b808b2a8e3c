"""Tests for mirrorgan_tf/export/saved_model.py.

The proof test exports a tiny random-weight model, loads it in a fresh Python process that
imports neither mirrorgan_tf nor tensorflow_text (the stand-in for the TF Serving binary, see
platform-notes.md), calls every signature there and compares the outputs with the Keras model.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from mirrorgan_tf import presets
from mirrorgan_tf.data.tokenizer import Tokenizer
from mirrorgan_tf.export.saved_model import (
    export_saved_model,
    graph_op_types,
    safe_token_ids,
    signature_names,
    uint8_images,
    write_models_config,
)
from mirrorgan_tf.task import TextToImage, default_vocabulary, noise_for_seeds, to_uint8

TINY = dict(
    gf_dim=4,
    df_dim=4,
    nef=16,
    embedding_dim=16,
    z_dim=8,
    condition_dim=8,
    captioner_embed_dim=16,
    captioner_hidden_dim=16,
    num_stages=2,
    r_num=1,
    caption_max_length=6,
)

# Bad input that must still give images: empty, punctuation only, unknown words, very long,
# invalid UTF-8, NUL, plus ordinary captions.
CAPTIONS = [
    b"a small red circle at the top left",
    b"",
    b"?!... --- ,,,",
    b"zzzunknown qqqwords xyzzy",
    b"x" * 10_000,
    ("large blue square " * 600).encode(),
    b"\xff\xfe red \xc3\x28 circle \x80",
    b"a\x00b green triangle",
]
SEEDS = [0, 1, 2, 3, 4, 5, 2**31 - 1, 7]


def tiny_model(with_captioner: bool = True, **overrides) -> TextToImage:
    """A tiny random-weight `TextToImage` (shapes vocabulary, 2 stages: 64 and 128 pixels)."""
    config = presets.get_config("shapes", **{**TINY, **overrides})
    names = ["text_encoder", "generator"] + (["captioner"] if with_captioner else [])
    parts = {name: presets.build_component(name, config) for name in names}
    # The shapes preset's refinement heads start at zero (residual images): give them weights
    # so that the exports are compared on every stage's computation, not on an identity.
    for head in parts["generator"].image_heads[1:]:
        head.kernel.assign(keras.random.normal(head.kernel.shape, stddev=0.05))
    tokenizer = Tokenizer(default_vocabulary(config), config["words_num"])
    return TextToImage(
        config,
        tokenizer,
        parts["text_encoder"],
        parts["generator"],
        parts.get("captioner"),
    )


def save_tiny_preset(model: TextToImage, tmp_path) -> str:
    """Writes `model`'s text encoder and generator as a preset folder under `tmp_path`."""
    vocabulary = tmp_path / "vocab.txt"
    model.tokenizer.vocabulary.save(vocabulary)
    return presets.save_to_preset(
        str(tmp_path / "preset"),
        model.config,
        {"text_encoder": model.text_encoder, "generator": model.generator},
        vocabulary_path=str(vocabulary),
    )


def keras_from_tokens(model: TextToImage, token_ids, noise) -> dict:
    """The Keras generator's output for token ids and noise: what `generate_from_tokens` serves."""
    words, sentence = model.text_encoder(token_ids, training=False)
    return model.generator(
        noise, sentence, words, tf.not_equal(token_ids, 0), training=False, deterministic=True
    )


def run_loader(script: str, path: str, inputs: str, out: str, cwd: str) -> tuple[dict, str]:
    """Runs a loader script as `python -c script path inputs out`; returns its saved arrays."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run(
        [sys.executable, "-c", script, path, inputs, out],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return dict(np.load(out)), run.stdout


def non_core_ops(path) -> list[str]:
    """The op types of a SavedModel that are not core TensorFlow ops (raw_ops lists only those)."""
    registered = set(tf.raw_ops.__dict__)
    return sorted(op for op in graph_op_types(path) if op not in registered)


# Runs in a fresh interpreter: plain TensorFlow only, like the TF Serving binary.
LOADER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    path, inputs, out = sys.argv[1:4]
    data = np.load(inputs)
    loaded = tf.saved_model.load(path)
    sigs = loaded.signatures
    results = {}
    captions = tf.constant(data["captions"].tolist(), tf.string)
    seeds = tf.constant(data["seeds"], tf.int32)
    for key, value in sigs["generate"](captions=captions, seed=seeds).items():
        results["serving/" + key] = value.numpy()
    # serving_default takes captions alone and draws fresh noise: two calls differ.
    one = tf.constant([b"a red circle"])
    for call in ("a", "b"):
        results["default_" + call] = sigs["serving_default"](captions=one)["images"].numpy()
    # generate: fresh noise for negative seeds too.
    for call in ("a", "b"):
        results["random_" + call] = sigs["generate"](
            captions=one, seed=tf.constant([-1]))["images"].numpy()
    # One seed for the whole batch is broadcast.
    results["broadcast"] = sigs["generate"](
        captions=tf.constant([b"a red circle", b"a red circle"]), seed=tf.constant([3])
    )["images"].numpy()
    empty = sigs["generate"](
        captions=tf.constant([], tf.string), seed=tf.constant([], tf.int32))
    for key, value in empty.items():
        results["empty/" + key] = value.numpy()
    for key, value in sigs["serving_default"](captions=tf.constant([], tf.string)).items():
        results["empty_default/" + key] = value.numpy()
    tokens = sigs["generate_from_tokens"](
        token_ids=tf.constant(data["token_ids"]), noise=tf.constant(data["noise"]))
    for key, value in tokens.items():
        results["tokens/" + key] = value.numpy()
    empty_tokens = sigs["generate_from_tokens"](
        token_ids=tf.zeros([0, 5], tf.int32), noise=tf.zeros([0, data["noise"].shape[1]]))
    for key, value in empty_tokens.items():
        results["empty_tokens/" + key] = value.numpy()
    captioned = sigs["caption"](images=tf.constant(results["serving/images"]))["captions"]
    size = results["serving/images"].shape[1]
    empty_caption = sigs["caption"](images=tf.zeros([0, size, size, 3], tf.uint8))["captions"]
    results["empty_caption"] = np.array(empty_caption.numpy().tolist(), dtype=bytes)
    assert "mirrorgan_tf" not in sys.modules, "the loader imported mirrorgan_tf"
    assert not any(m.startswith("tensorflow_text") for m in sys.modules), "tensorflow_text"
    results["captions_bytes"] = np.array(
        [c.decode("utf-8") for c in captioned.numpy().tolist()], dtype=np.str_)
    np.savez(out, **results)
    print("LOADER OK", sorted(sigs))
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exports the tiny model once; runs the fresh-process loader and saved_model_cli."""
    tf.keras.utils.set_random_seed(1)
    model = tiny_model()
    base = tmp_path_factory.mktemp("serving")
    path = export_saved_model(model, base, name="mirrorgan", version=3)
    token_ids, _ = model.tokenizer(tf.constant(CAPTIONS[:3]))
    token_ids = token_ids.numpy()
    token_ids[2, 4] = 10_000  # out of the vocabulary: maps to <unk>
    noise = np.random.default_rng(0).normal(size=[3, model.config["z_dim"]]).astype("float32")
    inputs = os.path.join(base, "inputs.npz")
    np.savez(
        inputs,
        captions=np.array(CAPTIONS, dtype=object).astype(bytes),
        seeds=np.array(SEEDS, np.int32),
        token_ids=token_ids,
        noise=noise,
    )
    out = os.path.join(base, "outputs.npz")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    show = subprocess.Popen(
        [cli, "show", "--dir", path, "--all"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    results, stdout = run_loader(LOADER, path, inputs, out, str(base))
    show_output, _ = show.communicate(timeout=600)
    assert "LOADER OK" in stdout
    return {
        "model": model,
        "path": path,
        "base": str(base),
        "results": results,
        "token_ids": token_ids,
        "noise": noise,
        "cli": show_output,
        "cli_rc": show.returncode,
    }


def test_layout_and_models_config(exported):
    path = exported["path"]
    assert path == os.path.join(exported["base"], "mirrorgan", "3")
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    assert os.path.exists(os.path.join(path, "variables", "variables.index"))
    with open(os.path.join(path, "assets", "vocabulary.txt"), encoding="utf-8") as f:
        assert f.read().split("\n")[:-1] == exported["model"].tokenizer.vocabulary.words
    with open(os.path.join(exported["base"], "models.config"), encoding="utf-8") as f:
        config = f.read()
    assert 'name: "mirrorgan"' in config and 'base_path: "/models/mirrorgan"' in config
    assert signature_names(path) == [
        "caption", "generate", "generate_from_tokens", "serving_default"
    ]
    # No temporary folder left behind: TF Serving sees only the version folder.
    assert os.listdir(os.path.dirname(path)) == ["3"]
    # Every weight is stored once (the moving-average generator the model holds).
    model = exported["model"]
    stored = sum(
        int(np.prod(shape))
        for key, shape in tf.train.list_variables(os.path.join(path, "variables", "variables"))
        if key != "_CHECKPOINTABLE_OBJECT_GRAPH"
    )
    parts = (model.text_encoder, model.generator, model.captioner)
    assert stored == sum(int(np.prod(v.shape)) for m in parts for v in m.weights)


def test_graph_has_only_core_ops(exported):
    ops = graph_op_types(exported["path"])
    assert "StringSplitV2" in ops and "LookupTableFindV2" in ops
    # Every op is a core TensorFlow op (no TFText>... ops).
    assert not non_core_ops(exported["path"])


def test_saved_model_cli_lists_signatures(exported):
    text = exported["cli"]
    assert exported["cli_rc"] == 0, text[-3000:]
    for name in ("serving_default", "generate", "generate_from_tokens", "caption"):
        assert f"signature_def['{name}']" in text
    for dtype in ("DT_STRING", "DT_INT32", "DT_UINT8", "DT_FLOAT"):
        assert dtype in text
    assert "inputs['captions']" in text and "inputs['seed']" in text
    # serving_default's only input is the captions.
    default = text.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['captions']" in default and "inputs['seed']" not in default
    assert "outputs['images_64']" in text and "outputs['attention_128']" in text
    assert "Concrete Functions: N/A" not in text


def test_generate_matches_keras(exported):
    model, results = exported["model"], exported["results"]
    z_dim = model.config["z_dim"]
    expected = model.generate(
        CAPTIONS, noise=noise_for_seeds(SEEDS, z_dim), return_attention=True
    )
    images = results["serving/images"]
    assert images.dtype == np.uint8 and images.shape == (len(CAPTIONS), 128, 128, 3)
    assert results["serving/images_64"].shape == (len(CAPTIONS), 64, 64, 3)
    assert sorted(k for k in results if k.startswith("serving/")) == [
        "serving/images", "serving/images_64"
    ]
    for got, want in ((images, expected["images"][-1]),
                      (results["serving/images_64"], expected["images"][0])):
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    # A (caption, seed) pair gives TextToImage.generate(caption, seed=seed), batch or not.
    single = model.generate(CAPTIONS[0], seed=SEEDS[0])
    assert np.abs(single[0].astype(int) - images[0].astype(int)).max() <= 1
    # Different captions or seeds give different images (random tiny weights: low contrast).
    assert not np.array_equal(images[0], images[1])


def test_serving_default_takes_captions_alone(exported):
    results = exported["results"]
    assert results["default_a"].shape == (1, 128, 128, 3)
    assert results["default_a"].dtype == np.uint8
    assert not np.array_equal(results["default_a"], results["default_b"])
    assert results["empty_default/images"].shape == (0, 128, 128, 3)
    assert results["empty_default/images_64"].shape == (0, 64, 64, 3)


def test_generate_seed_handling(exported):
    results = exported["results"]
    assert results["random_a"].shape == (1, 128, 128, 3)
    assert not np.array_equal(results["random_a"], results["random_b"])
    broadcast = results["broadcast"]
    assert np.array_equal(broadcast[0], broadcast[1])
    want = exported["model"].generate("a red circle", seed=3)[0]
    assert np.abs(broadcast[0].astype(int) - want.astype(int)).max() <= 1


def test_empty_batches(exported):
    results = exported["results"]
    assert results["empty/images"].shape == (0, 128, 128, 3)
    assert results["empty/images"].dtype == np.uint8
    assert results["empty/images_64"].shape == (0, 64, 64, 3)
    assert results["empty_tokens/images_128"].shape == (0, 128, 128, 3)
    # Attention of the 128 stage lives on its 64x64 input features.
    assert results["empty_tokens/attention_128"].shape == (0, 64, 64, 5)
    assert results["empty_caption"].shape == (0,)


def test_generate_from_tokens_matches_keras(exported):
    model, results = exported["model"], exported["results"]
    token_ids = safe_token_ids(exported["token_ids"], model.tokenizer.vocab_size, 1)
    assert int(token_ids[2, 4]) == model.tokenizer.oov_id
    out = keras_from_tokens(model, token_ids, exported["noise"])
    for size, image in zip((64, 128), out["images"], strict=True):
        got = results[f"tokens/images_{size}"]
        assert got.dtype == np.float32 and got.shape == tuple(image.shape)
        assert np.abs(got - image.numpy()).max() <= 1e-5
        assert np.abs(got).max() <= 1.0
    attention = results["tokens/attention_128"]
    assert attention.shape == (3, 64, 64, model.tokenizer.max_length)
    assert np.abs(results["tokens/images_128"]).std() > 1e-3
    assert np.abs(attention - out["attention"][0].numpy()).max() <= 1e-5


def test_caption_matches_keras(exported):
    model, results = exported["model"], exported["results"]
    got = results["captions_bytes"].tolist()
    want = model.caption(results["serving/images"])
    assert got == want
    assert len(got) == len(CAPTIONS)


def test_export_refuses_to_overwrite_and_validates(exported, tmp_path):
    with pytest.raises(FileExistsError):
        export_saved_model(exported["model"], exported["base"], name="mirrorgan", version=3)
    with pytest.raises(ValueError, match="version"):
        export_saved_model(exported["model"], tmp_path, version=0)
    with pytest.raises(ValueError, match="name"):
        export_saved_model(exported["model"], tmp_path, name="a/b")


def test_without_captioner_has_three_signatures(tmp_path):
    model = tiny_model(with_captioner=False, num_stages=1)
    path = export_saved_model(model, tmp_path, name="m")
    assert signature_names(path) == ["generate", "generate_from_tokens", "serving_default"]
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["generate"](
        captions=tf.constant(["a red circle", ""]), seed=tf.constant([5, 6])
    )
    assert sorted(out) == ["images"]  # one stage: no lower-stage outputs
    want = model.generate(["a red circle", ""], noise=noise_for_seeds([5, 6], 8))
    assert np.abs(out["images"].numpy().astype(int) - want.astype(int)).max() <= 1


def test_saved_model_cli_runs_both_generation_signatures(exported, tmp_path):
    """`saved_model_cli run` (plain TensorFlow's own tool) with captions alone, and seeded."""
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    written = {}
    for signature, exprs in (("serving_default", "captions=['a red circle', 'a blue star']"),
                             ("generate", "captions=['a red circle'];seed=[3]")):
        outdir = tmp_path / signature
        run = subprocess.run(
            [cli, "run", "--dir", exported["path"], "--tag_set", "serve", "--signature_def",
             signature, "--input_exprs", exprs, "--outdir", str(outdir)],
            capture_output=True, text=True, env=env, timeout=600,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        written[signature] = np.load(outdir / "images.npy")
    assert written["serving_default"].shape == (2, 128, 128, 3)
    assert written["serving_default"].dtype == np.uint8
    want = exported["model"].generate("a red circle", seed=3)[0]
    assert np.abs(written["generate"][0].astype(int) - want.astype(int)).max() <= 1


def test_uint8_images_matches_to_uint8():
    x = np.linspace(-1.2, 1.2, 10_001, dtype=np.float32)
    np.testing.assert_array_equal(uint8_images(x).numpy(), to_uint8(x))


def test_models_config_extends_an_existing_one(tmp_path):
    write_models_config(str(tmp_path), "first")
    write_models_config(str(tmp_path), "second")
    write_models_config(str(tmp_path), "first")
    with open(tmp_path / "models.config", encoding="utf-8") as f:
        text = f.read()
    assert text.count("config {") == 2
    assert text.count('name: "first"') == 1 and 'base_path: "/models/second"' in text
    assert text.rstrip().endswith("}")


def test_export_function_from_a_preset_folder(tmp_path):
    from mirrorgan_tf.export import export

    model = tiny_model(with_captioner=False, num_stages=1)
    folder = save_tiny_preset(model, tmp_path)
    written = export(folder, tmp_path / "serving" / "tiny", version=2)
    assert written == [
        str(tmp_path / "serving" / "tiny" / "2"), str(tmp_path / "serving" / "models.config")
    ]
    assert signature_names(written[0]) == ["generate", "generate_from_tokens", "serving_default"]
    written = export(folder, tmp_path / "app", format="tflite", quantize="float16")
    assert written == [str(tmp_path / "app" / "mirrorgan_float16.tflite"),
                       str(tmp_path / "app" / "mirrorgan_float16.tflite.json")]
    assert all(os.path.getsize(p) > 0 for p in written)
    with pytest.raises(ValueError, match="format"):
        export(folder, tmp_path / "x", format="onnx")
    with pytest.raises(ValueError, match="TFLite only"):
        export(folder, tmp_path / "x", quantize="float16")


# Runs in a fresh interpreter: the bfloat16 export with plain TensorFlow only.
BFLOAT16_LOADER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    path, inputs, out = sys.argv[1:4]
    data = np.load(inputs)
    sig = tf.saved_model.load(path).signatures["generate_from_tokens"]
    result = sig(token_ids=tf.constant(data["token_ids"]), noise=tf.constant(data["noise"]))
    assert "mirrorgan_tf" not in sys.modules
    np.savez(out, **{key: value.numpy() for key, value in result.items()})
    """
)


def test_bfloat16_export_computes_the_generator_in_bfloat16_close_to_float32(tmp_path):
    from mirrorgan_tf.export import export

    tf.keras.utils.set_random_seed(2)
    model = tiny_model(with_captioner=False)
    folder = save_tiny_preset(model, tmp_path)
    path = export(folder, tmp_path / "serving" / "tiny", precision="bfloat16")[0]
    assert signature_names(path) == ["generate", "generate_from_tokens", "serving_default"]
    assert not non_core_ops(path)

    token_ids = model.tokenizer(tf.constant(CAPTIONS[:3]))[0].numpy()
    noise = np.random.default_rng(1).normal(size=[3, model.config["z_dim"]]).astype("float32")
    inputs, out = str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")
    np.savez(inputs, token_ids=token_ids, noise=noise)
    got, _ = run_loader(BFLOAT16_LOADER, path, inputs, out, str(tmp_path))

    want = keras_from_tokens(model, token_ids, noise)["images"]
    for size, image in zip((64, 128), want, strict=True):
        image = image.numpy()
        assert got[f"images_{size}"].dtype == np.float32
        difference = np.abs(got[f"images_{size}"] - image)
        # bfloat16 keeps 8 significant bits: close to float32, but not float32.
        assert 0 < difference.max() <= 0.05, difference.max()
    with pytest.raises(ValueError, match="precision"):
        export(folder, tmp_path / "x", format="tflite", precision="bfloat16")
    with pytest.raises(ValueError, match="precision"):
        export(folder, tmp_path / "y", precision="float16")
