"""Published PyTorch checkpoints (AttnGAN/MirrorGAN) -> a mirrorgan_tf preset folder.

Reads AttnGAN's DAMSM encoders (`text_encoder200.pth`, `image_encoder200.pth`), AttnGAN or
MirrorGAN generators (`bird_AttnGAN2.pth`, `netG_*.pth`), D_NET64/128/256 discriminators and
the STREAM captioner (EncoderCNN / DecoderRNN of the captioning tutorial), checks every tensor
against the Keras networks of a preset, and writes a preset folder (`config.json`, one
`<component>.weights.h5` each, `vocabulary.txt` from `captions.pickle`, `metadata.json` with
the conversion notes). The mapping tables live in `mirrorgan_tf.convert.layouts`.

Checkpoints are untrusted files: they are read with `torch.load(..., weights_only=True)`, which
refuses anything but tensors and plain containers. PyTorch is imported inside the functions
that read checkpoints, so `mirrorgan_tf` imports without it.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mirrorgan_tf import presets
from mirrorgan_tf.convert import layouts
from mirrorgan_tf.data.vocabulary import Vocabulary

# Keys under which training scripts commonly wrap a state_dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "netG", "generator")
_FUSION_INITS = ("identity", "fresh")


def _import_torch():
    try:
        import torch
    except ImportError as error:
        raise RuntimeError(
            "Reading PyTorch checkpoints needs PyTorch: `pip install torch` (a CPU build is "
            "enough: `pip install torch --index-url https://download.pytorch.org/whl/cpu`)."
        ) from error
    return torch


def _is_state_dict(obj, torch) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()
    )


def _find_state_dict(obj, name: str, torch) -> Mapping:
    """The state_dict itself, or the one a wrapper dict holds (e.g. {"state_dict": ...})."""
    if _is_state_dict(obj, torch):
        return obj
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if _is_state_dict(obj.get(key), torch):
                return obj[key]
        inner = [k for k, v in obj.items() if _is_state_dict(v, torch)]
        if len(inner) == 1:
            return obj[inner[0]]
        keys = ", ".join(repr(k) for k in list(obj)[:10])
        raise ValueError(
            f"{name}: holds no state_dict (a dict of tensors); its top-level keys are {keys}"
            + (f"; several look like state_dicts: {inner}" if inner else "")
        )
    raise ValueError(f"{name}: holds a {type(obj).__name__}, not a state_dict")


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch checkpoint safely into `{key: float32/int numpy array}`.

    Uses `torch.load(path, map_location="cpu", weights_only=True)` (no code from the file runs),
    accepts a plain state_dict or a dict wrapping one (`{"state_dict": ...}`, `{"model": ...}`)
    and strips the `module.` prefixes of `nn.DataParallel`.

    Args:
        path: the `.pth` file.

    Returns:
        The tensors as numpy arrays (floating point ones as float32).

    Raises:
        ValueError: unreadable file, or no state_dict in it.
        RuntimeError: PyTorch is not installed.

    Example:
    >>> state = load_state_dict("DAMSMencoders/bird/text_encoder200.pth")  # doctest: +SKIP
    >>> state["encoder.weight"].shape  # doctest: +SKIP
    (5450, 300)
    """
    torch = _import_torch()
    name = os.path.basename(os.fspath(path))
    if not os.path.isfile(path):
        raise ValueError(f"{os.fspath(path)}: no such file")
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise ValueError(
            f"{name}: could not be read as a PyTorch checkpoint with weights_only=True "
            f"(only tensors and plain containers are admitted): {error}"
        ) from error
    state = _find_state_dict(obj, name, torch)
    arrays = {}
    for key, value in state.items():
        key = re.sub(r"^(module\.)+", "", key)
        value = value.detach().cpu()
        arrays[key] = (value.float() if value.is_floating_point() else value).numpy()
    return arrays


def _name(path) -> str:
    return os.path.basename(os.fspath(path))


class _Conversion:
    """Collects problems and notes while the components are matched; assigns only at the end."""

    def __init__(self, preset: str, verbose: bool):
        self.preset = preset
        self.verbose = verbose
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.fresh: list[str] = []
        self.values: list[tuple[Any, np.ndarray]] = []
        self.components: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.actions: list = []  # callables run after the values are assigned
        self.shape_problems = False

    def load(self, path) -> dict[str, np.ndarray] | None:
        if path is None:
            return None
        try:
            return load_state_dict(path)
        except ValueError as error:
            self.problems.append(str(error))
            return None

    def add(self, component: str, source: str, entries, state, allowed_missing=(),
            skip_keys=()) -> layouts.Match:
        expected = {key for entry in entries for key in entry.keys}
        if not expected & set(state):
            # The wrong file: one message, not one per tensor.
            kind = layouts.checkpoint_kind(state) or "something else"
            example = ", ".join(sorted(expected)[:2])
            count = sum(not k.endswith(layouts.IGNORED_SUFFIXES) for k in state)
            self.problems.append(
                f"{source}: not a {component} checkpoint: none of its {count} tensors is "
                f"one the {component} takes (e.g. {example}); it looks like {kind}"
            )
            return layouts.Match([], sorted(expected), [], [], list(entries))
        result = layouts.match(entries, state, source, component)
        # A vocabulary table that failed `check_matches` already has its clear message: drop
        # the shape messages of its module (weight and bias).
        modules = [f"{source}: {k.rsplit('.', 1)[0]}." for k in skip_keys]
        result.problems = [p for p in result.problems
                           if not any(p.startswith(m) for m in modules)]
        self.shape_problems |= bool(result.problems)
        self.problems += layouts.describe(result, source, component, allowed_missing)
        self.values += result.values
        self.sources[component] = (
            f"{self.sources[component]} + {source}" if component in self.sources else source
        )
        if self.verbose:
            print(f"  {component:20s} <- {source}: {len(result.values)} weights")
        return result


def _vocabulary_tables(states: Mapping[str, dict | None], sources: Mapping[str, str]):
    """(component, source, key, rows, columns) of each word table in the given checkpoints."""
    tables = []
    pairs = (("text_encoder", "encoder.weight"), ("captioner_decoder", "embed.weight"),
             ("captioner_decoder", "linear.weight"))
    for component, key in pairs:
        state = states.get(component)
        if state is not None and key in state and np.ndim(state[key]) == 2:
            rows, columns = state[key].shape
            tables.append((component, sources[component], key, int(rows), int(columns)))
    return tables


def convert_checkpoints(
    preset: str,
    out: str,
    captions: str | None = None,
    text_encoder: str | None = None,
    image_encoder: str | None = None,
    generator: str | None = None,
    discriminators: Sequence[str] | None = None,
    captioner_encoder: str | None = None,
    captioner_decoder: str | None = None,
    verbose: bool = True,
    attngan_fusion: str = "identity",
    config_overrides: Mapping[str, Any] | None = None,
) -> str:
    """Converts published PyTorch checkpoints into a preset folder, checking every tensor first.

    Any subset of the checkpoints may be given. Every mismatch (missing or unexpected tensor,
    shape, vocabulary) is collected and reported in one ValueError, and nothing is written
    unless every check passes (`presets.save_to_preset` then writes atomically).
    - Vocabulary: `captions.pickle`'s words keep their ids and "<unk>" is appended at id V, so
      word tables get one more row (see `layouts.UNK_EMBEDDING_NOTE`, `UNK_OUTPUT_NOTE`); the
      table sizes are checked against the pickle with `Vocabulary.check_matches`. Without
      `captions`, no vocabulary.txt is written and the vocabulary size is taken from the
      checkpoints (+1 for "<unk>").
    - Generator: a MirrorGAN G_NET converts completely. An AttnGAN G_NET lacks the sentence
      attention (`h_net{2,3}.att.linear`, `att.conv_sentence_vis`) and the fusion conv
      (`h_net{2,3}.conv`); those stay freshly initialised and are listed (printed and in
      metadata.json). With `attngan_fusion="identity"` the fusion conv is set to pass
      [h, word context] through and ignore the sentence context, so the converted generator
      draws exactly AttnGAN's images until it is fine-tuned (`mirrorgan-tf train --init`);
      `"fresh"` leaves it randomly initialised too.
    - Discriminators: D_NET64/128/256 are recognised by their keys, in any order.
    - Image encoder: Keras' Inception-v3 has no BatchNorm scale (folded into the kernels, exact)
      and its "same" average pools exclude the padding where torchvision's include it, so the
      converted trunk differs slightly at feature-map borders; the projections are exact.

    Args:
        preset: `birds` or `coco`: what the tensors cannot tell (words per caption, captions
            per image, backbones, training settings). The network sizes are read from the
            checkpoints given (`layouts.infer_sizes`), so any size converts; the preset's
            values stand for sizes no given checkpoint holds.
        out: the preset folder to write (replaced if it exists).
        captions: AttnGAN's `captions.pickle` (the vocabulary).
        text_encoder: DAMSM RNN_ENCODER state_dict (`text_encoder200.pth`).
        image_encoder: DAMSM CNN_ENCODER state_dict (`image_encoder200.pth`).
        generator: G_NET state_dict (MirrorGAN or AttnGAN, e.g. `bird_AttnGAN2.pth`).
        discriminators: up to three D_NET state_dicts.
        captioner_encoder: STREAM EncoderCNN state_dict (`resnet.*`, `linear`, `bn`).
        captioner_decoder: STREAM DecoderRNN state_dict (`embed`, `lstm`, `linear`).
        verbose: print what is converted and every note.
        attngan_fusion: `identity` or `fresh`, the fusion conv of an AttnGAN generator.
        config_overrides: configuration values that override both the checkpoints' sizes
            and the preset (`mirrorgan-tf convert --set KEY=VALUE`).

    Returns:
        `out`.

    Raises:
        ValueError: listing every problem found; nothing is written.
        RuntimeError: PyTorch is not installed.

    Example:
    >>> convert_checkpoints(
    ...     "birds", "presets/attngan_birds", captions="data/birds/captions.pickle",
    ...     text_encoder="DAMSMencoders/bird/text_encoder200.pth",
    ...     image_encoder="DAMSMencoders/bird/image_encoder200.pth",
    ...     generator="models/bird_AttnGAN2.pth")  # doctest: +SKIP
    'presets/attngan_birds'
    """
    if attngan_fusion not in _FUSION_INITS:
        raise ValueError(
            f"`attngan_fusion` must be one of {_FUSION_INITS}; got {attngan_fusion!r}."
        )
    discriminators = list(discriminators or [])
    if len(discriminators) > 3:
        raise ValueError(f"At most 3 discriminators (64, 128, 256); got {len(discriminators)}.")
    paths = {"text_encoder": text_encoder, "image_encoder": image_encoder, "generator": generator,
             "captioner_encoder": captioner_encoder, "captioner_decoder": captioner_decoder}
    if not any(paths.values()) and not discriminators:
        raise ValueError("Nothing to convert: give at least one checkpoint.")
    _import_torch()
    run = _Conversion(preset, verbose)

    # --- Read everything (problems are collected, not raised) ---
    states = {name: run.load(path) for name, path in paths.items()}
    sources = {name: _name(path) for name, path in paths.items() if path is not None}
    if states["captioner_encoder"] is not None:
        states["captioner_encoder"] = layouts.normalize_resnet_keys(states["captioner_encoder"])
    disc_states: dict[int, tuple[str, dict]] = {}
    for path in discriminators:
        state = run.load(path)
        if state is None:
            continue
        size = layouts.discriminator_size(state)
        if size is None:
            run.problems.append(f"{_name(path)}: not a D_NET64/128/256 state_dict "
                                "(no img_code_s16.* tensors)")
        elif size in disc_states:
            run.problems.append(f"{_name(path)} and {disc_states[size][0]} are both "
                                f"{size}x{size} discriminators")
        else:
            disc_states[size] = (_name(path), state)
    vocabulary = None
    if captions is not None:
        try:
            vocabulary = Vocabulary.from_captions_pickle(captions)
        except (ValueError, OSError) as error:
            run.problems.append(f"{_name(captions)}: {error}")

    # --- Vocabulary ---
    tables = _vocabulary_tables(states, sources)
    failed_keys: dict[str, set[str]] = {}
    vocab_size = None
    if vocabulary is not None:
        vocab_size = vocabulary.size
        for component, source, key, rows, columns in tables:
            try:
                vocabulary.check_matches(rows, f"{source} ({key})", columns)
            except ValueError as error:
                run.problems.append(str(error))
                failed_keys.setdefault(component, set()).add(key)
    elif tables:
        sizes = {rows for *_, rows, _ in tables}
        if len(sizes) > 1:
            listing = ", ".join(f"{source} {key} has {rows:,} rows"
                                for _, source, key, rows, _ in tables)
            run.problems.append(f"the checkpoints disagree on the vocabulary: {listing}")
        vocab_size = max(sizes) + 1
        run.notes.append("no captions.pickle given: no vocabulary.txt is written; token ids are "
                         "the checkpoints' and <unk> is appended at id V")

    # --- Sizes: what the tensors tell, then `config_overrides`, then the preset ---
    sizes, evidence, conflicts = layouts.infer_sizes(states, sources, disc_states)
    run.problems += conflicts
    if vocab_size is not None:
        sizes["vocab_size"] = vocab_size
        evidence["vocab_size"] = (f"{_name(captions)} (+1 for <unk>)" if vocabulary is not None
                                  else "the checkpoints' word tables (+1 for <unk>)")
    user = dict(config_overrides or {})
    try:
        config = presets.get_config(preset, **{**sizes, **user})
    except ValueError as error:
        raise ValueError(f"Cannot convert into {out!r}: {error}") from None
    described = {k: v for k, v in evidence.items() if k not in user}

    def unk_row(rows: int) -> bool:
        return config["vocab_size"] == rows + 1

    if verbose:
        print(f"converting into a {preset!r} configuration, sizes read from the checkpoints:")
        for key, where in described.items():
            print(f"  {key:20s} {config[key]!s:>8s}  ({where})")
        for key, value in user.items():
            print(f"  {key:20s} {value!s:>8s}  (set)")

    # --- Match each component (nothing assigned yet) ---
    if states["text_encoder"] is not None:
        state = states["text_encoder"]
        model = presets.build_component("text_encoder", config)
        rows = state["encoder.weight"].shape[0] if "encoder.weight" in state else 0
        run.add("text_encoder", sources["text_encoder"],
                layouts.text_encoder_entries(model, unk_row(rows)), state,
                skip_keys=failed_keys.get("text_encoder", ()))
        run.components["text_encoder"] = model
        if unk_row(rows):
            run.notes.append(f"text_encoder: {layouts.UNK_EMBEDDING_NOTE}")

    if states["image_encoder"] is not None:
        model = presets.build_component("image_encoder", config)
        try:
            entries = layouts.image_encoder_entries(model)
        except ValueError as error:
            run.problems.append(f"{sources['image_encoder']}: {error}")
        else:
            run.add("image_encoder", sources["image_encoder"], entries, states["image_encoder"])
            run.components["image_encoder"] = model
            run.notes.append(
                "image_encoder: Keras' Inception-v3 average pools exclude the padding where "
                "torchvision's include it: region and global features differ slightly from "
                "PyTorch's near the borders; the BatchNorm scales are folded into the kernels"
            )

    if states["generator"] is not None:
        _add_generator(run, config, states["generator"], sources["generator"], attngan_fusion)

    for size, (source, state) in sorted(disc_states.items()):
        name = f"discriminator_{size}"
        if name not in presets.component_names(config):
            run.problems.append(f"{source}: a {size}x{size} discriminator, but the preset has "
                                f"{config['num_stages']} stage(s)")
            continue
        model = presets.build_component(name, config)
        run.add(name, source, layouts.discriminator_entries(model), state)
        run.components[name] = model

    if states["captioner_encoder"] is not None or states["captioner_decoder"] is not None:
        _add_captioner(run, config, states, sources, failed_keys, unk_row)

    # --- Report or write ---
    if run.problems:
        hint = ""
        if run.shape_problems:
            hint = (f"\nShapes follow {describe_config(config)}, read from the checkpoints "
                    f"where their tensors tell ({', '.join(described) or 'nowhere'}), set "
                    f"({', '.join(user) or 'nothing'}), else from preset {preset!r}: check the "
                    "files and any --set values.")
        raise ValueError(
            f"Cannot convert into {out!r}: {len(run.problems)} problem(s), nothing written:\n"
            + "\n".join(f"  - {p}" for p in run.problems) + hint
        )
    layouts.assign(run.values)
    for action in run.actions:
        action()
    metadata = {
        "description": (f"Converted from PyTorch checkpoints ({', '.join(run.sources.values())})"
                        f": {describe_config(config)}."),
        "converted_from": run.sources,
        "sizes_from_checkpoints": {k: f"{config[k]} ({where})" for k, where in described.items()},
        "sizes_set": user,
        "conversion_notes": run.notes,
        "freshly_initialised": run.fresh,
    }
    with tempfile.TemporaryDirectory() as tmp:
        vocabulary_path = None
        if vocabulary is not None:
            vocabulary_path = os.path.join(tmp, presets.VOCABULARY_FILE)
            vocabulary.save(vocabulary_path)
        presets.save_to_preset(out, config, run.components, vocabulary_path, metadata)
    if verbose:
        for note in run.notes:
            print(f"note: {note}")
        if run.fresh:
            print(f"freshly initialised ({len(run.fresh)}): " + ", ".join(run.fresh))
        print(f"wrote {out}")
    return out


def describe_config(config: Mapping[str, Any]) -> str:
    """One line of a configuration's network sizes, as the preset descriptions spell them.

    Args:
        config: a configuration (`presets.get_config`).

    Example:
    >>> describe_config(presets.get_config("birds")).split(", ")[:4]
    ['GF 32', 'DF 64', 'R 2', 'nef 256']
    """
    size = presets.image_sizes(config)[-1]
    return (
        f"GF {config['gf_dim']}, DF {config['df_dim']}, R {config['r_num']}, nef "
        f"{config['nef']}, embedding {config['embedding_dim']} ({config['rnn_type']}), z "
        f"{config['z_dim']}, c {config['condition_dim']}, {config['num_stages']} stage"
        f"{'s' if config['num_stages'] > 1 else ''} ({size}x{size}), STREAM embed "
        f"{config['captioner_embed_dim']} / hidden {config['captioner_hidden_dim']}, "
        f"vocabulary {config['vocab_size']:,}"
    )


def _add_generator(run: _Conversion, config, state, source: str, attngan_fusion: str) -> None:
    model = presets.build_component("generator", config)
    entries = layouts.generator_entries(model)
    only = layouts.mirrorgan_only_keys(config["num_stages"])
    keys = set(state)
    attngan = bool(only) and not any(k in keys for k in only)
    result = run.add("generator", source, entries, state, allowed_missing=only if attngan else ())
    run.components["generator"] = model
    if not attngan:
        return
    fresh = [e for e in result.unset if set(e.keys) <= set(only)]
    fusion_note = "freshly initialised too"
    if attngan_fusion == "identity":
        fusion_note = ("set to pass [h, word context] through and ignore the sentence context, "
                       "so the generator computes AttnGAN's images until fine-tuned")
        fusion_paths = {layer.kernel.path for layer in model.fusion}
        fresh = [e for e in fresh if e.variable.path not in fusion_paths]
        run.actions.append(lambda: _pass_through_fusion(model))
    run.fresh += [layouts.variable_name(e, "generator") for e in fresh]
    run.notes.append(
        f"generator: {source} has AttnGAN's layout (no sentence attention, no fusion conv): "
        f"the sentence attention weights stay freshly initialised; the fusion conv "
        f"(h_net{{2,3}}.conv) is {fusion_note}"
    )


def _pass_through_fusion(model) -> None:
    """Fusion conv1x1 (3ngf -> 2ngf) = [I | 0]: keeps [h, word context], drops the sentence."""
    for layer in model.fusion:
        kernel = np.zeros(tuple(layer.kernel.shape), "float32")
        out = kernel.shape[-1]
        kernel[0, 0, :out, :] = np.eye(out, dtype="float32")
        layer.kernel.assign(kernel)


def _add_captioner(run: _Conversion, config, states, sources, failed_keys, unk_row) -> None:
    model = presets.build_component("captioner", config)
    run.components["captioner"] = model
    encoder_state, decoder_state = states["captioner_encoder"], states["captioner_decoder"]
    if encoder_state is not None:
        try:
            entries = layouts.captioner_encoder_entries(model.encoder)
        except ValueError as error:
            run.problems.append(f"{sources['captioner_encoder']}: {error}")
        else:
            run.add("captioner", sources["captioner_encoder"], entries, encoder_state)
    else:
        run.fresh.append("captioner/encoder (no captioner encoder checkpoint given)")
    if decoder_state is not None:
        rows = decoder_state["embed.weight"].shape[0] if "embed.weight" in decoder_state else 0
        entries = layouts.captioner_decoder_entries(model.decoder, unk_row(rows))
        run.add("captioner", sources["captioner_decoder"], entries, decoder_state,
                skip_keys=failed_keys.get("captioner_decoder", ()))
        if unk_row(rows):
            run.notes.append(f"captioner decoder: {layouts.UNK_EMBEDDING_NOTE}; "
                             f"{layouts.UNK_OUTPUT_NOTE}")
    else:
        run.fresh.append("captioner/decoder (no captioner decoder checkpoint given)")
