"""`mirrorgan-tf demo`: the whole MirrorGAN chain on the built-in captioned-shapes dataset.

Pretrains STEM (DAMSM) and STREAM, scores the untrained generator, trains MirrorGAN, then
writes a sample grid with word-attention maps and prints the shapes consistency score (per
attribute, read from the pixels by `evaluation.shapes_score`) of images generated from
held-out test captions, next to the untrained generator's score.

MirrorGAN is trained progressively: first its 64 px stage alone (with the 64 px
discriminator and STREAM on the 64 px image), then all three stages, the lower one grown from
the first run (`train(init=...)`, `Generator.load_lower_stages`). DEVIATION from the published
schedule, which trains every stage from the start: a three-stage step costs about 8x a 64 px
step on a CPU, and colour, shape and layout are decided at 64 px, so the 20 minutes go where
the caption is learnt; the upper stages then learn to refine.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import numpy as np

from mirrorgan_tf import presets
from mirrorgan_tf.data.shapes import ShapesDataset, parse_caption
from mirrorgan_tf.data.tokenizer import Tokenizer
from mirrorgan_tf.evaluation.shapes_score import consistency_score
from mirrorgan_tf.task import TextToImage, resolve_preset
from mirrorgan_tf.training import run
from mirrorgan_tf.visualize import save_generation_grid

# Steps of each phase at scale 1 (sized to finish in about 20 minutes on 2 CPU cores).
DEMO_STEPS = {"stem": 300, "stream": 600, "gan_64": 2700, "gan": 300}
DEMO_BATCH = {"stem": 32, "stream": 32, "gan_64": 8, "gan": 8}
# What `saved_models/shapes` ships: enough to generate, caption, export and fine-tune from
# (the discriminators, 6.6 MB of the 11, start fresh when `train --init` finds none).
SHIPPED_COMPONENTS = ("text_encoder", "generator", "captioner")
GRID_CAPTIONS = [
    "a small blue square at the bottom right",
    "a large red circle in the centre",
    "a big yellow triangle in the top left corner",
    "a tiny green star on the left and a large purple diamond at the top right",
]


def held_out_captions(count: int, seed: int = 0) -> tuple[list[str], list]:
    """The first caption of `count` test scenes (attribute combinations unseen in training).

    Args:
        count: how many captions.
        seed: the data seed of the test split.

    Returns:
        (captions, the scenes they ask for, parsed back from the text).

    Example:
    >>> captions, specs = held_out_captions(2)
    """
    test = ShapesDataset("test", num_images=count, seed=seed, image_size=64, num_stages=1)
    captions = [test.captions(i)[0] for i in range(count)]
    return captions, [parse_caption(c) for c in captions]


def chance_score(count: int, seed: int = 0) -> dict:
    """The score of real test images shown with another scene's caption: what chance gives.

    Each of the first `count` held-out scenes is scored against the image of the next one
    (real, crisp shapes, but drawn for a different caption), so a colour is right about one
    time in eight, a position one in nine.

    Args:
        count: how many held-out scenes.
        seed: the data seed of the test split.

    Example:
    >>> chance_score(16)["colour"] < 0.5
    True
    """
    test = ShapesDataset("test", num_images=count, seed=seed, image_size=256, num_stages=1)
    _, specs = held_out_captions(count, seed)
    images = [test.image((i + 1) % count) for i in range(count)]
    return {k: round(float(v), 3) for k, v in consistency_score(images, specs).items()}


def score(model: TextToImage, captions: list[str], specs: list, batch: int = 16) -> dict:
    """Shapes consistency of `model`'s images for `captions` (seeded, so it repeats).

    Args:
        model: the text-to-image model.
        captions: the captions to draw.
        specs: the scenes they ask for.
        batch: generation batch size.

    Example:
    >>> score(model, *held_out_captions(32))  # doctest: +SKIP
    """
    images = np.concatenate(
        [
            model.generate(captions[i : i + batch], seed=i)
            for i in range(0, len(captions), batch)
        ]
    )
    result = consistency_score(images, specs)
    return {k: round(float(v), 3) for k, v in result.items()}


def ship_model(model: str, dest: str) -> str:
    """Writes a trained model as a self-contained folder: preset files plus both exports.

    `dest` receives the preset folder (`config.json`, `metadata.json`, `vocabulary.txt`, the
    `SHIPPED_COMPONENTS` weights), `serving/shapes/1/` (a TF Serving SavedModel with
    `serving/models.config`) and `tflite/mirrorgan.tflite` and `tflite/mirrorgan_float16.tflite`
    (each with its tokenization JSON). It is built beside `dest` and swapped in at the end, so
    an interrupted run leaves the previous folder intact.

    Args:
        model: a training run folder or a preset folder.
        dest: the folder to write (replaced if it exists).

    Returns:
        `dest`.

    Example:
    >>> ship_model("runs/demo/mirrorgan", "saved_models/shapes")  # doctest: +SKIP
    """
    from mirrorgan_tf.export import export

    source = resolve_preset(model)
    dest = os.path.abspath(dest)
    staging = dest + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    files = [presets.CONFIG_FILE, presets.METADATA_FILE, presets.VOCABULARY_FILE]
    files += [f"{name}.weights.h5" for name in SHIPPED_COMPONENTS]
    for name in files:
        shutil.copy2(os.path.join(source, name), os.path.join(staging, name))
    export(staging, os.path.join(staging, "serving", "shapes"), version=1)
    for quantize in ("none", "float16"):
        export(staging, os.path.join(staging, "tflite"), format="tflite", quantize=quantize)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.replace(staging, dest)
    return dest


def run_demo(
    out: str = "runs/demo",
    scale: float = 1.0,
    save_to: str | None = None,
    seed: int = 0,
    num_eval: int = 128,
    verbose: int | str = "auto",
    **overrides: Any,
) -> dict:
    """Runs the demo and returns its report (also written to `OUT/report.json`).

    Re-running resumes each phase from its last checkpoint.

    Args:
        out: folder of the three runs, the grid and the report.
        scale: multiplies every phase's step count (0.05 for a smoke run).
        save_to: also write the trained model here with `ship_model` (saved_models/shapes).
        seed: makes the demo repeat.
        num_eval: held-out captions scored.
        verbose: Keras progress-bar verbosity.
        **overrides: `shapes` preset overrides (tests use tiny networks).

    Example:
    >>> run_demo("runs/demo", scale=0.05)  # doctest: +SKIP
    """
    steps = {k: max(2, int(round(v * scale))) for k, v in DEMO_STEPS.items()}
    every = {k: max(1, v // 3) for k, v in steps.items()}
    timings = {}
    common = {"preset": "shapes", "data": "shapes", "seed": seed, "verbose": verbose, **overrides}

    start = time.perf_counter()
    print(f"[1/5] DAMSM pretraining of STEM: {steps['stem']} steps")
    stem = run.pretrain_stem(out=os.path.join(out, "stem"), steps=steps["stem"],
                             batch_size=DEMO_BATCH["stem"], checkpoint_every=every["stem"],
                             **common)
    timings["stem_seconds"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    print(f"[2/5] STREAM (captioner) pretraining: {steps['stream']} steps")
    stream = run.pretrain_stream(out=os.path.join(out, "stream"), steps=steps["stream"],
                                 batch_size=DEMO_BATCH["stream"],
                                 checkpoint_every=every["stream"], trunk_from=stem, **common)
    timings["stream_seconds"] = round(time.perf_counter() - start, 1)

    captions, specs = held_out_captions(num_eval, seed)
    # The untrained generator, with the same pretrained STEM: the baseline of the score.
    parts = presets.from_preset(resolve_preset(stem), components=["text_encoder"])
    config = parts["config"]
    untrained = TextToImage(
        config,
        Tokenizer.from_vocabulary_file(parts["vocabulary_path"], config["words_num"]),
        parts["text_encoder"],
        presets.build_component("generator", config),
    )
    before = score(untrained, captions, specs)

    start = time.perf_counter()
    print(f"[3/5] MirrorGAN, 64 px stage alone (STEM and STREAM frozen): {steps['gan_64']} steps")
    gan_64 = run.train(out=os.path.join(out, "mirrorgan_64"), stem=stem, stream=stream,
                       steps=steps["gan_64"], batch_size=DEMO_BATCH["gan_64"],
                       checkpoint_every=every["gan_64"], sample_every=every["gan_64"],
                       **{"num_stages": 1, **common})
    timings["gan_64_seconds"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    print(f"[4/5] MirrorGAN, all stages, grown from the 64 px run: {steps['gan']} steps")
    gan = run.train(out=os.path.join(out, "mirrorgan"), stem=stem, stream=stream,
                    init=gan_64, steps=steps["gan"], batch_size=DEMO_BATCH["gan"],
                    checkpoint_every=every["gan"], sample_every=every["gan"], **common)
    timings["gan_seconds"] = round(time.perf_counter() - start, 1)

    print("[5/5] Scoring images generated from held-out captions")
    model = TextToImage.from_preset(gan)
    after = score(model, captions, specs)
    grid = os.path.join(out, "grid.png")
    save_generation_grid(model.generate(GRID_CAPTIONS, seed=seed, return_attention=True),
                         GRID_CAPTIONS, grid)
    report = {
        "steps": steps,
        "timings": timings,
        "held_out_captions": num_eval,
        "untrained": before,
        "trained": after,
        "chance": chance_score(num_eval, seed),
        "grid": grid,
        "samples": [{"caption": c, "stream": s} for c, s in zip(
            GRID_CAPTIONS, model.caption(model.generate(GRID_CAPTIONS, seed=seed)), strict=True
        )],
    }
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(f"\nShapes consistency on {num_eval} held-out captions (read from the pixels):")
    chance = report["chance"]
    print(f"  {'attribute':10s} {'untrained':>10s} {'trained':>10s} {'chance':>10s}")
    for key in ("colour", "shape", "size", "position", "overall"):
        print(f"  {key:10s} {before[key]:10.3f} {after[key]:10.3f} {chance[key]:10.3f}")
    print("  (chance: real test images scored against another scene's caption)")
    print(f"Grid with word-attention maps: {grid}")
    if save_to is not None:
        ship_model(gan, save_to)
        print(f"Model, SavedModel and TFLite files written to {save_to}")
    return report
