"""Tests for mirrorgan_tf/evaluation/evaluate.py: streaming evaluation end to end."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mirrorgan_tf import presets
from mirrorgan_tf.data import pipeline
from mirrorgan_tf.data.shapes import ShapesDataset, parse_caption, render
from mirrorgan_tf.evaluation.evaluate import (
    compute_reference_statistics,
    evaluate,
    evaluation_captions,
    format_report,
)
from mirrorgan_tf.evaluation.inception import (
    InceptionClassifier,
    kernel_inception_distance,
    load_statistics,
    save_statistics,
)
from mirrorgan_tf.task import TextToImage
from tests.data.attngan_fixture import make_mini_attngan

TINY = dict(
    gf_dim=4, df_dim=4, nef=16, embedding_dim=16, z_dim=8, condition_dim=8,
    captioner_embed_dim=16, captioner_hidden_dim=16, num_stages=1,
)


def _save_tiny_preset(folder, with_image_encoder=True):
    config = presets.get_config("shapes", **TINY)
    names = ["text_encoder", "generator"] + (["image_encoder"] if with_image_encoder else [])
    components = {name: presets.build_component(name, config) for name in names}
    vocabulary = os.path.join(os.path.dirname(str(folder)), "vocabulary.txt")
    pipeline.vocabulary_of("shapes").save(vocabulary)
    return presets.save_to_preset(str(folder), config, components, vocabulary_path=vocabulary)


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    keras.utils.set_random_seed(0)
    return _save_tiny_preset(tmp_path_factory.mktemp("tiny") / "preset")


@pytest.fixture(scope="module")
def standin_inception():
    """A tiny stand-in for Inception-v3 (same interface, no 299x299 resize): fast tests."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    features = keras.layers.GlobalAveragePooling2D()(x)
    probabilities = keras.layers.Dense(10, activation="softmax")(features)
    return InceptionClassifier(keras.Model(inputs, [features, probabilities]), None, "stand-in")


class _PixelWriter:
    """A stub generator that writes each caption's (scaled) sentence feature into its pixels."""

    def __init__(self, nef, size=64, shuffle=False):
        self.nef, self.size, self.shuffle = nef, size, shuffle

    def __call__(self, noise, sentence, words, word_mask, training=False, deterministic=True):
        sentence = tf.cast(sentence, tf.float32)
        if self.shuffle:  # image i shows the caption of another row
            sentence = tf.roll(sentence, shift=1, axis=0)
        scaled = sentence / tf.reduce_max(tf.abs(sentence), axis=1, keepdims=True)
        batch = tf.shape(sentence)[0]
        row = tf.pad(scaled, [[0, 0], [0, self.size - self.nef]])[:, None, :, None]
        images = tf.pad(row, [[0, 0], [0, self.size - 1], [0, 0], [0, 2]])
        return {"images": [tf.ensure_shape(images, [None, self.size, self.size, 3])],
                "batch": batch}


class _PixelReader(keras.Model):
    """A stub DAMSM image encoder that reads the feature back from the pixels."""

    def __init__(self, nef, **kwargs):
        super().__init__(**kwargs)
        self.nef = nef

    def call(self, images, training=None):
        return images, images[:, 0, : self.nef, 0]


class _RenderingModel(TextToImage):
    """A perfect shapes 'generator': draws the scene each caption asks for."""

    def generate(self, captions, seed=None, return_attention=False, noise=None):
        blank = np.full([self.image_size, self.image_size, 3], 128, np.uint8)
        scenes = [parse_caption(c) for c in captions]
        return np.stack([blank if s is None else render(s, self.image_size) for s in scenes])


def test_end_to_end_with_random_weight_networks(tiny_preset, tmp_path, standin_inception):
    # Every metric, the PNGs and the report: the plumbing, end to end.
    out = str(tmp_path / "report" / "report.json")
    images_dir = str(tmp_path / "images")
    report = evaluate(
        tiny_preset, "shapes", metrics=("is", "fid", "r_precision", "shapes"), num_images=12,
        batch_size=8, seed=3, inception=standin_inception, num_candidates=10, r_precision_runs=3,
        is_splits=2, num_reference_images=4, save_images=images_dir, out=out, verbose=0,
    )
    with open(out, encoding="utf-8") as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(report))
    m = saved["metrics"]
    assert set(m) == {"is", "fid", "r_precision", "shapes"}
    assert 1.0 <= m["is"]["mean"] <= 6.0 and m["is"]["std"] >= 0  # at most 12 / 2 classes
    assert m["fid"]["value"] > 0 and m["fid"]["reference"] == "4 real test images"
    assert 0.0 <= m["r_precision"]["mean"] <= 1.0 and m["r_precision"]["num_candidates"] == 10
    for key in ("colour", "shape", "size", "position", "overall", "count"):
        assert 0.0 <= m["shapes"][key] <= 1.0
    assert m["shapes"]["num_scenes"] + m["shapes"]["unparsed_captions"] == 12
    assert saved["num_images"] == 12 and saved["image_size"] == 64
    assert saved["inception"] == "stand-in"
    # The PNGs are the images `generate(caption, seed)` gives: the evaluated set can be redone.
    pngs = sorted(p for p in os.listdir(images_dir) if p.endswith(".png"))
    assert len(pngs) == 12
    with open(os.path.join(images_dir, "captions.tsv"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    assert [int(r[0]) for r in rows] == list(range(12))
    model = TextToImage.from_preset(tiny_preset, captioner=False)
    index, seed, caption = rows[9]
    expected = model.generate(caption, seed=int(seed))[0]
    np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(images_dir, pngs[9]))),
                                  expected)
    assert "Inception Score" in format_report(report) and "shapes overall" in format_report(report)


@pytest.mark.slow
def test_end_to_end_with_random_inception_v3(tiny_preset, tmp_path):
    # The real Inception-v3 (random weights, no download): 2048-d FID statistics, 1000 classes.
    out = str(tmp_path / "report.json")
    report = evaluate(
        tiny_preset, "shapes", num_images=12, batch_size=8, inception_weights=None,
        num_candidates=10, r_precision_runs=3, is_splits=2, num_reference_images=4, out=out,
        verbose=0,
    )
    m = report["metrics"]
    assert set(m) == {"is", "fid", "kid", "r_precision", "shapes"}  # the default: all, shapes data
    assert 1.0 <= m["is"]["mean"] <= 6.0 and m["fid"]["value"] > 0
    assert report["inception"] == "random" and os.path.exists(out)


def test_same_seed_same_report(tiny_preset, standin_inception):
    kwargs = dict(metrics="is,fid", num_images=12, batch_size=5, inception=standin_inception,
                  is_splits=3, num_reference_images=6, verbose=0)
    first = evaluate(tiny_preset, "shapes", seed=1, **kwargs)["metrics"]
    again = evaluate(tiny_preset, "shapes", seed=1, **kwargs)["metrics"]
    other = evaluate(tiny_preset, "shapes", seed=2, **kwargs)["metrics"]
    assert first == again
    assert first["fid"]["value"] != other["fid"]["value"]


def _stub_model(tiny_preset, shuffle):
    model = TextToImage.from_preset(tiny_preset, captioner=False)
    model.generator = _PixelWriter(model.config["nef"], model.image_size, shuffle)
    return model


def test_r_precision_oracle_and_mismatched_pairs(tiny_preset):
    # Images that carry exactly their caption's sentence feature rank it first: R-precision 1;
    # images carrying another row's feature score near chance (1 / num_candidates).
    reader = _PixelReader(16, name="pixel_reader")
    kwargs = dict(metrics=["r_precision"], num_images=30, batch_size=10, damsm=reader,
                  num_candidates=20, r_precision_runs=5, verbose=0)
    oracle = evaluate(_stub_model(tiny_preset, False), "shapes", **kwargs)
    assert oracle["metrics"]["r_precision"]["mean"] == 1.0
    shuffled = evaluate(_stub_model(tiny_preset, True), "shapes", **kwargs)
    assert shuffled["metrics"]["r_precision"]["mean"] < 0.25


def test_shapes_score_of_a_perfect_generator_is_one(tiny_preset):
    base = TextToImage.from_preset(tiny_preset, captioner=False)
    model = _RenderingModel(base.config, base.tokenizer, base.text_encoder, base.generator)
    # 600 images: more than the 512 test scenes, so the second pass's caption draws count too.
    report = evaluate(model, "shapes", metrics="shapes", num_images=600, batch_size=100,
                      verbose=0)
    scores = report["metrics"]["shapes"]
    assert scores["unparsed_captions"] == 0 and scores["num_scenes"] == 600
    assert scores["overall"] >= 0.97 and scores["count"] >= 0.97


def test_shapes_tally_over_batches_matches_one_score_over_all_and_by_scene():
    from mirrorgan_tf.evaluation.evaluate import _ShapesTally
    from mirrorgan_tf.evaluation.shapes_score import (
        ATTRIBUTES,
        consistency_by_scene,
        consistency_score,
    )

    data = ShapesDataset("test", num_images=30, image_size=64, num_stages=1)
    captions = [data.captions(i)[0] for i in range(30)] + ["not a scene at all"]
    # Every third image is another scene's, so no score is 1.
    images = np.stack([data.image(i + 1 if i % 3 == 0 else i) for i in range(30)]
                      + [data.image(0)])
    tally = _ShapesTally()
    for start, stop in ((0, 11), (11, 31)):
        tally.update(images[start:stop], captions[start:stop])
    got = tally.result()
    specs = [parse_caption(c) for c in captions[:30]]
    want = consistency_score(images[:30], specs)
    assert got["unparsed_captions"] == 1 and got["num_scenes"] == 30
    for key in ("colour", "shape", "size", "position", "overall", "count"):
        assert got[key] == pytest.approx(want[key]), key
    assert 0.0 < want["colour"] < 1.0
    for kind, scores in consistency_by_scene(images[:30], specs).items():
        for key in ("colour", "position", "count", "num_shapes"):
            assert got["by_scene"][kind][key] == pytest.approx(scores[key]), (kind, key)
    report = {"num_images": 31, "metrics": {"shapes": got}}
    text = format_report(report)
    assert "shapes, two-shape scenes" in text and "shapes, one-shape scenes" in text
    two = got["by_scene"]["two_shapes"]
    assert " / ".join(f"{two[a]:.3f}" for a in ATTRIBUTES) in text


def test_captions_follow_the_split_then_cycle(tiny_preset):
    model = TextToImage.from_preset(tiny_preset, captioner=False)
    size = pipeline.num_examples("shapes", "test")
    captions = list(evaluation_captions(
        "shapes", "test", model.tokenizer, model.config, seed=0, num_images=size + 50
    ))
    assert len(captions) == size + 50
    data = ShapesDataset("test", num_images=size, image_size=64, num_stages=1)
    assert captions[:5] == [data.captions(i)[0] for i in range(5)]
    # The same captions as the data pipeline's evaluation order (first caption of each image).
    from_pipeline = pipeline.open_dataset("shapes", "test", model.tokenizer, model.config,
                                          training=False, seed=0).take(5)
    assert captions[:5] == [e["caption"].numpy().decode() for e in from_pipeline]
    # The second pass draws captions of the same images, not only first captions.
    every_caption = {c for i in range(size) for c in data.captions(i)}
    assert set(captions[size:]) <= every_caption
    assert not set(captions[size:]) <= {data.captions(i)[0] for i in range(size)}


def test_reference_statistics_are_those_of_the_real_images(tmp_path, standin_inception):
    path = str(tmp_path / "ref.npz")
    mu, sigma = compute_reference_statistics(
        "shapes", "test", path, num_images=12, batch_size=5, image_size=64,
        inception=standin_inception, verbose=0,
    )
    data = ShapesDataset("test", num_images=12, image_size=64, num_stages=1)
    images = np.stack([data.image(i) for i in range(12)])
    _, features = standin_inception(images)
    np.testing.assert_allclose(mu, features.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-4, atol=1e-8)
    loaded_mu, loaded_sigma = load_statistics(path)
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)


def test_fid_against_saved_reference_statistics(tiny_preset, tmp_path, standin_inception):
    path = str(tmp_path / "ref.npz")
    compute_reference_statistics("shapes", "test", path, num_images=10, image_size=64,
                                 inception=standin_inception, verbose=0)
    kwargs = dict(metrics="fid", num_images=10, batch_size=10, inception=standin_inception,
                  verbose=0)
    from_file = evaluate(tiny_preset, "shapes", reference_stats=path, **kwargs)
    computed = evaluate(tiny_preset, "shapes", num_reference_images=10, **kwargs)
    assert from_file["metrics"]["fid"]["reference"] == path
    assert from_file["metrics"]["fid"]["value"] == pytest.approx(
        computed["metrics"]["fid"]["value"], rel=1e-6
    )


def test_kid_of_the_generated_images_against_the_real_ones(tiny_preset, tmp_path,
                                                          standin_inception):
    images_dir = str(tmp_path / "images")
    kwargs = dict(num_images=10, batch_size=4, seed=2, inception=standin_inception,
                  kid_subsets=3, kid_subset_size=6, verbose=0)
    report = evaluate(tiny_preset, "shapes", metrics="kid", num_reference_images=12,
                      save_images=images_dir, **kwargs)
    kid = report["metrics"]["kid"]
    # Recomputed from the saved PNGs and the real test images, through the same network.
    pngs = sorted(p for p in os.listdir(images_dir) if p.endswith(".png"))
    generated = np.stack([np.asarray(Image.open(os.path.join(images_dir, p))) for p in pngs])
    real = ShapesDataset("test", num_images=12, image_size=64, num_stages=1)
    _, real_features = standin_inception(np.stack([real.image(i) for i in range(12)]))
    expected = kernel_inception_distance(standin_inception(generated)[1], real_features, 3, 6, 2)
    assert kid["mean"] == pytest.approx(expected["mean"], rel=1e-5, abs=1e-9)
    assert kid["std"] == pytest.approx(expected["std"], rel=1e-5, abs=1e-9)
    assert (kid["num_subsets"], kid["subset_size"]) == (3, 6)
    assert "KID (3 subsets of 6)" in format_report(report)

    # A statistics file written here holds the features; KID from it is the same.
    path = str(tmp_path / "ref.npz")
    compute_reference_statistics("shapes", "test", path, num_images=12, image_size=64,
                                 inception=standin_inception, verbose=0)
    from_file = evaluate(tiny_preset, "shapes", metrics="kid", reference_stats=path, **kwargs)
    assert from_file["metrics"]["kid"]["mean"] == pytest.approx(kid["mean"], rel=1e-5)
    # pytorch-fid's files hold only mu and sigma: KID is skipped by default, an error if asked.
    mu, sigma = load_statistics(path)
    bare = save_statistics(str(tmp_path / "bare.npz"), mu, sigma)
    report = evaluate(tiny_preset, "shapes", reference_stats=bare, num_images=10,
                      inception=standin_inception, is_splits=2, verbose=0)
    assert "fid" in report["metrics"] and "hold only mu and sigma" in report["skipped"]["kid"]
    with pytest.raises(ValueError, match="hold only mu and sigma"):
        evaluate(tiny_preset, "shapes", metrics="fid,kid", reference_stats=bare, **kwargs)


def test_errors(tiny_preset, tmp_path):
    with pytest.raises(ValueError, match="Unknown metrics"):
        evaluate(tiny_preset, "shapes", metrics="is,bleu", num_images=10, verbose=0)
    with pytest.raises(ValueError, match="needs num_images >= 100"):
        evaluate(tiny_preset, "shapes", metrics="r_precision", num_images=40, verbose=0)
    attngan = tmp_path / "birds"
    attngan.mkdir()
    (attngan / "captions.pickle").write_bytes(b"")
    with pytest.raises(ValueError, match="shapes data only"):
        evaluate(tiny_preset, str(attngan), metrics="shapes", num_images=10, verbose=0)
    no_damsm = _save_tiny_preset(tmp_path / "no_damsm", with_image_encoder=False)
    with pytest.raises(ValueError, match="--damsm"):
        evaluate(no_damsm, "shapes", metrics="r_precision", num_images=20, num_candidates=10,
                 verbose=0)
    model = TextToImage.from_preset(tiny_preset, captioner=False)
    with pytest.raises(ValueError, match="pass `damsm`"):
        evaluate(model, "shapes", metrics="r_precision", num_images=20, num_candidates=10,
                 verbose=0)


def test_by_default_every_metric_the_model_and_data_allow_and_why_others_are_skipped(
    tmp_path, standin_inception, monkeypatch, capsys
):
    no_damsm = _save_tiny_preset(tmp_path / "no_damsm", with_image_encoder=False)
    report = evaluate(no_damsm, "shapes", num_images=20, batch_size=10, num_candidates=10,
                      inception=standin_inception, num_reference_images=20)
    assert set(report["metrics"]) == {"is", "fid", "kid", "shapes"}
    assert list(report["skipped"]) == ["r_precision"]
    assert "image_encoder.weights.h5" in report["skipped"]["r_precision"]
    out = capsys.readouterr().out
    assert "Skipping r_precision:" in out and "skipped r_precision" in out

    # No network: the ImageNet Inception weights cannot be downloaded (Keras raises a bare
    # Exception). By default IS and FID are skipped, saying why; asked for, it is an error.
    def no_download(weights="imagenet"):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None")

    monkeypatch.setattr(InceptionClassifier, "from_weights", staticmethod(no_download))
    report = evaluate(no_damsm, "shapes", num_images=20, batch_size=10, num_candidates=10,
                      verbose=0)
    assert set(report["metrics"]) == {"shapes"}
    assert sorted(report["skipped"]) == ["fid", "is", "kid", "r_precision"]
    assert "URL fetch failure" in report["skipped"]["fid"]
    with pytest.raises(RuntimeError, match="--inception-weights PATH"):
        evaluate(no_damsm, "shapes", metrics="fid", num_images=20, verbose=0)
    # Too few images for R-precision's 100 candidates: skipped by default, an error if asked.
    with_damsm = _save_tiny_preset(tmp_path / "with_damsm")
    report = evaluate(with_damsm, "shapes", num_images=20, batch_size=10, verbose=0)
    assert "num_images >= 100" in report["skipped"]["r_precision"]


def test_nothing_to_compute_is_an_error(tmp_path, monkeypatch):
    attngan = make_mini_attngan(tmp_path / "birds", "birds", num_classes=2, images_per_class=2)

    def no_download(weights="imagenet"):
        raise Exception("URL fetch failure")

    monkeypatch.setattr(InceptionClassifier, "from_weights", staticmethod(no_download))
    no_damsm = _save_tiny_preset(tmp_path / "no_damsm", with_image_encoder=False)
    with pytest.raises(ValueError, match="No metric can be computed: .*shapes data only"):
        evaluate(no_damsm, attngan.root, num_images=4, verbose=0)


def test_damsm_from_another_folder(tiny_preset, tmp_path):
    # An independently trained DAMSM (here: other random weights) scores the same images.
    keras.utils.set_random_seed(5)
    other = _save_tiny_preset(tmp_path / "other_damsm")
    report = evaluate(tiny_preset, "shapes", metrics="r_precision", num_images=20,
                      batch_size=10, damsm=other, num_candidates=10, r_precision_runs=2,
                      verbose=0)
    assert report["metrics"]["r_precision"]["damsm"] == other
    assert report["metrics"]["r_precision"]["damsm_is_the_models_stem"] is False
    own = evaluate(tiny_preset, "shapes", metrics="r_precision", num_images=20, batch_size=10,
                   damsm=tiny_preset, num_candidates=10, r_precision_runs=2, verbose=0)
    assert own["metrics"]["r_precision"]["damsm_is_the_models_stem"] is True


def test_command_line(tiny_preset, tmp_path, capsys):
    from mirrorgan_tf import cli

    out = str(tmp_path / "report.json")
    assert cli.main([
        "evaluate", "--model", tiny_preset, "--data", "shapes", "--metrics",
        "r_precision,shapes", "--num-images", "20", "--batch-size", "10",
        "--r-precision-candidates", "10", "--out", out,
    ]) == 0
    with open(out, encoding="utf-8") as f:
        assert set(json.load(f)["metrics"]) == {"r_precision", "shapes"}
    assert "R-precision (top-1 of 10)" in capsys.readouterr().out
    assert cli.main(["evaluate", "--data", "shapes"]) == 2
    assert "pass --model, or --compute-reference-stats" in capsys.readouterr().err
    assert cli.main(["evaluate", "--data", "shapes", "--fid-backend", "pytorch-fid",
                     "--compute-reference-stats", str(tmp_path / "ref.npz")]) == 2
    assert "pt_inception-2015-12-05-6726825d.pth" in capsys.readouterr().err


def test_attngan_captions_and_reference_statistics(tmp_path, standin_inception):
    mini = make_mini_attngan(tmp_path / "birds", "birds", num_classes=3, images_per_class=2)
    config = presets.get_config("birds", num_stages=1)
    captions = list(evaluation_captions(mini.root, "test", None, config, seed=1, num_images=15))
    own = [[" ".join(c.split()) for c in image] for image in mini.captions["test"]]
    assert len(captions) == 15
    # First pass: each test image's first caption in file order; then random draws.
    assert captions[:6] == [image[0] for image in own]
    assert set(captions[6:]) <= {c for image in own for c in image}
    mu, sigma = compute_reference_statistics(mini.root, "test", None, image_size=64,
                                             inception=standin_inception, verbose=0)
    assert mu.shape == (8,) and sigma.shape == (8, 8) and np.all(np.isfinite(sigma))
