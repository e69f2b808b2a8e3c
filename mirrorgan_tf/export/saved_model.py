"""SavedModel export in the TF Serving layout: tokenizer, STEM, GLAM (and STREAM) in one graph.

`export_saved_model` writes `BASE/NAME/VERSION/` (`saved_model.pb`, `variables/`,
`assets/vocabulary.txt`) and an example `BASE/models.config`. The graph holds only core
TensorFlow ops (`tf.strings`, a lookup table read from the vocabulary asset, stateless random
ops), so the standard `tensorflow/serving` binary loads it as it is, without tensorflow_text
or this package.

Signatures:
- `serving_default`: `captions` tf.string [batch] alone, fresh noise for every image ->
  `images` uint8 [batch, S, S, 3] of the last stage and `images_64`, `images_128` of the lower
  stages. With a single input, every TF Serving REST form reaches it:
  `{"instances": ["a red bird", ...]}`, `{"instances": [{"captions": "a red bird"}, ...]}` and
  `{"inputs": {"captions": [...]}}` (or `{"inputs": [...]}`).
- `generate`: `captions` tf.string [batch] and `seed` int32 [batch] (one seed per caption, or
  one for the whole batch; a negative seed draws fresh noise) -> the same outputs,
  reproducible: `{"signature_name": "generate", "instances": [{"captions": ..., "seed": 0}]}`.
- `generate_from_tokens`: `token_ids` int32 [batch, T] and `noise` float32 [batch, z_dim] ->
  float images in [-1, 1] of every stage (`images_64`, `images_128`, `images_256`) and the
  word-attention maps of the refinement stages (`attention_128`, `attention_256`: the stage
  that outputs S pixels attends on its S/2 x S/2 input features, [batch, S/2, S/2, T]).
- `caption` (only when the model has STREAM): `images` uint8 [batch, S, S, 3] -> `captions`
  tf.string [batch], greedy decoding.

Seeds: the noise of caption i is `task.noise_for_seeds` of its seed, so a (caption, seed) pair
gives the same image whatever else is in the batch (TF Serving may batch requests together)
and the same image as `TextToImage.generate(caption, seed=seed_i)`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

import keras
import tensorflow as tf

from mirrorgan_tf import presets
from mirrorgan_tf.data.tokenizer import Tokenizer
from mirrorgan_tf.task import TextToImage, noise_for_seeds

SIGNATURES = ("serving_default", "generate", "generate_from_tokens", "caption")
MODELS_CONFIG_FILE = "models.config"
VOCABULARY_ASSET = "vocabulary.txt"


def uint8_images(images: tf.Tensor) -> tf.Tensor:
    """Graph version of `task.to_uint8`: round((x + 1) * 127.5) clipped to [0, 255].

    Args:
        images: float images in [-1, 1].

    Example:
    >>> uint8_images(tf.constant([-1.0, 0.0, 1.0])).numpy().tolist()
    [0, 128, 255]
    """
    images = tf.round((tf.cast(images, tf.float32) + 1.0) * 127.5)
    return tf.cast(tf.clip_by_value(images, 0.0, 255.0), tf.uint8)


def _at_least_one_row(x: tf.Tensor, filler: tf.Tensor) -> tf.Tensor:
    """`x` with `filler` (one row) appended when `x` has no rows.

    A batch of 0 then runs through the networks as a batch of 1 whose output is sliced away:
    the generator's stage-1 reshape to [-1, C, 4, 4] cannot infer -1 for an empty tensor.
    """
    return tf.concat([x, filler], axis=0)[: tf.maximum(tf.shape(x)[0], 1)]


def safe_token_ids(token_ids: tf.Tensor, vocab_size: int, oov_id: int) -> tf.Tensor:
    """Maps ids outside [0, vocab_size) to `oov_id` (an embedding lookup would fail on them).

    Args:
        token_ids: int [batch, T].
        vocab_size: V.
        oov_id: the id of `<unk>`.

    Example:
    >>> safe_token_ids(tf.constant([[3, 99, -2, 0]]), 10, 1).numpy().tolist()
    [[3, 1, 1, 0]]
    """
    token_ids = tf.cast(token_ids, tf.int32)
    outside = tf.logical_or(token_ids < 0, token_ids >= vocab_size)
    return tf.where(outside, tf.constant(oov_id, tf.int32), token_ids)


class _Detokenizer(tf.Module):
    """id -> word table read from the vocabulary asset, and the join of a caption's words."""

    def __init__(self, vocabulary_file: str):
        super().__init__(name="detokenizer")
        initializer = tf.lookup.TextFileInitializer(
            vocabulary_file,
            key_dtype=tf.int64,
            key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string,
            value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        )
        self._table = tf.lookup.StaticHashTable(initializer, default_value="<unk>")

    def __call__(self, ids: tf.Tensor) -> tf.Tensor:
        # As `Vocabulary.decode`: words up to the first 0 (<end>), joined by spaces.
        ids = tf.cast(ids, tf.int64)
        keep = tf.equal(tf.cumsum(tf.cast(tf.equal(ids, 0), tf.int32), axis=1), 0)
        words = tf.ragged.boolean_mask(self._table.lookup(ids), keep)
        return tf.strings.reduce_join(words, axis=1, separator=" ")


def _generate(model, token_ids: tf.Tensor, noise: tf.Tensor) -> dict[str, Any]:
    """STEM + GLAM exactly as `TextToImage.generate` runs them (c_code = mu)."""
    words, sentence = model.text_encoder(token_ids, training=False)
    return model.generator(
        noise,
        sentence,
        words,
        tf.not_equal(token_ids, 0),
        training=False,
        deterministic=True,
    )


def _build_archive(model, vocabulary_file: str) -> keras.export.ExportArchive:
    """The ExportArchive with the four signatures, tracking every variable and table."""
    config = model.config
    sizes = presets.image_sizes(config)
    size, z_dim = sizes[-1], int(config["z_dim"])
    tokenizer = Tokenizer.from_vocabulary_file(vocabulary_file, model.tokenizer.max_length)
    vocab_size, oov_id = tokenizer.vocab_size, tokenizer.oov_id

    # Only the lookup tables are tracked by hand: the archive saves the variables the
    # signatures use. Tracking the Keras models too would store every weight twice (once as
    # the Keras variable, once as the tf.Variable the functions capture).
    archive = keras.export.ExportArchive()
    archive.track(tokenizer)

    def images_for(captions, seed):
        count = tf.shape(captions)[0]
        seed = tf.broadcast_to(seed, [count])  # one seed for all captions is allowed too
        captions = _at_least_one_row(captions, tf.constant([""]))
        seed = _at_least_one_row(seed, tf.constant([0]))
        token_ids, _ = tokenizer(captions)
        images = _generate(model, token_ids, noise_for_seeds(seed, z_dim))["images"]
        outputs = {"images": uint8_images(images[-1])[:count]}
        for stage_size, image in zip(sizes[:-1], images[:-1], strict=True):
            outputs[f"images_{stage_size}"] = uint8_images(image)[:count]
        return outputs

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="captions")])
    def serving_default(captions):
        # Fresh noise: the negative seed of `noise_for_seeds`.
        return images_for(captions, tf.constant([-1]))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="captions"),
            tf.TensorSpec([None], tf.int32, name="seed"),
        ]
    )
    def generate(captions, seed):
        return images_for(captions, seed)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="token_ids"),
            tf.TensorSpec([None, z_dim], tf.float32, name="noise"),
        ]
    )
    def generate_from_tokens(token_ids, noise):
        count = tf.shape(token_ids)[0]
        token_ids = safe_token_ids(token_ids, vocab_size, oov_id)
        filler = tf.zeros(tf.stack([1, tf.shape(token_ids)[1]]), tf.int32)
        token_ids = _at_least_one_row(token_ids, filler)
        noise = _at_least_one_row(noise, tf.zeros([1, z_dim]))
        out = _generate(model, token_ids, noise)
        outputs = {
            f"images_{s}": image[:count] for s, image in zip(sizes, out["images"], strict=True)
        }
        for s, attention in zip(sizes[1:], out["attention"], strict=True):
            outputs[f"attention_{s}"] = tf.cast(attention, tf.float32)[:count]
        return outputs

    serving_default.get_concrete_function()
    generate.get_concrete_function()
    generate_from_tokens.get_concrete_function()
    archive.add_endpoint("serving_default", serving_default)
    archive.add_endpoint("generate", generate)
    archive.add_endpoint("generate_from_tokens", generate_from_tokens)

    if model.captioner is not None:
        detokenizer = _Detokenizer(vocabulary_file)
        archive.track(detokenizer)

        @tf.function(
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")]
        )
        def caption(images):
            count = tf.shape(images)[0]
            images = _at_least_one_row(images, tf.zeros([1, size, size, 3], tf.uint8))
            floats = tf.cast(images, tf.float32) / 127.5 - 1.0  # task.from_uint8
            ids = model.captioner.generate(floats, beam_size=1)
            return {"captions": detokenizer(ids)[:count]}

        caption.get_concrete_function()
        archive.add_endpoint("caption", caption)
    return archive


def write_models_config(base_dir: str, name: str) -> str:
    """Writes (or extends) `BASE/models.config`, a TF Serving `--model_config_file`.

    `base_path` is `/models/NAME`, the folder inside the `tensorflow/serving` container when
    `BASE` is mounted at `/models`. A config that already lists `name` is left unchanged; a
    config with other models gets an entry for `name`.

    Args:
        base_dir: the folder holding one subfolder per model.
        name: the model name.

    Returns:
        The path of `models.config`.

    Example:
    >>> write_models_config("/tmp/serving", "mirrorgan")  # doctest: +SKIP
    '/tmp/serving/models.config'
    """
    path = os.path.join(base_dir, MODELS_CONFIG_FILE)
    entry = (
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "/models/{name}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
    )
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if re.search(rf'name:\s*"{re.escape(name)}"', text):
            return path
        end = text.rfind("}")
        if "model_config_list" in text and end >= 0:
            text = text[:end] + entry + text[end:]
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return path
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            "# TF Serving model config (--model_config_file). base_path is the path inside the\n"
            "# container, with the folder of this file mounted at /models. From this folder:\n"
            '# docker run -p 8501:8501 -v "$PWD":/models tensorflow/serving '
            "--model_config_file=/models/models.config\n"
            "model_config_list {\n" + entry + "}\n"
        )
    return path


PRECISIONS = ("float32", "bfloat16")


def with_bfloat16_generator(model: TextToImage) -> TextToImage:
    """A copy of a `TextToImage` whose generator computes in bfloat16 (same weights).

    The generator is rebuilt under the `mixed_bfloat16` policy (float32 weights, bfloat16
    convolutions; its image heads and attention stay float32) and given `model.generator`'s
    weights; the tokenizer, text encoder and captioner are shared. On CPUs with AVX512-BF16
    it generates faster; on the shipped `shapes` model its images are 0.2 grey levels from
    the float32 ones on average (PSNR 55 dB, 512 captions).

    Args:
        model: a `TextToImage`.

    Returns:
        A new `TextToImage`.

    Example:
    >>> fast = with_bfloat16_generator(TextToImage.from_preset("shapes"))  # doctest: +SKIP
    """
    config = {k: v for k, v in model.generator.get_config().items() if k != "dtype"}
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        generator = type(model.generator).from_config(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    generator.set_weights(model.generator.get_weights())
    return TextToImage(
        model.config, model.tokenizer, model.text_encoder, generator, model.captioner
    )


def export_saved_model(
    model,
    base_dir: str | os.PathLike,
    name: str = "mirrorgan",
    version: int = 1,
    overwrite: bool = False,
) -> str:
    """Exports a `TextToImage` as a SavedModel that TF Serving loads as it is.

    Writes `BASE/NAME/VERSION/` (saved_model.pb, variables/, assets/vocabulary.txt) atomically
    (a temporary folder renamed into place, so a watching server never sees half a model) and
    `BASE/models.config`. The generator weights are the ones `model` holds (the moving-average
    weights of a training run). See the module docstring for the signatures.

    Args:
        model: a `TextToImage`.
        base_dir: BASE, the folder served (`--model_base_path` is `BASE/NAME`).
        name: NAME, the model name in TF Serving URLs (`/v1/models/NAME:predict`).
        version: VERSION, a positive integer; TF Serving serves the highest.
        overwrite: replace an existing `BASE/NAME/VERSION`.

    Returns:
        The path of the version folder.

    Raises:
        FileExistsError: when the version exists and `overwrite` is False.
        ValueError: for a version that is not a positive integer or a name with a `/`.

    Example:
    >>> model = TextToImage.from_preset("shapes")  # doctest: +SKIP
    >>> export_saved_model(model, "/tmp/serving", "mirrorgan", version=1)  # doctest: +SKIP
    '/tmp/serving/mirrorgan/1'
    """
    if isinstance(version, bool) or int(version) != version or int(version) < 1:
        raise ValueError(f"`version` must be a positive integer; got {version!r}.")
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"`name` must be a plain folder name; got {name!r}.")
    base_dir = os.path.abspath(os.fspath(base_dir))
    model_dir = os.path.join(base_dir, name)
    path = os.path.join(model_dir, str(int(version)))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True or choose another version.")
    os.makedirs(model_dir, exist_ok=True)
    # TF Serving only loads all-digit folder names: the temporary one is ignored.
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=model_dir)
    try:
        vocabulary_file = os.path.join(tmp, "vocab", VOCABULARY_ASSET)
        os.makedirs(os.path.dirname(vocabulary_file))
        model.tokenizer.vocabulary.save(vocabulary_file)
        archive = _build_archive(model, vocabulary_file)
        saved = os.path.join(tmp, "saved_model")
        archive.write_out(saved, verbose=False)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(saved, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_models_config(base_dir, name)
    return path


def signature_names(path: str | os.PathLike) -> list[str]:
    """The signature names of a SavedModel, read from saved_model.pb without loading it.

    Args:
        path: a SavedModel folder.

    Example:
    >>> signature_names("/tmp/serving/mirrorgan/1")  # doctest: +SKIP
    ['caption', 'generate', 'generate_from_tokens', 'serving_default']
    """
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(os.fspath(path), "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    # `__saved_model_init_op` is an internal entry (table initialisation), not a signature.
    return sorted(k for k in proto.meta_graphs[0].signature_def if not k.startswith("__"))


def graph_op_types(path: str | os.PathLike) -> set[str]:
    """Every op type in a SavedModel's graph and its functions (to check for non-core ops).

    Args:
        path: a SavedModel folder.

    Example:
    >>> "StringSplit" in graph_op_types("/tmp/serving/mirrorgan/1")  # doctest: +SKIP
    """
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(os.fspath(path), "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops.update(node.op for node in function.node_def)
    return ops
