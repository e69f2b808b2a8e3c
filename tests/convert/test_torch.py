"""PyTorch checkpoint conversion: exact outputs against a PyTorch restatement, clear errors."""

import json
import os
import pickle
import sys

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mirrorgan_tf import presets  # noqa: E402
from mirrorgan_tf.convert import convert_checkpoints, layouts, load_state_dict  # noqa: E402
from mirrorgan_tf.networks import (  # noqa: E402
    Captioner,
    Discriminator,
    Generator,
    ImageEncoder,
    TextEncoder,
)
from tests.convert import torch_reference as ref  # noqa: E402

TOL = 1e-4
# Tiny generator/discriminator/text sizes shared by the end-to-end tests.
TINY = dict(gf_dim=4, z_dim=5, condition_dim=6, nef=8, r_num=1, df_dim=2, embedding_dim=6)
WORDS = ["<end>", "a", "bird", "red", "small", "wings", "blue"]  # V = 7, like ixtoword


def _numpy(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _convert(entries, module, source="test.pth"):
    """Matches and assigns, asserting that the layouts fit exactly (nothing left over)."""
    result = layouts.match(entries, _numpy(module), source)
    assert (result.missing, result.unexpected, result.problems) == ([], [], [])
    layouts.assign(result.values)
    return result


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _captions(rng, batch, length, lengths, vocab):
    ids = rng.integers(1, vocab, size=[batch, length])
    mask = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
    return np.where(mask, ids, 0).astype("int64"), mask


def _write_captions_pickle(path, words=WORDS):
    ixtoword = dict(enumerate(words))
    wordtoix = {w: i for i, w in ixtoword.items()}
    with open(path, "wb") as f:
        pickle.dump([[[1, 2]], [[3, 2]], ixtoword, wordtoix], f, protocol=2)
    return str(path)


# === Exactness, component by component ===
@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU"])
def test_text_encoder_matches_pytorch(rnn_type):
    vocab, rng = 9, np.random.default_rng(0)
    torch_model = ref.randomize(ref.RNN_ENCODER(vocab, ninput=6, nhidden=8, rnn_type=rnn_type))
    model = TextEncoder(vocab + 1, embedding_dim=6, nef=8, rnn_type=rnn_type.lower())
    _convert(layouts.text_encoder_entries(model, unk_row=True), torch_model)

    ids, _ = _captions(rng, 3, 5, (5, 3, 1), vocab)
    with torch.no_grad():
        words, sentence = torch_model(torch.from_numpy(ids), torch.tensor([5, 3, 1]))
    k_words, k_sentence = model(ids.astype("int32"), training=False)
    assert _max_diff(k_words, words.numpy().transpose(0, 2, 1)) <= TOL
    assert _max_diff(k_sentence, sentence.numpy()) <= TOL
    # The <unk> row (id V) is the mean of the word rows 1..V-1.
    table = torch_model.encoder.weight.detach().numpy()
    np.testing.assert_allclose(
        model.embedding.embeddings.numpy()[vocab], table[1:].mean(0), atol=1e-6
    )


def _generator_pair(variant, num_stages=3, r_num=1):
    torch_model = ref.randomize(ref.G_NET(ngf=4, nef=8, ncf=6, z_dim=5, r_num=r_num,
                                          branch_num=num_stages, variant=variant), seed=1)
    model = Generator(gf_dim=4, z_dim=5, condition_dim=6, nef=8, r_num=r_num,
                      num_stages=num_stages)
    return torch_model, model


def _compare_generator(torch_model, model):
    rng = np.random.default_rng(1)
    noise = rng.normal(size=[2, 5]).astype("float32")
    sentence = rng.normal(size=[2, 8]).astype("float32")
    words = rng.normal(size=[2, 5, 8]).astype("float32")
    mask = np.array([[True] * 5, [True] * 3 + [False] * 2])
    words = words * mask[..., None]
    with torch.no_grad():
        images, maps, mu, logvar = torch_model(
            torch.from_numpy(noise), torch.from_numpy(sentence),
            torch.from_numpy(words.transpose(0, 2, 1).copy()), torch.from_numpy(~mask))
    out = model(noise, sentence, words, mask, training=False, deterministic=True)
    assert _max_diff(out["mu"], mu) <= TOL and _max_diff(out["logvar"], logvar) <= TOL
    assert len(out["images"]) == len(images)
    for k_image, t_image in zip(out["images"], images, strict=True):
        assert _max_diff(k_image, t_image.numpy().transpose(0, 2, 3, 1)) <= TOL
    for k_map, t_map in zip(out["attention"], maps, strict=True):
        assert _max_diff(k_map, t_map.numpy().transpose(0, 2, 3, 1)) <= TOL


@pytest.mark.parametrize("num_stages, r_num", [(3, 1), (2, 2)])
def test_mirrorgan_generator_matches_pytorch(num_stages, r_num):
    torch_model, model = _generator_pair("mirrorgan", num_stages, r_num)
    _convert(layouts.generator_entries(model), torch_model)
    _compare_generator(torch_model, model)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_discriminator_matches_pytorch(size):
    rng = np.random.default_rng(size)
    torch_model = ref.randomize(ref.D_NET(size, ndf=2, nef=8), seed=size)
    model = Discriminator(image_size=size, df_dim=2, nef=8)
    _convert(layouts.discriminator_entries(model), torch_model)
    images = rng.uniform(-1, 1, size=[2, size, size, 3]).astype("float32")
    sentence = rng.normal(size=[2, 8]).astype("float32")
    with torch.no_grad():
        uncond, cond = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                                   torch.from_numpy(sentence))
    k_uncond, k_cond = model(images, sentence, training=False)
    assert _max_diff(k_uncond, uncond) <= TOL
    assert _max_diff(k_cond, cond) <= TOL


def test_captioner_matches_pytorch():
    vocab, rng = 9, np.random.default_rng(2)
    encoder = ref.randomize(ref.EncoderCNN(8, blocks=(1, 1, 1, 1), width=4), seed=2)
    decoder = ref.randomize(ref.DecoderRNN(8, 12, vocab), seed=3)
    model = Captioner(vocab + 1, embed_dim=8, hidden_dim=12, backbone="resnet152",
                      blocks=(1, 1, 1, 1), width=4, input_size=64)
    _convert(layouts.captioner_encoder_entries(model.encoder), encoder)
    _convert(layouts.captioner_decoder_entries(model.decoder, unk_row=True), decoder)

    images = rng.uniform(-1, 1, size=[2, 64, 64, 3]).astype("float32")
    ids, _ = _captions(rng, 2, 6, (6, 4), vocab)
    # The Keras encoder takes [-1, 1] and applies the ImageNet normalisation itself.
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    normalised = ((images + 1) / 2 - mean) / std
    with torch.no_grad():
        features = encoder(torch.from_numpy(normalised.transpose(0, 3, 1, 2).astype("float32")))
        logits = decoder(features, torch.from_numpy(ids))
    k_features = model.encoder(images, training=False)
    assert _max_diff(k_features, features) <= TOL
    k_logits = model.decoder(k_features, ids.astype("int32"), training=False).numpy()
    assert _max_diff(k_logits[..., :vocab], logits) <= TOL
    # <unk> (id V): zero weights, the smallest bias; it never wins here.
    assert np.all(model.decoder.linear.kernel.numpy()[:, vocab] == 0)
    assert model.decoder.linear.bias.numpy()[vocab] == decoder.linear.bias.min().item()
    assert np.all(k_logits.argmax(-1) != vocab)


def test_resnet_named_keys_are_normalised():
    encoder = ref.EncoderCNN(8, blocks=(1, 1, 1, 1), width=4)
    indexed = _numpy(encoder)
    named = {}
    for key, value in indexed.items():
        parts = key.split(".")
        if parts[0] == "resnet":
            parts[1] = {"0": "conv1", "1": "bn1"}.get(parts[1], f"layer{int(parts[1]) - 3}")
        named[".".join(parts)] = value
    assert "resnet.layer1.0.downsample.0.weight" in named
    assert layouts.normalize_resnet_keys(named).keys() == indexed.keys()


def test_image_encoder_projections_match_and_every_trunk_key_maps():
    rng = np.random.default_rng(3)
    torch_model = ref.randomize(ref.CNN_ENCODER(nef=8), seed=4, gamma_sign=True)
    model = ImageEncoder(nef=8)
    result = _convert(layouts.image_encoder_entries(model), torch_model)
    # 94 conv + BN pairs (4 variables each) + emb_features + emb_cnn_code (kernel, bias).
    assert len(result.values) == 94 * 4 + 3
    regions = rng.normal(size=[2, 17, 17, 768]).astype("float32")
    global_map = rng.normal(size=[2, 8, 8, 2048]).astype("float32")
    with torch.no_grad():
        t_regions, t_global = torch_model.project(
            torch.from_numpy(regions.transpose(0, 3, 1, 2).copy()),
            torch.from_numpy(global_map.transpose(0, 3, 1, 2).copy()))
    assert _max_diff(model.emb_features(regions), t_regions.numpy().transpose(0, 2, 3, 1)) <= TOL
    assert _max_diff(model.emb_cnn_code(global_map.mean(axis=(1, 2))), t_global) <= TOL


@pytest.mark.slow
def test_image_encoder_trunk_matches_pytorch():
    """The whole trunk is exact when PyTorch's pools exclude the padding as Keras' do."""
    rng = np.random.default_rng(5)
    torch_model = ref.randomize(ref.CNN_ENCODER(nef=8, count_include_pad=False), seed=5,
                                gamma_sign=True)
    model = ImageEncoder(nef=8)
    _convert(layouts.image_encoder_entries(model), torch_model)
    images = rng.uniform(-1, 1, size=[1, 299, 299, 3]).astype("float32")
    with torch.no_grad():
        t_regions, t_global = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
        # The published (torchvision) pools count the padding: the residual difference.
        for module in torch_model.modules():
            if hasattr(module, "count_include_pad"):
                module.count_include_pad = True
        p_regions, p_global = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    k_regions, k_global = model(images, training=False)
    t_regions = t_regions.numpy().transpose(0, 2, 3, 1)
    scale = max(1.0, float(np.abs(t_regions).max()), float(np.abs(t_global).max()))
    assert _max_diff(k_regions, t_regions) <= TOL * scale
    assert _max_diff(k_global, t_global) <= TOL * scale
    # With torchvision's pools the features differ, but only a little (a border effect).
    border = _max_diff(k_regions, p_regions.numpy().transpose(0, 2, 3, 1))
    assert TOL * scale < border < 0.5 * float(np.abs(t_regions).max())
    del p_global


# === The published full-size layouts ===
def _published(component):
    """(torch module, parameter count from the reference, entries function) at birds size."""
    if component == "generator":
        return (ref.G_NET(ngf=32, nef=256, ncf=100, z_dim=100, r_num=2), 7_105_392,
                layouts.generator_entries)
    if component == "text_encoder":
        return (ref.RNN_ENCODER(5450, 300, 256), 2_075_320,
                lambda m: layouts.text_encoder_entries(m, unk_row=True))
    if component == "discriminator_256":
        return ref.D_NET(256, ndf=64, nef=256), 71_858_946, layouts.discriminator_entries
    if component == "captioner_encoder":
        return (ref.EncoderCNN(256), 58_668_864,
                lambda m: layouts.captioner_encoder_entries(m.encoder))
    return (ref.DecoderRNN(256, 512, 5450), 5_768_010,
            lambda m: layouts.captioner_decoder_entries(m.decoder, unk_row=True))


@pytest.mark.parametrize("component", ["generator", "text_encoder", "discriminator_256",
                                       "captioner_encoder", "captioner_decoder"])
def test_published_birds_layouts_map_one_to_one(component):
    torch_model, published_count, entries = _published(component)
    # The restatement has the published parameter count, so its keys are the published ones.
    assert sum(p.numel() for p in torch_model.parameters()) == published_count
    state = _numpy(torch_model)
    config = presets.get_config("birds", vocab_size=5451)
    with keras.StatelessScope(initialize_variables=False):
        name = "captioner" if component.startswith("captioner") else component
        model = presets.build_component(name, config)
        result = layouts.match(entries(model), state, "published.pth")
    assert (result.missing, result.unexpected, result.problems) == ([], [], [])
    part = {"captioner_encoder": "encoder", "captioner_decoder": "decoder"}.get(component)
    target = getattr(model, part) if part else model
    assert len(result.values) == len(target.weights)
    if component == "generator":
        # Shapes quoted in the reference (shared/design/mirrorgan-reference.md).
        assert state["h_net1.fc.0.weight"].shape == (16384, 200)
        assert state["h_net2.att.conv_context.weight"].shape == (32, 256, 1, 1)
        assert state["h_net2.conv.weight"].shape == (64, 96, 1, 1)


# === End to end: convert_checkpoints ===
def _save(obj, path):
    torch.save(obj, path)
    return str(path)


def _wrapped(module):
    """A DataParallel-style, wrapped checkpoint: {"state_dict": {"module.<key>": ...}}."""
    return {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}


def test_convert_checkpoints_writes_an_exact_preset(tmp_path, capsys):
    vocab = len(WORDS)
    text = ref.randomize(ref.RNN_ENCODER(vocab, ninput=6, nhidden=8), seed=6)
    generator = ref.randomize(ref.G_NET(4, 8, 6, 5, r_num=1), seed=7)
    discs = {s: ref.randomize(ref.D_NET(s, ndf=2, nef=8), seed=s) for s in (64, 128, 256)}
    paths = dict(
        captions=_write_captions_pickle(tmp_path / "captions.pickle"),
        text_encoder=_save(text.state_dict(), tmp_path / "text_encoder200.pth"),
        generator=_save(_wrapped(generator), tmp_path / "netG.pth"),
        discriminators=[_save(discs[s].state_dict(), tmp_path / f"netD{s}.pth")
                        for s in (256, 64, 128)],  # any order
    )
    out = str(tmp_path / "preset")
    # No sizes given: every network size is read from the tensors (the preset gives the rest).
    assert convert_checkpoints("birds", out, **paths) == out
    printed = capsys.readouterr().out
    assert "<unk>" in printed and "wrote" in printed
    assert "gf_dim" in printed and "netG.pth h_net1.fc.0.weight [2048, 11]" in printed

    parts = presets.from_preset(out)
    assert parts["config"]["vocab_size"] == vocab + 1
    assert {k: parts["config"][k] for k in TINY} == TINY
    assert parts["config"]["num_stages"] == 3 and parts["config"]["words_num"] == 18
    with open(parts["vocabulary_path"], encoding="utf-8") as f:
        assert f.read().split("\n")[:-1] == [*WORDS, "<unk>"]
    with open(os.path.join(out, "metadata.json"), encoding="utf-8") as f:
        metadata = json.load(f)
    assert metadata["converted_from"]["generator"] == "netG.pth"
    assert metadata["freshly_initialised"] == []
    # The metadata describes what was converted, not the birds preset.
    assert metadata["description"].startswith("Converted from PyTorch checkpoints")
    assert "GF 4, DF 2, R 1, nef 8, embedding 6 (lstm), z 5, c 6, 3 stages" in (
        metadata["description"])
    assert metadata["sizes_from_checkpoints"]["df_dim"].startswith("2 (netD")
    assert metadata["sizes_set"] == {}
    assert sorted(k for k in parts if k.startswith(("text", "gen", "disc"))) == [
        "discriminator_128", "discriminator_256", "discriminator_64", "generator",
        "text_encoder"]

    # The reloaded preset computes what PyTorch computes.
    rng = np.random.default_rng(8)
    ids, _ = _captions(rng, 2, 4, (4, 2), vocab)
    with torch.no_grad():
        t_words, t_sentence = text(torch.from_numpy(ids), torch.tensor([4, 2]))
    words, sentence = parts["text_encoder"](ids.astype("int32"), training=False)
    assert _max_diff(sentence, t_sentence) <= TOL
    assert _max_diff(words, t_words.numpy().transpose(0, 2, 1)) <= TOL
    _compare_generator(generator, parts["generator"])
    images = rng.uniform(-1, 1, size=[1, 256, 256, 3]).astype("float32")
    with torch.no_grad():
        t_logits = discs[256](torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                              t_sentence[:1])
    logits = parts["discriminator_256"](images, sentence[:1], training=False)
    assert _max_diff(logits[0], t_logits[0]) <= TOL and _max_diff(logits[1], t_logits[1]) <= TOL


@pytest.mark.parametrize("fusion", ["identity", "fresh"])
def test_attngan_generator_converts_with_its_missing_weights_listed(tmp_path, capsys, fusion):
    attngan = ref.randomize(ref.G_NET(4, 8, 6, 5, r_num=1, variant="attngan"), seed=9)
    path = _save(attngan.state_dict(), tmp_path / "bird_AttnGAN2.pth")
    out = str(tmp_path / "attngan")
    convert_checkpoints("birds", out, generator=path, config_overrides=TINY,
                        attngan_fusion=fusion)
    printed = capsys.readouterr().out
    with open(os.path.join(out, "metadata.json"), encoding="utf-8") as f:
        fresh = json.load(f)["freshly_initialised"]
    expected = [f"generator/h_net{s}_att/{name}" for s in (2, 3) for name in
                ("sentence_projection/kernel", "sentence_projection/bias",
                 "sentence_vision/kernel")]
    if fusion == "fresh":
        expected += ["generator/h_net2_conv/kernel", "generator/h_net3_conv/kernel"]
    assert sorted(fresh) == sorted(expected)
    assert all(name in printed for name in expected)
    generator = presets.from_preset(out, components=["generator"])["generator"]
    if fusion == "identity":
        # The pass-through fusion makes the converted generator AttnGAN itself.
        _compare_generator(attngan, generator)
    else:
        # Everything AttnGAN has is copied; the fusion conv is random.
        np.testing.assert_array_equal(
            generator.image_heads[2].kernel.numpy(),
            attngan.img_net3.img[0].weight.detach().numpy().transpose(2, 3, 1, 0))


def test_every_problem_is_reported_at_once_and_nothing_is_written(tmp_path):
    text = ref.RNN_ENCODER(5, ninput=6, nhidden=8)  # 5 rows: captions.pickle has 7 words
    generator = ref.G_NET(4, 8, 6, 5, r_num=1)
    state = generator.state_dict()
    state["h_net2.conv.weight"] = torch.zeros(8, 9, 1, 1)  # wrong shape
    del state["img_net3.img.0.weight"]  # missing
    state["h_net4.extra.weight"] = torch.zeros(3)  # unexpected
    disc = ref.D_NET(64, ndf=2, nef=8)
    out = tmp_path / "preset"
    with pytest.raises(ValueError) as error:
        convert_checkpoints(
            "birds", str(out), config_overrides=TINY,
            captions=_write_captions_pickle(tmp_path / "captions.pickle"),
            text_encoder=_save(text.state_dict(), tmp_path / "text_encoder200.pth"),
            generator=_save(state, tmp_path / "netG.pth"),
            discriminators=[_save(disc.state_dict(), tmp_path / "a.pth"),
                            _save(disc.state_dict(), tmp_path / "b.pth")],
            verbose=False,
        )
    message = str(error.value)
    assert "5 problem(s)" in message, message
    assert ("the vocabulary has 8 words (7 from captions.pickle + <unk>), "
            "text_encoder200.pth (encoder.weight) expects 5 x 6") in message
    assert "netG.pth: h_net2.conv.weight has shape [8, 9, 1, 1], expected [8, 12, 1, 1]" in (
        message)
    # One message per tensor: no second (shape) message for the vocabulary table.
    assert "text_encoder200.pth: encoder.weight" not in message
    assert "netG.pth: missing img_net3.img.0.weight" in message
    assert "netG.pth: unexpected h_net4.extra.weight" in message
    assert "b.pth and a.pth are both 64x64 discriminators" in message
    assert not out.exists() and not list(tmp_path.glob(".tmp-preset-*"))


def test_shape_mismatch_names_both_shapes(tmp_path):
    generator = ref.G_NET(4, 8, 6, 5, r_num=1)
    state = generator.state_dict()
    state["h_net2.conv.weight"] = torch.zeros(8, 9, 1, 1)
    with pytest.raises(ValueError) as error:
        convert_checkpoints("birds", str(tmp_path / "p"), config_overrides=TINY, verbose=False,
                            generator=_save(state, tmp_path / "netG.pth"))
    message = str(error.value)
    assert ("netG.pth: h_net2.conv.weight has shape [8, 9, 1, 1], expected [8, 12, 1, 1] "
            "(for generator/h_net2_conv/kernel)") in message
    assert "check the files and any --set values" in message


class _NotATensor:
    pass


def test_checkpoints_with_code_are_refused(tmp_path):
    path = _save({"weight": _NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_state_dict(path)
    with pytest.raises(ValueError, match="holds no state_dict"):
        load_state_dict(_save({"epoch": 1, "lr": 0.1}, tmp_path / "empty.pth"))


def test_cli_arguments_reach_the_converter(tmp_path, capsys):
    from mirrorgan_tf import cli

    disc = _save(ref.D_NET(64, ndf=2, nef=8).state_dict(), tmp_path / "netD64.pth")
    out = tmp_path / "p"
    argv = ["convert", "--preset", "birds", "--out", str(out), "--discriminators", disc]
    args = cli.build_parser().parse_args([*argv, "--quiet"])
    assert args.discriminators == [disc] and args.attngan_fusion == "identity"
    # --set overrides what the tensors say: a 64-wide D is asked for, every tensor is reported.
    with pytest.raises(ValueError, match=r"img_code_s16\.0\.weight has shape \[2, 3, 4, 4\], "
                                         r"expected \[64, 3, 4, 4\]"):
        cli.parse_set_values(["df_dim=64"])
        args = cli.build_parser().parse_args([*argv, "--quiet", "--set", "df_dim=64"])
        args.func(args)
    assert not out.exists()
    # Without it, the sizes come from the checkpoint: a tiny D converts as it is.
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "df_dim" in printed and "netD64.pth img_code_s16.0.weight [2, 3, 4, 4]" in printed
    config = presets.from_preset(str(out), components=[])["config"]
    assert (config["df_dim"], config["nef"], config["num_stages"]) == (2, 8, 1)
    assert cli.main([*argv, "--set", "r_num"]) == 2
    assert "--set takes KEY=VALUE" in capsys.readouterr().err


def test_disagreeing_checkpoints_are_listed_and_nothing_is_written(tmp_path):
    text = ref.RNN_ENCODER(7, ninput=6, nhidden=8)  # nef 8 (4 per direction)
    generator = ref.G_NET(4, 12, 6, 5, r_num=1)  # nef 12
    out = tmp_path / "preset"
    with pytest.raises(ValueError) as error:
        convert_checkpoints("birds", str(out), verbose=False,
                            text_encoder=_save(text.state_dict(), tmp_path / "t.pth"),
                            generator=_save(generator.state_dict(), tmp_path / "g.pth"))
    message = str(error.value)
    assert "the checkpoints disagree on nef: t.pth rnn.weight_hh_l0 [16, 4] says 8" in message
    assert "g.pth ca_net.fc.weight [24, 12] says 12" in message
    assert not out.exists()


def test_captioner_decoder_sizes_come_from_the_checkpoint(tmp_path):
    decoder = ref.randomize(ref.DecoderRNN(6, 10, len(WORDS)), seed=3)
    out = str(tmp_path / "p")
    convert_checkpoints("coco", out, verbose=False,
                        captions=_write_captions_pickle(tmp_path / "captions.pickle"),
                        captioner_decoder=_save(decoder.state_dict(), tmp_path / "dec.pth"))
    config = presets.from_preset(out, components=[])["config"]
    assert (config["captioner_embed_dim"], config["captioner_hidden_dim"]) == (6, 10)
    assert config["words_num"] == 12  # what the tensors cannot tell: coco's


def test_the_package_imports_and_explains_without_pytorch(monkeypatch):
    import importlib

    import mirrorgan_tf.convert.torch as module

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    module = importlib.reload(module)  # no top-level torch import
    with pytest.raises(RuntimeError, match=r"needs PyTorch: `pip install torch`"):
        module.convert_checkpoints("birds", "out", generator="g.pth")


def test_a_checkpoint_of_the_wrong_kind_gets_one_message(tmp_path):
    state = ref.G_NET(4, 8, 6, 5, r_num=1).state_dict()
    count = sum(not k.endswith("num_batches_tracked") for k in state)
    generator = _save(state, tmp_path / "netG.pth")
    with pytest.raises(ValueError) as error:
        convert_checkpoints("birds", str(tmp_path / "p"), text_encoder=generator,
                            config_overrides=TINY, verbose=False)
    message = str(error.value)
    assert "1 problem(s)" in message
    assert (f"netG.pth: not a text_encoder checkpoint: none of its {count} tensors is one the "
            "text_encoder takes") in message and "looks like a generator (G_NET)" in message


def test_without_captions_the_vocabulary_size_comes_from_the_checkpoint(tmp_path, capsys):
    text = ref.randomize(ref.RNN_ENCODER(11, ninput=6, nhidden=8), seed=10)
    out = str(tmp_path / "p")
    convert_checkpoints("birds", out, config_overrides=TINY,
                        text_encoder=_save(text.state_dict(), tmp_path / "t.pth"))
    assert "no captions.pickle given" in capsys.readouterr().out
    parts = presets.from_preset(out)
    assert parts["config"]["vocab_size"] == 12 and parts["vocabulary_path"] is None
    np.testing.assert_array_equal(parts["text_encoder"].embedding.embeddings.numpy()[:11],
                                  text.encoder.weight.detach().numpy())
