"""The training runs behind `mirrorgan-tf pretrain-stem`, `pretrain-stream` and `train`.

Each run writes into one folder:

    RUN_DIR/
      run.json            the arguments of the first invocation (a resume must match)
      vocabulary.txt      the vocabulary of the data
      checkpoints/        crash-safe checkpoints; `latest` names the newest complete one
      model/              a preset folder of the newest checkpoint (what generate/export load)
      losses.csv          one row per chunk of `checkpoint_every` steps
      tensorboard/        scalars and sample images
      samples/            sample grids (MirrorGAN only)

Re-running the same command resumes from the latest checkpoint: same step count, same
optimizer state, same seed-generator state.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from mirrorgan_tf import presets
from mirrorgan_tf.data import pipeline
from mirrorgan_tf.data.shapes import CELL_CODE_CLASSES, SHAPE_WORD_GROUPS
from mirrorgan_tf.data.tokenizer import Tokenizer
from mirrorgan_tf.data.vocabulary import Vocabulary
from mirrorgan_tf.task import RUN_MODEL_DIR, TextToImage, resolve_preset
from mirrorgan_tf.training.callbacks import (
    Checkpoint,
    LearningCurve,
    SampleGrid,
    StopOnNonFiniteLoss,
)
from mirrorgan_tf.training.captioner import CaptionerTrainer
from mirrorgan_tf.training.checkpoints import latest_checkpoint, restore_checkpoint
from mirrorgan_tf.training.damsm import DAMSMTrainer, damsm_optimizer
from mirrorgan_tf.training.mirrorgan import MirrorGANTrainer, published_adam

PRECISIONS = {None: "float32", "float32": "float32", "bfloat16": "mixed_bfloat16",
              "float16": "mixed_float16"}


# CPU instructions that make bfloat16 fast (x86-64: AVX512-BF16, AMX; aarch64: BF16); without
# them oneDNN emulates it. Measured on a 2-core AVX2 EPYC (benchmarks/train_step.py, birds,
# batch 4, 2026-12-03): 76.6 s per iteration under mixed_bfloat16 against 10.1 s in float32.
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags as Linux lists them (`flags`, aarch64 `Features`), or None.

    Args:
        path: the cpuinfo file.

    Example:
        >>> "avx2" in (cpu_flags() or {"avx2"})  # doctest: +SKIP
        True
    """
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def bfloat16_is_emulated(flags: frozenset[str] | None = None) -> bool:
    """True when bfloat16 would run on a CPU without bfloat16 instructions (and no GPU).

    Args:
        flags: the CPU flags (default: `cpu_flags()`); unknown flags count as not emulated.

    Example:
        >>> bfloat16_is_emulated(frozenset({"avx2"}))  # doctest: +SKIP
        True
    """
    if tf.config.list_physical_devices("GPU"):
        return False
    flags = cpu_flags() if flags is None else flags
    return flags is not None and not any(flag in flags for flag in BFLOAT16_CPU_FLAGS)


def word_group_ids(words: str | Sequence[Sequence[str]] | None, vocabulary: Vocabulary,
                   option: str = "training.swap_negatives") -> list[list[int]] | None:
    """A recipe option naming groups of words (`training.swap_negatives`,
    `training.damsm_keywords`) as token-id groups.

    Args:
        words: None, `"shapes"` (the built-in dataset's shape words,
            `data.shapes.SHAPE_WORD_GROUPS`) or word groups, canonical word first.
        vocabulary: the run's vocabulary.
        option: the option's name, for the error messages.

    Example:
        >>> word_group_ids("shapes", shapes_vocabulary())[4]  # doctest: +SKIP
        [57]
    """
    if words is None:
        return None
    if words == "shapes":
        words = SHAPE_WORD_GROUPS
    if isinstance(words, str):
        raise ValueError(f'`{option}` must be None, "shapes" or word groups; got {words!r}.')
    ids = [[vocabulary.word_to_id(w) for w in group] for group in words]
    unknown = [w for group, group_ids in zip(words, ids, strict=True)
               for w, i in zip(group, group_ids, strict=True) if i == vocabulary.oov_id]
    if unknown:
        raise ValueError(f"`{option}` words not in the vocabulary: {unknown}.")
    return ids


def _set_precision(mixed_precision: str | None) -> None:
    if mixed_precision not in PRECISIONS:
        raise ValueError(
            f"`mixed_precision` must be one of bfloat16, float16 or None; got {mixed_precision!r}."
        )
    if mixed_precision == "bfloat16" and bfloat16_is_emulated():
        warnings.warn(
            "mixed_precision='bfloat16' on a CPU without bfloat16 instructions (no "
            + " or ".join(BFLOAT16_CPU_FLAGS) + "): TensorFlow emulates it, which is several "
            "times slower than float32 (the birds step 7.6x on a 2-core AVX2 machine). "
            "Train in float32 here.",
            stacklevel=3,
        )
    keras.mixed_precision.set_global_policy(PRECISIONS[mixed_precision])


# One strategy object per kind and process. Each new `MirroredStrategy` (or multi-worker one)
# numbers its collective all-reduces from the same (group key 1, instance key 100) again, while
# TensorFlow's collective executor caches the parameters of an instance, its tensor shape
# included, per process. A second run in the process (e.g. pretrain-stem, then pretrain-stream)
# therefore reused instance 100 for a gradient pack of another size and failed with "Shape
# mismatch in the collective instance 100 ... expected shape [396308] but another member ...
# [397744]" (tensorflow/tensorflow#62790). Reusing the strategy keeps its key counters
# running, so every all-reduce of the process has an instance key of its own.
_STRATEGIES: dict[str, tf.distribute.Strategy] = {}


def _strategy(name: str | None) -> tf.distribute.Strategy:
    """`None`: the default; `mirrored`: all local devices; `multi_worker`: from TF_CONFIG.

    A multi-worker strategy must exist before TensorFlow runs its first op: the runs create it
    first thing.
    """
    if name in (None, "none", "default"):
        return tf.distribute.get_strategy()
    if name not in ("mirrored", "multi_worker"):
        raise ValueError(f"`strategy` must be None, 'mirrored' or 'multi_worker'; got {name!r}.")
    if name not in _STRATEGIES:
        _STRATEGIES[name] = (
            tf.distribute.MirroredStrategy()
            if name == "mirrored"
            else tf.distribute.MultiWorkerMirroredStrategy()
        )
    return _STRATEGIES[name]


def _synchronize_batch_norm(strategy: tf.distribute.Strategy, *models: keras.Model) -> None:
    """Has the trained networks' BatchNorm layers use global-batch statistics under replicas.

    Without it each replica normalises with the statistics of its own slice of the batch, so
    a distributed step differs from a single-device step on the same global batch (and the
    moving statistics become averages of per-replica ones). Synchronised statistics make
    them agree; with one replica nothing changes. Keras reads `synchronized` at call time.
    """
    if strategy.num_replicas_in_sync < 2:
        return
    for model in models:
        for layer in model._flatten_layers(include_self=True, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True


def _writes_run_folder(strategy: tf.distribute.Strategy) -> bool:
    """False on non-chief workers of a multi-worker strategy: they write to a temporary folder."""
    return bool(strategy.extended.should_checkpoint)


class _Run:
    """The folder of one run and the bookkeeping shared by the three kinds of training."""

    def __init__(self, out: str, kind: str, arguments: dict[str, Any], chief: bool = True):
        self.out = out
        self.kind = kind
        self.chief = chief
        # Keras' multi-worker convention: every worker saves (the same calls on every worker),
        # the chief into the run folder, the others into a temporary folder deleted after
        # training. All of them resume from the run folder (a shared file system).
        self.write_dir = out if chief else tempfile.mkdtemp(prefix="mirrorgan-worker-")
        os.makedirs(self.write_dir, exist_ok=True)
        self.checkpoints = os.path.join(self.write_dir, "checkpoints")
        self.resume_from = os.path.join(out, "checkpoints")
        path = os.path.join(out, "run.json")
        if not chief:
            return  # the chief checks and writes run.json (a reader here could race it)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                previous = json.load(f)
            for key in ("kind", "preset", "data", "curriculum"):
                if previous.get(key) != {**arguments, "kind": kind}.get(key):
                    raise ValueError(
                        f"{out!r} holds a {previous.get('kind')} run of preset "
                        f"{previous.get('preset')!r} on {previous.get('data')!r} (curriculum "
                        f"{previous.get('curriculum')}); it cannot be resumed as a {kind} run "
                        f"of {arguments.get('preset')!r} on {arguments.get('data')!r} "
                        f"(curriculum {arguments.get('curriculum')}). Use another --out folder."
                    )
        else:
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"kind": kind, **arguments}, f, indent=2, default=str)

    @property
    def vocabulary_path(self) -> str:
        return os.path.join(self.write_dir, presets.VOCABULARY_FILE)

    @property
    def saved_vocabulary_path(self) -> str:
        """The run folder's vocabulary (what a resumed run must keep using)."""
        return os.path.join(self.out, presets.VOCABULARY_FILE)

    def save_model(self, config: dict, components: dict, step: int) -> None:
        """Writes the run's `model/` preset folder (what generate/export/train --stem load)."""
        presets.save_to_preset(
            os.path.join(self.write_dir, RUN_MODEL_DIR),
            config,
            components,
            vocabulary_path=self.vocabulary_path,
            metadata={"trained_by": self.kind, "step": step},
        )

    def fit(
        self,
        trainer: keras.Model,
        optimizers,
        datasets: list[tuple[int, Callable[[], tf.data.Dataset]]],
        checkpoint_every: int,
        save_model,
        extra_callbacks=(),
        verbose: int | str = "auto",
    ) -> dict[str, Any]:
        """Trains in chunks of `checkpoint_every` steps, resuming when possible.

        `datasets` is a schedule `[(end_step, make_dataset), ...]`: steps up to the first
        `end_step` train on the first dataset, and so on (a curriculum); the last `end_step`
        is the run's length. Each dataset is made when its segment starts, so a resumed run
        starts in the segment of its checkpoint.
        """
        steps = datasets[-1][0]
        chunk = _chunk(checkpoint_every, steps)
        chunks = math.ceil(int(steps) / chunk)
        done = 0
        last = latest_checkpoint(self.resume_from)
        if last is not None:
            state = restore_checkpoint(last, trainer, optimizers())
            done = int(state["step"])
            print(f"Resuming from {last} (step {done}).")
        if done >= chunks * chunk:
            print(f"{self.out} has already trained {done} steps; nothing to do.")
            if not self.chief:
                shutil.rmtree(self.write_dir, ignore_errors=True)
            return {"steps": done}
        callbacks = [
            StopOnNonFiniteLoss(self.checkpoints),
            Checkpoint(self.checkpoints, chunk, optimizers, on_save=save_model),
            keras.callbacks.CSVLogger(os.path.join(self.write_dir, "losses.csv"), append=True),
            keras.callbacks.TensorBoard(
                os.path.join(self.write_dir, "tensorboard"), write_graph=False
            ),
            *extra_callbacks,
        ]
        history: dict[str, list] = {}
        try:
            for k, (end, make_dataset) in enumerate(datasets):
                # The last segment runs to the end of the last (possibly partial) chunk.
                end_chunk = chunks if k == len(datasets) - 1 else end // chunk
                if end_chunk <= done // chunk:
                    continue
                result = trainer.fit(
                    make_dataset(),
                    epochs=end_chunk,
                    initial_epoch=done // chunk,
                    steps_per_epoch=chunk,
                    callbacks=callbacks,
                    verbose=verbose,
                    shuffle=False,  # the datasets shuffle themselves, seeded
                )
                done = end_chunk * chunk
                for key, values in result.history.items():
                    history.setdefault(key, []).extend(values)
        finally:
            if not self.chief:
                shutil.rmtree(self.write_dir, ignore_errors=True)
        return {"steps": chunks * chunk, "history": history}


def _chunk(checkpoint_every: int, steps: int) -> int:
    """Steps per chunk (Keras epoch) of a run: checkpoints and sample grids fall at its ends."""
    return max(1, min(int(checkpoint_every), int(steps)))


def _load_vocabulary(data: str, run: _Run) -> Vocabulary:
    # Non-chief workers read the run's vocabulary only when resuming (the chief may be
    # writing it right now on a first start); the data give the same one.
    resuming = run.chief or latest_checkpoint(run.resume_from) is not None
    if resuming and os.path.exists(run.saved_vocabulary_path):
        return Vocabulary.load(run.saved_vocabulary_path)
    vocabulary = pipeline.vocabulary_of(data)
    vocabulary.save(run.vocabulary_path)
    return vocabulary


def _batch_maker(
    data: str, config: dict, tokenizer: Tokenizer, batch_size: int, seed: int
) -> Callable[[], tf.data.Dataset]:
    """`_batches` of `data`, made when called (a curriculum segment's dataset)."""
    return lambda: _batches(data, config, tokenizer, batch_size, seed)


def _batches(
    data: str,
    config: dict,
    tokenizer: Tokenizer,
    batch_size: int,
    seed: int,
    split: str = "train",
    training: bool = True,
) -> tf.data.Dataset:
    dataset = pipeline.open_dataset(
        data, split=split, tokenizer=tokenizer, config=config, training=training, seed=seed
    )
    # The trainers need no strings (keys, raw captions); dropping them keeps every element
    # numeric, which tf.distribute needs to split batches over replicas.
    dataset = dataset.map(
        lambda x: {k: v for k, v in x.items() if k not in ("key", "caption")},
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    # drop_remainder: the mismatched-pair term and BatchNorm need full batches.
    return dataset.repeat().batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _common_setup(
    preset, data, out, kind, arguments, mixed_precision, seed, strategy, **overrides
):
    _set_precision(mixed_precision)
    keras.utils.set_random_seed(seed)
    run = _Run(
        out, kind, {"preset": preset, "data": data, **arguments}, _writes_run_folder(strategy)
    )
    vocabulary = _load_vocabulary(data, run)
    config = presets.get_config(preset, vocab_size=len(vocabulary), **overrides)
    tokenizer = Tokenizer(vocabulary, config["words_num"])
    return run, vocabulary, config, tokenizer


def _steps(steps: int | None, epochs: int | None, data: str, batch_size: int) -> int:
    if steps is not None:
        if steps < 1:
            raise ValueError(f"`steps` must be positive; got {steps}.")
        return int(steps)
    if epochs is None:
        raise ValueError("Give `steps` or `epochs`.")
    return max(1, int(epochs) * pipeline.num_examples(data, "train") // batch_size)


def pretrain_stem(
    preset: str = "shapes",
    data: str = "shapes",
    out: str = "runs/stem",
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    checkpoint_every: int = 200,
    mixed_precision: str | None = None,
    jit_compile: bool = False,
    backbone_weights: str | None = "imagenet",
    strategy: str | None = None,
    verbose: int | str = "auto",
    curriculum: str | None = None,
    **overrides: Any,
) -> str:
    """Pretrains STEM (the text encoder) and the DAMSM image encoder with the DAMSM loss.

    Args:
        preset: `shapes`, `birds` or `coco`.
        data: `shapes` (built in), an AttnGAN-layout folder, or a TFRecords prefix.
        out: the run folder (re-running resumes).
        steps: training steps (or give `epochs`).
        epochs: passes over the training split.
        batch_size: default: the preset's published DAMSM batch size.
        seed: makes the run repeat.
        checkpoint_every: steps between checkpoints (one progress bar per chunk).
        mixed_precision: None, `bfloat16` or `float16`.
        jit_compile: compile the step with XLA.
        backbone_weights: `imagenet` loads the Inception-v3 trunk's ImageNet weights through
            Keras (network at run time); ignored by the `small` backbone of `shapes`.
        strategy: None, `mirrored` or `multi_worker` (`TF_CONFIG`).
        verbose: Keras progress-bar verbosity.
        curriculum: built-in data only: levels to move through, as in `train`.
        **overrides: preset configuration overrides.

    Returns:
        The run folder; its `model/` holds the pretrained `text_encoder` and `image_encoder`.

    Example:
    >>> pretrain_stem("shapes", "shapes", "runs/stem", steps=300)  # doctest: +SKIP
    """
    arguments = {"batch_size": batch_size, "seed": seed, "curriculum": curriculum}
    # The cell code's targets are the built-in scenes' (`SceneSpec.cell_labels`).
    cell_code = overrides.get("training", {}).get("damsm_cell_code_weight")
    _check_builtin_options(data, curriculum=curriculum,
                           **{"training.damsm_cell_code_weight": cell_code})
    strategy = _strategy(strategy)  # first: a multi-worker one must precede any op
    run, _, config, tokenizer = _common_setup(
        preset, data, out, "pretrain-stem", arguments, mixed_precision, seed, strategy, **overrides
    )
    training = config["training"]
    batch_size = batch_size or training["damsm_batch_size"]
    total = _steps(steps, epochs, data, batch_size)
    schedule = _data_schedule(data, curriculum, total, checkpoint_every)
    weights = backbone_weights if config["image_encoder_backbone"] != "small" else None
    with strategy.scope():
        text_encoder = presets.build_component("text_encoder", config)
        image_encoder = presets.build_component("image_encoder", config, weights=weights)
        trainer = DAMSMTrainer(
            text_encoder,
            image_encoder,
            gamma1=training["damsm_gamma1"],
            gamma2=training["damsm_gamma2"],
            gamma3=training["damsm_gamma3"],
            rnn_grad_clip=training["damsm_rnn_grad_clip"],
            keyword_groups=word_group_ids(training["damsm_keywords"], tokenizer.vocabulary,
                                          "training.damsm_keywords"),
            keyword_weight=training["damsm_keyword_weight"],
            cell_code_classes=CELL_CODE_CLASSES if training["damsm_cell_code_weight"] else None,
            cell_code_weight=training["damsm_cell_code_weight"],
        )
        epoch_steps = max(1, pipeline.num_examples(data, "train") // batch_size)
        trainer.compile(
            optimizer=damsm_optimizer(
                training["damsm_learning_rate"],
                steps_per_epoch=epoch_steps,
                decay=training["damsm_lr_decay_per_epoch"],
            ),
            jit_compile=jit_compile,
        )
        trainer.optimizer.build(trainer.trainable_variables)
    _synchronize_batch_norm(strategy, text_encoder, image_encoder)

    def save_model(step: int) -> None:
        run.save_model(
            config, {"text_encoder": text_encoder, "image_encoder": image_encoder}, step
        )

    run.fit(
        trainer,
        lambda: {"optimizer": trainer.optimizer},
        [(end, _batch_maker(source, config, tokenizer, batch_size, seed))
         for end, source in schedule],
        checkpoint_every,
        save_model,
        verbose=verbose,
    )
    return out


def pretrain_stream(
    preset: str = "shapes",
    data: str = "shapes",
    out: str = "runs/stream",
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    checkpoint_every: int = 200,
    mixed_precision: str | None = None,
    jit_compile: bool = False,
    strategy: str | None = None,
    verbose: int | str = "auto",
    trunk_from: str | None = None,
    curriculum: str | None = None,
    **overrides: Any,
) -> str:
    """Pretrains STREAM (the captioner) with teacher-forced caption cross-entropy.

    Args:
        preset: `shapes`, `birds` or `coco`.
        data: `shapes`, an AttnGAN-layout folder, or a TFRecords prefix.
        out: the run folder (re-running resumes).
        steps: training steps (or give `epochs`).
        epochs: passes over the training split.
        batch_size: default: the preset's.
        seed: makes the run repeat.
        checkpoint_every: steps between checkpoints.
        mixed_precision: None, `bfloat16` or `float16`.
        jit_compile: compile the step with XLA.
        strategy: None, `mirrored` or `multi_worker`.
        verbose: Keras progress-bar verbosity.
        trunk_from: a STEM run (or preset folder) whose DAMSM image encoder has the same
            "small" trunk: STREAM's trunk starts from its weights. The published STREAM starts
            from an ImageNet ResNet-152; `shapes` has no ImageNet, and a trunk trained from
            scratch left STREAM ignoring the image for its first ~1,000 steps (caption loss on
            real, shuffled and blank images within 0.01 after 300 steps).
        curriculum: built-in data only: levels to move through, as in `train` (a STREAM of
            3,000 steps on `shapes:full` reads the shape of real held-out images 0.27 on
            every level, one on `shapes:easy` 0.96 on `easy`; README, "The shipped model").
        **overrides: preset configuration overrides.

    Returns:
        The run folder; its `model/` holds the pretrained `captioner`.

    Example:
    >>> pretrain_stream("shapes", "shapes", "runs/stream", steps=300)  # doctest: +SKIP
    """
    arguments = {"batch_size": batch_size, "seed": seed, "curriculum": curriculum}
    _check_builtin_options(data, curriculum=curriculum)
    strategy = _strategy(strategy)  # first: a multi-worker one must precede any op
    run, _, config, tokenizer = _common_setup(
        preset, data, out, "pretrain-stream", arguments, mixed_precision, seed, strategy,
        **overrides,
    )
    training = config["training"]
    batch_size = batch_size or training["stream_batch_size"]
    total = _steps(steps, epochs, data, batch_size)
    schedule = _data_schedule(data, curriculum, total, checkpoint_every)
    with strategy.scope():
        captioner = presets.build_component("captioner", config)
        if trunk_from is not None:
            _start_trunk_from(captioner, trunk_from, config)
        trainer = CaptionerTrainer(captioner)
        trainer.compile(
            optimizer=keras.optimizers.Adam(training["stream_learning_rate"]),
            jit_compile=jit_compile,
        )
        trainer.optimizer.build(trainer.trainable_variables)
    _synchronize_batch_norm(strategy, captioner)

    def save_model(step: int) -> None:
        run.save_model(config, {"captioner": captioner}, step)

    run.fit(
        trainer,
        lambda: {"optimizer": trainer.optimizer},
        [(end, _batch_maker(source, config, tokenizer, batch_size, seed))
         for end, source in schedule],
        checkpoint_every,
        save_model,
        verbose=verbose,
    )
    return out


def _check_builtin_options(data: str, **options: Any) -> None:
    """Refuses options of the built-in data (`curriculum`, `eval_every`) given for other
    data, before a run folder is written."""
    given = [f"`{name}`" for name, value in options.items() if value]
    if given and pipeline.data_kind(data) != "shapes":
        verb = "needs" if len(given) == 1 else "need"
        raise ValueError(
            f"{' and '.join(given)} {verb} the built-in data (--data shapes[:LEVEL]); "
            f"got {data!r}."
        )


def _data_schedule(
    data: str, curriculum: str | None, total: int, checkpoint_every: int
) -> list[tuple[int, str]]:
    """A run's `[(end_step, data)]`: its curriculum's levels in turn, or `data` throughout."""
    if not curriculum:
        return [(total, data)]
    return pipeline.curriculum_schedule(curriculum, total, _chunk(checkpoint_every, total))


def _start_trunk_from(captioner: keras.Model, source: str, config: dict) -> None:
    """Copies the DAMSM image encoder's "small" trunk of `source` into STREAM's encoder."""
    backbones = {config["captioner_backbone"], config["image_encoder_backbone"]}
    if backbones != {"small"}:
        raise ValueError(
            "`trunk_from` needs the 'small' backbone for both the captioner and the image "
            f"encoder; this preset has {config['captioner_backbone']!r} and "
            f"{config['image_encoder_backbone']!r}."
        )
    trunk = _load_component("image_encoder", source, config).trunk
    target = captioner.encoder.resnet
    shapes = [tuple(w.shape) for w in trunk.weights]
    if shapes != [tuple(w.shape) for w in target.weights]:
        raise ValueError(f"The image encoder trunk of {source!r} differs from STREAM's trunk.")
    target.set_weights(trunk.get_weights())


def _load_component(name: str, source: str, config: dict) -> keras.Model:
    folder = resolve_preset(source)
    path = os.path.join(folder, f"{name}.weights.h5")
    if not os.path.exists(path):
        raise ValueError(f"{source!r} holds no {name} weights ({path} is missing).")
    with open(os.path.join(folder, presets.CONFIG_FILE), encoding="utf-8") as f:
        saved = json.load(f)
    if saved["vocab_size"] != config["vocab_size"]:
        raise ValueError(
            f"{source!r} was trained with a vocabulary of {saved['vocab_size']:,} words; this "
            f"run's data has {config['vocab_size']:,}."
        )
    model = presets.build_component(name, config)
    model.load_weights(path)
    return model


def train(
    preset: str = "shapes",
    data: str = "shapes",
    out: str = "runs/mirrorgan",
    stem: str | None = None,
    stream: str | None = None,
    init: str | None = None,
    fresh_discriminators: bool = False,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    checkpoint_every: int = 200,
    sample_every: int = 200,
    sample_captions: list[str] | None = None,
    curriculum: str | None = None,
    eval_every: int | None = None,
    eval_captions: int = 128,
    mixed_precision: str | None = None,
    jit_compile: bool = False,
    strategy: str | None = None,
    verbose: int | str = "auto",
    **overrides: Any,
) -> str:
    """Trains MirrorGAN: GLAM and the discriminators, with STEM and STREAM frozen.

    Args:
        preset: `shapes`, `birds` or `coco`.
        data: `shapes`, an AttnGAN-layout folder, or a TFRecords prefix.
        out: the run folder (re-running resumes).
        stem: the pretrain-stem run (or preset folder) whose `text_encoder` to use (required).
        stream: the pretrain-stream run (or preset folder) whose `captioner` to use (required).
        init: a preset folder or run (e.g. converted published weights) to initialise the
            generator and discriminators from, for fine-tuning; optimizer state starts fresh.
            A generator with fewer stages starts this one's lower stages (progressive
            growing, `Generator.load_lower_stages`); the stages beyond start fresh. One with
            more gives its lower stages (with `num_stages=1`, a three-stage model's 64 px
            stage trains alone).
        fresh_discriminators: with `init`, start the discriminators fresh all the same (a new
            adversary for a phase that changes the generator's losses).
        steps: training steps (or give `epochs`).
        epochs: passes over the training split.
        batch_size: default: the preset's (published: 12 for birds).
        seed: makes the run repeat.
        checkpoint_every: steps between checkpoints.
        sample_every: steps between sample grids.
        sample_captions: the captions of the sample grid (default: the first test captions).
        curriculum: built-in data only: levels to move through, `LEVEL:STEPS,...,LEVEL`
            (e.g. `"easy:2000,medium:2000,full"`; `data.pipeline.curriculum_schedule`). Level
            changes must fall on checkpoints; a resumed run restarts in its checkpoint's level.
            The levels replace the one `data` names.
        eval_every: built-in data only: every this many steps, score the moving-average
            generator's shapes consistency on `eval_captions` held-out captions of the last
            level into `learning_curve.csv`, `learning_curve.png` and TensorBoard.
        eval_captions: how many held-out captions each evaluation draws.
        mixed_precision: None, `bfloat16` or `float16` (loss scaling for float16).
        jit_compile: compile the step with XLA.
        strategy: None, `mirrored` or `multi_worker`.
        verbose: Keras progress-bar verbosity.
        **overrides: preset configuration overrides.

    Returns:
        The run folder; its `model/` holds text encoder, EMA generator, discriminators and
        captioner: what `generate`, `evaluate` and `export` take.

    Example:
    >>> train("shapes", "shapes", "runs/gan", stem="runs/stem", stream="runs/stream",
    ...       steps=1000)  # doctest: +SKIP
    """
    if stem is None or stream is None:
        raise ValueError(
            "MirrorGAN trains against a pretrained STEM and STREAM: pass `stem` (a "
            "pretrain-stem run) and `stream` (a pretrain-stream run)."
        )
    arguments = {"batch_size": batch_size, "seed": seed, "stem": stem, "stream": stream,
                 "init": init, "fresh_discriminators": fresh_discriminators,
                 "curriculum": curriculum}
    _check_builtin_options(data, curriculum=curriculum, eval_every=eval_every)
    strategy = _strategy(strategy)  # first: a multi-worker one must precede any op
    run, _, config, tokenizer = _common_setup(
        preset, data, out, "train", arguments, mixed_precision, seed, strategy, **overrides
    )
    training = config["training"]
    batch_size = batch_size or training["batch_size"]
    total = _steps(steps, epochs, data, batch_size)
    schedule = _data_schedule(data, curriculum, total, checkpoint_every)
    sizes = presets.image_sizes(config)
    with strategy.scope():
        text_encoder = _load_component("text_encoder", stem, config)
        captioner = _load_component("captioner", stream, config)
        damsm = training["damsm_loss_weight"]
        image_encoder = _load_component("image_encoder", stem, config) if damsm else None
        generator = presets.build_component("generator", config)
        discriminators = [presets.build_component(f"discriminator_{s}", config) for s in sizes]
        if init is not None:
            folder = resolve_preset(init)
            source = presets.from_preset(folder, components=["generator"])["generator"]
            # Every weight of a generator with as many stages; with fewer, its lower stages
            # (progressive growing); with more, the stages this one has. Refuses another
            # configuration, residual_images included: the same weights would compute another
            # function.
            generator.load_lower_stages(source)
            for size, d in zip(sizes, discriminators, strict=True):
                path = os.path.join(folder, f"discriminator_{size}.weights.h5")
                if os.path.exists(path) and not fresh_discriminators:
                    d.load_weights(path)
        trainer = MirrorGANTrainer(
            text_encoder,
            generator,
            discriminators,
            captioner,
            image_encoder=image_encoder,
            caption_loss_weight=training["caption_loss_weight"],
            kl_loss_weight=training["kl_loss_weight"],
            damsm_loss_weight=damsm,
            paired_loss_weight=training["paired_loss_weight"],
            ema_decay=training["ema_decay"],
            ema_warmup=training["ema_warmup"],
            gamma1=training["damsm_gamma1"],
            gamma2=training["damsm_gamma2"],
            gamma3=training["damsm_gamma3"],
            seed=seed,
            ca_noise=training["ca_noise"],
            swap_negatives=word_group_ids(training["swap_negatives"], tokenizer.vocabulary),
        )
        trainer.compile(
            g_optimizer=published_adam(training["g_learning_rate"]),
            d_optimizer=published_adam(training["d_learning_rate"]),
            jit_compile=jit_compile,
        )
    # STEM, STREAM and the image encoder are frozen (BatchNorm in inference mode).
    _synchronize_batch_norm(strategy, generator, *discriminators)

    def save_model(step: int) -> None:
        components = {
            "text_encoder": text_encoder,
            "generator": trainer.ema_generator,
            "captioner": captioner,
            **{f"discriminator_{s}": d for s, d in zip(sizes, discriminators, strict=True)},
        }
        if image_encoder is not None:
            components["image_encoder"] = image_encoder
        run.save_model(config, components, step)

    if sample_captions is None:
        sample_captions = pipeline.sample_captions(data, count=4)
    task = TextToImage(config, tokenizer, text_encoder, trainer.ema_generator, captioner)
    sample_noise = tf.random.stateless_normal([len(sample_captions), config["z_dim"]], [seed, 1])
    samples = SampleGrid(
        lambda: task.generate(sample_captions, noise=sample_noise, return_attention=True),
        sample_captions,
        os.path.join(run.write_dir, "samples"),
        steps_per_epoch=_chunk(checkpoint_every, total),
        every=sample_every,
        tensorboard_dir=os.path.join(run.write_dir, "tensorboard"),
    )
    callbacks = [samples]
    if eval_every:
        callbacks.append(
            _learning_curve(task, run, schedule, eval_every, eval_captions, batch_size, seed,
                            steps_per_epoch=_chunk(checkpoint_every, total))
        )

    run.fit(
        trainer,
        lambda: {"g_optimizer": trainer.g_optimizer, "d_optimizer": trainer.d_optimizer},
        [(end, _batch_maker(source, config, tokenizer, batch_size, seed))
         for end, source in schedule],
        checkpoint_every,
        save_model,
        extra_callbacks=callbacks,
        verbose=verbose,
    )
    return out


def _learning_curve(
    task: TextToImage,
    run: _Run,
    schedule: list[tuple[int, str]],
    every: int,
    count: int,
    batch_size: int,
    seed: int,
    steps_per_epoch: int,
) -> LearningCurve:
    """The `LearningCurve` of a MirrorGAN run on the built-in data: held-out captions of the
    schedule's last level, drawn by the moving-average generator and read from the pixels,
    over all scenes and over the one-shape and two-shape scenes apart."""
    from mirrorgan_tf.evaluation.shapes_score import (
        chance_score,
        held_out_captions,
        score_model,
    )

    level = pipeline.shapes_level(schedule[-1][1])
    captions, specs = held_out_captions(count, seed, level)

    def train_level(step: int) -> str:
        # The last chunk may run past the schedule's end (a partial chunk is trained whole).
        source = next((d for end, d in schedule if step <= end), schedule[-1][1])
        return pipeline.shapes_level(source)

    return LearningCurve(
        lambda: score_model(task, captions, specs, by_scene=True),
        every,
        steps_per_epoch,
        batch_size,
        os.path.join(run.write_dir, "learning_curve.csv"),
        os.path.join(run.write_dir, "learning_curve.png"),
        train_level=train_level,
        chance=chance_score(count, seed, level),
        tensorboard_dir=os.path.join(run.write_dir, "tensorboard"),
    )
