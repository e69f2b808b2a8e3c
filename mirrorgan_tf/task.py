"""The text-to-image task: tokenizer + STEM + the moving-average GLAM (+ STREAM), for notebooks.

Example:
>>> model = TextToImage.from_preset("saved_models/shapes")  # doctest: +SKIP
>>> images = model.generate(["a small blue square at the bottom right"], seed=0)
>>> images.shape
(1, 256, 256, 3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mirrorgan_tf import presets
from mirrorgan_tf.data.tokenizer import Tokenizer
from mirrorgan_tf.data.vocabulary import Vocabulary
from mirrorgan_tf.networks.text_encoder import caption_mask

RUN_MODEL_DIR = "model"  # where a training run keeps its latest preset folder


def resolve_preset(path_or_name: str) -> str:
    """Maps a run folder to the preset folder inside it; preset folders and names pass through.

    Args:
        path_or_name: a preset name (`shapes`), a preset folder, or a training run folder
            (which keeps its latest model in `model/`).

    Raises:
        ValueError: for a folder that is neither a preset nor a run, or an unknown name.

    Example:
    >>> resolve_preset("birds")
    'birds'
    """
    if os.path.isdir(path_or_name):
        if os.path.exists(os.path.join(path_or_name, presets.CONFIG_FILE)):
            return path_or_name
        inner = os.path.join(path_or_name, RUN_MODEL_DIR)
        if os.path.exists(os.path.join(inner, presets.CONFIG_FILE)):
            return inner
        raise ValueError(
            f"{path_or_name!r} is neither a preset folder (with {presets.CONFIG_FILE}) nor a "
            f"training run (with {RUN_MODEL_DIR}/{presets.CONFIG_FILE})."
        )
    if path_or_name not in presets.PRESETS:
        raise ValueError(
            f"{path_or_name!r} is not a folder, and not a preset name "
            f"(known: {', '.join(sorted(presets.PRESETS))})."
        )
    return path_or_name


def default_vocabulary(config: dict[str, Any]) -> Vocabulary:
    """The vocabulary a named preset uses when no vocabulary file comes with it.

    `shapes` has the built-in dataset's fixed vocabulary; `birds`/`coco` need the one of the
    data (AttnGAN `captions.pickle`), so a placeholder of the right size is returned for
    random-weight experiments.

    Args:
        config: a preset configuration.

    Example:
    >>> len(default_vocabulary(presets.get_config("birds")))
    5450
    """
    if config.get("preset") == "shapes":
        from mirrorgan_tf.data.shapes import shapes_vocabulary

        vocabulary = shapes_vocabulary()
        if len(vocabulary) == config["vocab_size"]:
            return vocabulary
    words = ["<end>", "<unk>"] + [f"word{i}" for i in range(2, config["vocab_size"])]
    return Vocabulary(words, origin="placeholder")


def to_uint8(images) -> np.ndarray:
    """Maps float images in [-1, 1] to uint8 [0, 255] (the one image de-normalisation).

    Args:
        images: float array or tensor in [-1, 1].

    Example:
    >>> to_uint8(np.array([-1.0, 0.0, 1.0])).tolist()
    [0, 128, 255]
    """
    images = np.asarray(tf.cast(images, tf.float32))
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(images) -> tf.Tensor:
    """Maps uint8 images [0, 255] to float32 in [-1, 1] (the one image normalisation).

    Args:
        images: uint8 array or tensor.

    Example:
    >>> float(from_uint8(np.array([255], np.uint8))[0])
    1.0
    """
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def noise_for_seeds(seeds, z_dim: int) -> tf.Tensor:
    """Generator noise with one seed per caption: the one way noise is drawn from a seed.

    Row i is `tf.random.stateless_normal([z_dim], seed=[seeds[i], 0])`; a negative seed gives
    fresh N(0, 1) noise. An image therefore depends only on its caption and its seed, not on
    the rest of the batch, in Keras and in the exported SavedModel alike (which calls this).

    Args:
        seeds: int [batch] (int32 range).
        z_dim: the noise dimension.

    Returns:
        float32 [batch, z_dim].

    Example:
    >>> noise_for_seeds([0, 7, -1], z_dim=4).shape
    TensorShape([3, 4])
    """
    seeds = tf.cast(tf.convert_to_tensor(seeds), tf.int32)
    seeded = tf.map_fn(
        lambda s: tf.random.stateless_normal([z_dim], seed=tf.stack([s, 0])),
        seeds,
        fn_output_signature=tf.TensorSpec([z_dim], tf.float32),
    )
    fresh = tf.random.normal(tf.stack([tf.shape(seeds)[0], z_dim]))
    return tf.where(seeds[:, None] >= 0, seeded, fresh)


class TextToImage:
    """MirrorGAN text-to-image: captions in, 256x256 uint8 images out.

    Built from a preset name (random weights), a preset folder or a training run with
    `from_preset`. Generation uses the generator's moving-average weights and c_code = mu
    (conditioning augmentation is a training-time augmentation; the noise z carries the
    variation, seeded for repeatability). This is a deliberate deviation from the published
    sampling script, which also samples c_code at test time.

    Args:
        config: the preset configuration.
        tokenizer: the `Tokenizer` of the training data.
        text_encoder: STEM.
        generator: GLAM (the moving-average weights, when loaded from a run).
        captioner: STREAM, optional.

    Example:
    >>> model = TextToImage.from_preset("shapes")
    >>> model.generate(["a red circle"], seed=1).shape
    (1, 256, 256, 3)
    """

    def __init__(
        self,
        config: dict[str, Any],
        tokenizer: Tokenizer,
        text_encoder: keras.Model,
        generator: keras.Model,
        captioner: keras.Model | None = None,
    ):
        self.config = config
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.generator = generator
        self.captioner = captioner
        # Tokenizer, STEM and GLAM in one graph: traced once per batch shape (reduce_retracing
        # makes the batch dimension dynamic after the second size), then far faster than eager.
        self._generate_graph = tf.function(self._text_to_images, reduce_retracing=True)

    @classmethod
    def from_preset(cls, preset: str, captioner: bool = True) -> TextToImage:
        """Loads a preset name, a preset folder, or a training run's latest model.

        Args:
            preset: `shapes`/`birds`/`coco`, a preset folder, or a run folder.
            captioner: also load STREAM (needed by `caption`) when the preset has it.

        Example:
        >>> model = TextToImage.from_preset("shapes", captioner=False)
        """
        preset = resolve_preset(preset)
        wanted = ["text_encoder", "generator"]
        if os.path.isdir(preset):
            has = lambda name: os.path.exists(os.path.join(preset, f"{name}.weights.h5"))  # noqa: E731
            missing = [n for n in wanted if not has(n)]
            if missing:
                raise ValueError(f"Preset folder {preset!r} holds no weights for {missing}.")
            if captioner and has("captioner"):
                wanted.append("captioner")
        elif captioner:
            wanted.append("captioner")
        parts = presets.from_preset(preset, components=wanted)
        config = parts["config"]
        if parts["vocabulary_path"]:
            tokenizer = Tokenizer.from_vocabulary_file(
                parts["vocabulary_path"], config["words_num"]
            )
        else:
            tokenizer = Tokenizer(default_vocabulary(config), config["words_num"])
        if tokenizer.vocab_size != config["vocab_size"]:
            raise ValueError(
                f"The vocabulary has {tokenizer.vocab_size:,} words but the model expects "
                f"{config['vocab_size']:,}."
            )
        return cls(
            config,
            tokenizer,
            parts["text_encoder"],
            parts["generator"],
            parts.get("captioner"),
        )

    @property
    def image_size(self) -> int:
        """The size of the last stage's images."""
        return presets.image_sizes(self.config)[-1]

    def encode_text(self, captions: Sequence[str]) -> dict[str, tf.Tensor]:
        """Tokenizes (truncating) and encodes captions with STEM.

        Args:
            captions: caption strings.

        Returns:
            dict with `token_ids`, `lengths`, `words`, `sentence`, `word_mask`.

        Example:
        >>> model.encode_text(["a red circle"])["sentence"].shape  # doctest: +SKIP
        """
        token_ids, lengths = self.tokenizer(tf.constant(list(captions), tf.string))
        words, sentence = self.text_encoder(token_ids, training=False)
        return {
            "token_ids": token_ids,
            "lengths": lengths,
            "words": words,
            "sentence": sentence,
            "word_mask": caption_mask(token_ids),
        }

    def _text_to_images(self, captions: tf.Tensor, noise: tf.Tensor):
        token_ids, lengths = self.tokenizer(captions)
        words, sentence = self.text_encoder(token_ids, training=False)
        out = self.generator(
            noise, sentence, words, caption_mask(token_ids), training=False, deterministic=True
        )
        return token_ids, lengths, out

    def generate(
        self,
        captions: str | Sequence[str],
        seed: int | Sequence[int] | None = None,
        return_attention: bool = False,
        noise=None,
    ) -> np.ndarray | dict[str, Any]:
        """Generates one image per caption.

        Args:
            captions: a caption or a list of captions (any text; unknown words map to <unk>,
                long captions are truncated to the preset's `words_num`).
            seed: makes the noise repeatable: one seed for every caption, or one per caption.
                The same caption and seed give the same image, whatever else is in the
                batch (as in the exported SavedModel). None draws fresh noise.
            return_attention: also return every stage's images, the word-attention maps and
                the caption words.
            noise: explicit noise [batch, z_dim] (overrides `seed`).

        Returns:
            uint8 images [batch, S, S, 3] of the last stage, or with `return_attention` a dict
            with `images` (uint8, one array per stage), `attention` (float [B, H, W, T] per stage
            from the second), `words` (the tokens of each caption, as the model saw them).

        Example:
        >>> model.generate("a small red circle", seed=0).shape  # doctest: +SKIP
        (1, 256, 256, 3)
        """
        if isinstance(captions, str | bytes):
            captions = [captions]
        captions = list(captions)
        if noise is None:
            seeds = [-1 if seed is None else seed] * len(captions)
            if seed is not None and not isinstance(seed, int | np.integer):
                seeds = list(seed)
                if len(seeds) != len(captions):
                    raise ValueError(
                        f"`seed` holds {len(seeds)} seeds for {len(captions)} captions."
                    )
            noise = noise_for_seeds(seeds, self.config["z_dim"])
        token_ids, lengths, out = self._generate_graph(
            tf.constant(captions, tf.string), tf.convert_to_tensor(noise, tf.float32)
        )
        if not return_attention:
            return to_uint8(out["images"][-1])
        words = [
            [self.tokenizer.vocabulary.id_to_word(int(i)) for i in row[:n]]
            for row, n in zip(token_ids.numpy(), lengths.numpy(), strict=True)
        ]
        return {
            "images": [to_uint8(x) for x in out["images"]],
            "attention": [np.asarray(a, np.float32) for a in out["attention"]],
            "words": words,
        }

    def caption(self, images, beam_size: int = 1) -> list[str]:
        """STREAM's caption of each image.

        Args:
            images: uint8 [B, H, W, 3] or float in [-1, 1].
            beam_size: 1 for greedy decoding.

        Example:
        >>> model.caption(model.generate("a red circle", seed=0))  # doctest: +SKIP
        ['a large red circle in the centre']
        """
        if self.captioner is None:
            raise ValueError("This model was loaded without a captioner (STREAM).")
        images = np.asarray(images)
        floats = from_uint8(images) if images.dtype == np.uint8 else tf.cast(images, tf.float32)
        ids = self.captioner.generate(floats, beam_size=beam_size)
        return [self.tokenizer.vocabulary.decode(row) for row in np.asarray(ids)]
