"""The preset table (plain data) and the functions that build, save and load presets.

A preset names a full MirrorGAN configuration: STEM (text encoder), the DAMSM image encoder,
GLAM (generator), one discriminator per stage and STREAM (captioner), plus the published training
hyperparameters. `birds` and `coco` follow the published implementation (see
`shared/design/mirrorgan-reference.md`); `shapes` is a small configuration that trains on a CPU
on the built-in captioned-shapes dataset.

A preset folder (written by `save_to_preset`, read by `from_preset`) holds:
`config.json` (the configuration), `metadata.json` (description, parameter counts, versions),
`vocabulary.txt` (one word per line, line i = id i) and one `<component>.weights.h5` per saved
component.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import keras
import numpy as np

# === The table ===
# Values shared by every preset unless it overrides them (the published defaults).
_BASE_CONFIG: dict[str, Any] = {
    "vocab_size": None,
    "words_num": 18,
    "captions_per_image": 10,
    # STEM
    "embedding_dim": 300,
    "nef": 256,
    "rnn_type": "lstm",
    "text_dropout": 0.5,
    # DEVIATION when True (the shapes preset): sentence feature rescaled to norm sqrt(nef)
    "normalize_sentence": False,
    # GLAM
    "z_dim": 100,
    "condition_dim": 100,
    "gf_dim": 32,
    # DEVIATION when True (the shapes preset): refinement stages correct the lower image
    "residual_images": False,
    "r_num": 2,
    "num_stages": 3,
    # discriminators
    "df_dim": 64,
    # backbones
    "image_encoder_backbone": "inception_v3",
    "captioner_backbone": "resnet152",
    # None: the backbone's own input size (299 Inception-v3, 224 ResNet-152)
    "image_encoder_input_size": None,
    "captioner_input_size": None,
    # STREAM
    "captioner_embed_dim": 256,
    "captioner_hidden_dim": 512,
    "caption_max_length": 20,
    # training (published values)
    "training": {
        "batch_size": 12,
        "epochs": 650,
        "g_learning_rate": 2e-4,
        "d_learning_rate": 2e-4,
        "adam_beta_1": 0.5,
        "adam_beta_2": 0.999,
        "caption_loss_weight": 10.0,  # lambda of the paper's L_G = sum_i L_Gi + lambda L_stream
        "damsm_loss_weight": 0.0,  # AttnGAN-style DAMSM term; MirrorGAN birds uses none
        # A paired, tone-blind pixel loss to the caption's real image (a recipe option for
        # data whose caption nearly fixes the image, losses.centred_l1_loss); 0 as published
        "paired_loss_weight": 0.0,
        "kl_loss_weight": 1.0,
        # False: train with conditioning augmentation's c_code = mu (a recipe option)
        "ca_noise": True,
        # Shape-swapped negatives for the discriminators (a recipe option): None as published,
        # "shapes" for the built-in dataset's shape words, or a list of word groups
        "swap_negatives": None,
        "ema_decay": 0.999,
        # True: the generator's average warms up, decay min(ema_decay, (1 + n) / (10 + n))
        # at update n (a recipe option); False as published
        "ema_warmup": False,
        "damsm_learning_rate": 2e-3,
        "damsm_lr_decay_per_epoch": 0.98,
        "damsm_batch_size": 48,
        "damsm_epochs": 600,
        "damsm_rnn_grad_clip": 0.25,
        "damsm_gamma1": 4.0,
        "damsm_gamma2": 5.0,
        "damsm_gamma3": 10.0,
        # The first G dimensions of STEM's sentence also learn to name which of G word groups
        # a caption holds (a recipe option, losses.keyword_code_loss): None as published,
        # "shapes" for the built-in dataset's shape words, or a list of word groups
        "damsm_keywords": None,
        "damsm_keyword_weight": 1.0,
        # > 0: the first 144 dimensions of STEM's sentence also learn what each cell of the
        # built-in dataset's 3x3 grid holds (a recipe option, losses.cell_code_loss; needs
        # --data shapes and nef >= 144), at this weight; 0 as published
        "damsm_cell_code_weight": 0.0,
        "stream_learning_rate": 1e-3,
        "stream_batch_size": 128,
        "stream_epochs": 5,
    },
}

PRESETS: dict[str, dict[str, Any]] = {
    "birds": {
        "description": (
            "MirrorGAN on CUB-200-2011 birds, as published: GF 32, DF 64, R 2, 18 words, "
            "Inception-v3 DAMSM image encoder, ResNet-152 STREAM encoder, 256x256 output."
        ),
        "config": {
            "vocab_size": 5450,
            "words_num": 18,
            "captions_per_image": 10,
            "gf_dim": 32,
            "df_dim": 64,
            "r_num": 2,
        },
    },
    "coco": {
        "description": (
            "MirrorGAN on COCO-2014, as published: GF 48, DF 96, R 3, 12 words, "
            "Inception-v3 DAMSM image encoder, ResNet-152 STREAM encoder, 256x256 output."
        ),
        "config": {
            "vocab_size": 27297,
            "words_num": 12,
            "captions_per_image": 5,
            "gf_dim": 48,
            "df_dim": 96,
            "r_num": 3,
            "training": {"batch_size": 14, "epochs": 120, "damsm_epochs": 120},
        },
    },
    "shapes": {
        "description": (
            "A small MirrorGAN for the built-in captioned-shapes dataset that trains in minutes "
            "on 2 CPU cores: GF 8, DF 8, R 1, small CNN backbones, 256x256 output."
        ),
        "config": {
            "vocab_size": None,  # set from the shapes vocabulary when built
            "words_num": 16,
            "captions_per_image": 10,
            "embedding_dim": 64,
            "nef": 64,
            # DEVIATION (see TextEncoder): the caption reaches G and D at the scale of their
            # other inputs; without it a CPU-length run ignores the caption.
            "normalize_sentence": True,
            # DEVIATION (see Generator): the 128 and 256 px stages start as the up-sampled
            # 64 px image, so the demo's grown stages keep what the 64 px stage learnt.
            "residual_images": True,
            "z_dim": 32,
            "condition_dim": 32,
            "gf_dim": 8,
            "df_dim": 8,
            "r_num": 1,
            "image_encoder_backbone": "small",
            "captioner_backbone": "small",
            # colours, shapes, sizes and positions read well at 64 px, and cost 16x less
            "image_encoder_input_size": 64,
            "captioner_input_size": 64,
            "captioner_embed_dim": 64,
            "captioner_hidden_dim": 128,
            "training": {
                "batch_size": 8,
                # The published 0.999 averages over ~1,000 steps: longer than a CPU demo run.
                "ema_decay": 0.99,
                "damsm_batch_size": 32,
                "stream_batch_size": 32,
                "damsm_learning_rate": 2e-3,
            },
        },
    },
}

COMPONENTS = (
    "text_encoder",
    "image_encoder",
    "generator",
    "discriminator_64",
    "discriminator_128",
    "discriminator_256",
    "captioner",
)

_MAX_VOCAB_SIZE = 10_000_000
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
VOCABULARY_FILE = "vocabulary.txt"


def _merge(base: dict, override: Mapping) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _unknown_preset(name: str) -> ValueError:
    known = ", ".join(sorted(PRESETS))
    return ValueError(
        f"Unknown preset {name!r}. Known presets: {known}; or pass a preset folder "
        f"(one holding {CONFIG_FILE})."
    )


def _check_vocab_size(vocab_size: Any, preset: str) -> int:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int | np.integer):
        raise ValueError(
            f"`vocab_size` for preset {preset!r} must be an integer; got {vocab_size!r}."
        )
    if not 3 <= int(vocab_size) <= _MAX_VOCAB_SIZE:
        raise ValueError(
            f"`vocab_size` for preset {preset!r} must be between 3 (<end>, <unk> and one word) "
            f"and {_MAX_VOCAB_SIZE:,}; got {vocab_size}."
        )
    return int(vocab_size)


def get_config(preset: str, **overrides: Any) -> dict[str, Any]:
    """Returns the full configuration of a named preset, with `overrides` applied.

    Args:
        preset: a name from `PRESETS` (`birds`, `coco`, `shapes`).
        **overrides: configuration keys to replace, e.g. `vocab_size=5451` or
            `training={"batch_size": 4}` (nested dicts are merged).

    Returns:
        A new dict; changing it does not change the table.

    Raises:
        ValueError: for an unknown preset (the message lists the known ones), an unknown key,
            or an impossible vocabulary size.

    Example:
    >>> get_config("birds")["gf_dim"]
    32
    """
    if preset not in PRESETS:
        raise _unknown_preset(preset)
    config = _merge(_BASE_CONFIG, PRESETS[preset]["config"])
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"Unknown configuration keys {unknown}; known keys: {sorted(config)}.")
    config = _merge(config, overrides)
    config["preset"] = preset
    if config["vocab_size"] is None and preset == "shapes":
        from mirrorgan_tf.data.shapes import shapes_vocabulary

        config["vocab_size"] = len(shapes_vocabulary())
    config["vocab_size"] = _check_vocab_size(config["vocab_size"], preset)
    if config["num_stages"] not in (1, 2, 3):
        raise ValueError(f"`num_stages` must be 1, 2 or 3; got {config['num_stages']}.")
    return config


def describe(config: Mapping[str, Any]) -> str:
    """The description of a configuration: its preset's, plus the network keys it changes.

    Changed training keys and vocabulary sizes are not listed; changed network keys are (a
    model built with `gf_dim` 16 is described as such, not as the preset's 8).

    Args:
        config: a full configuration (`get_config`), with its `preset` key.

    Returns:
        The text for a preset folder's `metadata.json`; empty for an unknown preset.

    Example:
    >>> describe(get_config("shapes", gf_dim=16)).endswith("Changed from the preset: gf_dim 16.")
    True
    """
    preset = config.get("preset")
    if preset not in PRESETS:
        return ""
    base = _merge(_BASE_CONFIG, PRESETS[preset]["config"])
    changed = sorted(
        key for key, value in config.items()
        if key in base and key not in ("training", "vocab_size") and base[key] != value
    )
    text = PRESETS[preset]["description"]
    if changed:
        text += " Changed from the preset: " + ", ".join(f"{k} {config[k]}" for k in changed) + "."
    return text


def image_sizes(config: Mapping[str, Any]) -> list[int]:
    """The output size of each generator stage: 64, 128, 256 for three stages.

    Args:
        config: a preset configuration.

    Example:
    >>> image_sizes(get_config("birds"))
    [64, 128, 256]
    """
    return [64 * 2**i for i in range(config["num_stages"])]


def build_component(
    name: str, config: Mapping[str, Any], weights: str | None = None
) -> keras.Model:
    """Builds one component of a configuration (every network creates its weights on construction).

    Args:
        name: one of `COMPONENTS` (`text_encoder`, `image_encoder`, `generator`,
            `discriminator_64|128|256`, `captioner`).
        config: a preset configuration (see `get_config`).
        weights: for the image encoder and captioner backbones, `"imagenet"` loads ImageNet
            weights through Keras (downloads at run time); `None` initialises randomly.

    Returns:
        The built Keras model.

    Example:
    >>> generator = build_component("generator", get_config("shapes"))
    """
    from mirrorgan_tf import networks

    c = config
    if name == "text_encoder":
        model = networks.TextEncoder(
            vocab_size=c["vocab_size"],
            embedding_dim=c["embedding_dim"],
            nef=c["nef"],
            rnn_type=c["rnn_type"],
            dropout=c["text_dropout"],
            normalize_sentence=c.get("normalize_sentence", False),
        )
    elif name == "image_encoder":
        # The published Inception trunk is ImageNet-pretrained and frozen; the small trunk of
        # `shapes` starts from random weights, so it trains with the projections.
        model = networks.ImageEncoder(
            nef=c["nef"],
            backbone=c["image_encoder_backbone"],
            weights=weights,
            input_size=c["image_encoder_input_size"],
            trainable_backbone=c["image_encoder_backbone"] == "small",
        )
    elif name == "generator":
        model = networks.Generator(
            gf_dim=c["gf_dim"],
            z_dim=c["z_dim"],
            condition_dim=c["condition_dim"],
            nef=c["nef"],
            r_num=c["r_num"],
            num_stages=c["num_stages"],
            residual_images=c.get("residual_images", False),
        )
    elif name.startswith("discriminator_"):
        size = int(name.rsplit("_", 1)[1])
        if size not in image_sizes(c):
            raise ValueError(
                f"Component {name!r} does not exist with {c['num_stages']} stage(s); "
                f"sizes are {image_sizes(c)}."
            )
        model = networks.Discriminator(image_size=size, df_dim=c["df_dim"], nef=c["nef"])
    elif name == "captioner":
        model = networks.Captioner(
            vocab_size=c["vocab_size"],
            embed_dim=c["captioner_embed_dim"],
            hidden_dim=c["captioner_hidden_dim"],
            backbone=c["captioner_backbone"],
            max_length=c["caption_max_length"],
            input_size=c["captioner_input_size"],
        )
    else:
        raise ValueError(f"Unknown component {name!r}; components are {list(COMPONENTS)}.")
    return model


def component_names(config: Mapping[str, Any]) -> list[str]:
    """The components a configuration has (one discriminator per generator stage).

    Args:
        config: a preset configuration.

    Example:
    >>> component_names(get_config("birds", num_stages=1))[:3]
    ['text_encoder', 'image_encoder', 'generator']
    """
    sizes = image_sizes(config)
    return [n for n in COMPONENTS if not n.startswith("discriminator_") or int(n[14:]) in sizes]


def count_params(model: keras.Model) -> int:
    """Trainable parameter count of a built model.

    Args:
        model: a built Keras model or layer.

    Example:
    >>> count_params(keras.layers.Dense(2, input_shape=(3,)))  # doctest: +SKIP
    8
    """
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def stored_parameter_count(model: keras.Model) -> int:
    """Parameters a model's weights file holds, frozen ones included (BatchNorm statistics not).

    `count_params` counts what would train, which is 0 for the frozen STEM and STREAM of a
    MirrorGAN run; a preset's metadata reports this count instead.

    Args:
        model: a built Keras model or layer.

    Example:
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> layer.trainable = False
    >>> stored_parameter_count(layer)
    8
    """
    return int(
        sum(
            np.prod(v.shape)
            for v in model.weights
            if v.path.rsplit("/", 1)[-1] not in ("moving_mean", "moving_variance")
        )
    )


def parameter_counts(config: Mapping[str, Any]) -> dict[str, int]:
    """Builds every component of `config` and returns its trainable parameter counts.

    Keys: `text_encoder`, `image_encoder`, `generator`, `discriminator_64|128|256` (those the
    configuration has), `captioner_encoder`, `captioner_decoder`.

    Args:
        config: a preset configuration.

    Example:
    >>> parameter_counts(get_config("shapes"))["generator"]  # doctest: +SKIP
    """
    counts: dict[str, int] = {}
    # Variables created in a stateless scope get their shapes but no values: counting the
    # full COCO discriminators takes a second instead of a minute of orthogonal inits.
    with keras.StatelessScope(initialize_variables=False):
        for name in component_names(config):
            model = build_component(name, config)
            if name == "captioner":
                counts["captioner_encoder"] = count_params(model.encoder)
                counts["captioner_decoder"] = count_params(model.decoder)
            else:
                counts[name] = count_params(model)
    return counts


# === Preset folders ===
def _resolve_config(preset: str) -> dict[str, Any]:
    if os.path.isdir(preset):
        path = os.path.join(preset, CONFIG_FILE)
        if not os.path.exists(path):
            raise ValueError(f"{preset!r} is a folder but holds no {CONFIG_FILE}: not a preset.")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return get_config(preset)


def from_preset(
    preset: str,
    components: Iterable[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Builds the components of a preset name or preset folder, loading saved weights.

    Args:
        preset: a name from `PRESETS` (random weights) or a folder written by `save_to_preset`.
        components: which components to build (default: all the folder has weights for, or
            all of `component_names(config)` for a named preset).
        **overrides: configuration overrides (named presets only), e.g. `vocab_size=...`.

    Returns:
        A dict with `config`, `vocabulary_path` (or None), `metadata` and one entry per
        component.

    Raises:
        ValueError: for an unknown name (listing the known ones), a folder without
            `config.json`, or a component whose weights the folder lacks.

    Example:
    >>> parts = from_preset("shapes", components=["generator"])  # doctest: +SKIP
    """
    is_folder = os.path.isdir(preset)
    if is_folder and overrides:
        raise ValueError("Overrides apply to named presets only, not to preset folders.")
    config = _resolve_config(preset) if is_folder else get_config(preset, **overrides)
    if components is None:
        if is_folder:
            components = [
                n for n in component_names(config)
                if os.path.exists(os.path.join(preset, f"{n}.weights.h5"))
            ]
        else:
            components = component_names(config)
    result: dict[str, Any] = {"config": config, "vocabulary_path": None, "metadata": {}}
    for name in components:
        model = build_component(name, config)
        if is_folder:
            path = os.path.join(preset, f"{name}.weights.h5")
            if not os.path.exists(path):
                raise ValueError(f"Preset folder {preset!r} holds no weights for {name!r}.")
            model.load_weights(path)
        result[name] = model
    if is_folder:
        vocab = os.path.join(preset, VOCABULARY_FILE)
        result["vocabulary_path"] = vocab if os.path.exists(vocab) else None
        meta = os.path.join(preset, METADATA_FILE)
        if os.path.exists(meta):
            with open(meta, encoding="utf-8") as f:
                result["metadata"] = json.load(f)
    return result


def save_to_preset(
    folder: str,
    config: Mapping[str, Any],
    components: Mapping[str, keras.Model],
    vocabulary_path: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Writes a preset folder atomically: a crash mid-write never leaves a half-written preset.

    The folder is written next to its destination under a temporary name and renamed into
    place at the end; an existing preset folder there is replaced.

    Args:
        folder: destination folder.
        config: the configuration (`get_config(...)` or a loaded preset's).
        components: name -> built model, names from `COMPONENTS`.
        vocabulary_path: a vocabulary file to copy as `vocabulary.txt`.
        metadata: extra metadata to store (description, training steps, ...).

    Returns:
        `folder`.

    Example:
    >>> config = get_config("shapes")
    >>> g = build_component("generator", config)
    >>> save_to_preset("/tmp/my_shapes", config, {"generator": g})  # doctest: +SKIP
    """
    unknown = sorted(set(components) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"Unknown components {unknown}; components are {list(COMPONENTS)}.")
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-preset-", dir=parent)
    try:
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(dict(config), f, indent=2, sort_keys=True)
        for name, model in components.items():
            model.save_weights(os.path.join(tmp, f"{name}.weights.h5"))
        if vocabulary_path is not None:
            shutil.copyfile(vocabulary_path, os.path.join(tmp, VOCABULARY_FILE))
        meta = {
            "preset": config.get("preset"),
            "description": describe(config),
            "keras_version": keras.__version__,
            "parameter_counts": {n: stored_parameter_count(m) for n, m in components.items()},
        }
        meta.update(metadata or {})
        with open(os.path.join(tmp, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        if os.path.exists(folder):
            old = folder + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
