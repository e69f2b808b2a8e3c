"""`mirrorgan-tf demo`: the whole MirrorGAN chain on the built-in captioned-shapes dataset.

Pretrains STEM (DAMSM) and STREAM, scores the untrained generator, trains MirrorGAN with a
learning curve (`train(eval_every=...)`), then writes a sample grid with word-attention maps
and prints the shapes consistency score (per attribute, read from the pixels by
`evaluation.shapes_score`) of images generated from held-out test captions, next to the
untrained generator's score, chance and the targets. A `Schedule` says what it trains:
`SCHEDULES["demo"]` (`make demo`) trains every phase on one level of the dataset
(`DEMO_LEVEL`, `easy`: one large shape on a plain background), `SCHEDULES["ship"]` (`make
shipped-model`, the model of `saved_models/shapes`) trains longer on the whole distribution
(`full`), its STREAM starting on the easiest level. The scores are on the held-out captions
of the level the schedule ends on.

MirrorGAN is trained progressively: first its 64 px stage alone (with the 64 px
discriminator and STREAM on the 64 px image), then all three stages, the lower one grown from
the first run (`train(init=...)`, `Generator.load_lower_stages`). DEVIATION from the published
schedule, which trains every stage from the start: a three-stage step costs about 8x a 64 px
step on a CPU, and colour, shape and layout are decided at 64 px, so the 20 minutes go where
the caption is learnt; the upper stages then learn to refine. The GAN phases use the recipe
options of `DEMO_RECIPE` (README, "The demo", has what was measured). The `ship` schedule
goes on training the 64 px run with other options before it grows it (its `polish` phase,
`Schedule.polish_recipe`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import time
from typing import Any

from mirrorgan_tf import presets
from mirrorgan_tf.data.tokenizer import Tokenizer
from mirrorgan_tf.evaluation.shapes_score import (
    chance_score,
    held_out_captions,
    score_captioner,
    score_cell_code,
    score_model,
)
from mirrorgan_tf.task import TextToImage, resolve_preset
from mirrorgan_tf.training import run
from mirrorgan_tf.visualize import CURVE_ATTRIBUTES, save_generation_grid, save_learning_curve

# Steps of each phase at scale 1 (sized to finish within 20 minutes on 2 CPU cores).
# STREAM trains 2,000 steps (600 before: it then read the colour of real held-out images 0.92
# of the time and their position 0.88; at 2,000 1.00 and 0.99; 1,200 steps read shape 0.56
# against 0.80, and the 64 px phase learnt less through it). The 64 px phase still learns
# shape at 5,000-8,000 steps (README, "The demo"), so it gets what the grown stages give up:
# they keep the 64 px stage's colour and size best early on and lose size later (256
# held-out captions: size 0.816 after 100 steps, 0.707 after 200), so they train 50.
DEMO_STEPS = {"stem": 300, "stream": 2000, "gan_64": 5600, "gan": 50}
DEMO_BATCH = {"stem": 32, "stream": 32, "gan_64": 16, "gan": 8}
# Checkpoints per phase; the GAN phases also score a learning-curve point at each one.
DEMO_CHUNKS = {"stem": 3, "stream": 4, "gan_64": 10, "gan": 2}
# Network widths of the demo's generator and discriminators (the `shapes` preset has 8 and
# 8): 16 and 16 reached colour 0.95 / position 0.82 at 64 px where 8 and 8 stayed near 0.85
# / 0.52 (same 10,000 steps, same STEM and STREAM), for 1.5x the step time.
DEMO_SIZES: dict[str, Any] = {"gf_dim": 16, "df_dim": 16}
# The level of the built-in dataset the demo trains on and is scored on.
DEMO_LEVEL = "easy"
# Recipe options of both GAN phases (preset `training` overrides; README, "The demo"):
# c_code = mu, the published EMA decay, and a paired, tone-blind pixel loss to the caption's
# real image (`losses.centred_l1_loss`) with the generator's learning rate 1e-3, which at
# weight 100 put the objects in their place (64 px, 6,000 steps: position 0.98 against 0.66
# without) and made the images clean. The moving average warms up (`ema_warmup`): with
# 0.999 from the first step the average drew nothing through 1,800 steps, lagging a live
# generator that (in a like run) drew the caption's colour and place by 2,500; warmed up,
# the 64 px phase reached at 3,000 steps what it had reached at 5,400. The paired loss leads
# (weight 10,000: the adversarial and caption terms a thousandth of the generator's loss)
# since STEM's sentence names the shape plainly (`DEMO_STEM_RECIPE`): together they draw the
# caption's shape (64 px phase, held-out captions: 0.68 after 5,000 steps and 0.76 after
# 8,000, against 0.28 after 8,000 from the published STEM at weight 10,000, and 0.32 after
# 4,000 at weight 100 even with the shape written into the sentence exactly).
DEMO_RECIPE: dict[str, Any] = {"ca_noise": False, "ema_decay": 0.999, "ema_warmup": True,
                               "paired_loss_weight": 10000.0, "g_learning_rate": 1e-3}
# Recipe option of STEM's DAMSM pretraining: the first five dimensions of the sentence also
# learn to name the caption's shape word (`losses.keyword_code_loss`), from the text alone.
# Without it the shape lies in the sentence's faintest directions (a linear probe names it
# 0.92 of the time, 15 nearest captions 0.33; with it 1.00 and 1.00).
DEMO_STEM_RECIPE: dict[str, Any] = {"damsm_keywords": "shapes"}
# The grown phase starts from a trained generator, so its average needs no warm-up: with one
# it followed the live weights of its first steps and lost colour (0.891 after 100 steps,
# 0.977 without, README "The demo").
GROWN_OVERRIDES: dict[str, Any] = {"ema_warmup": False}
DEMO_EVAL_CAPTIONS = 256  # scored at the end
DEMO_CURVE_CAPTIONS = 128  # per learning-curve point
# What the demo is to reach at 256 px on its level's held-out captions.
DEMO_TARGETS = {"colour": 0.85, "shape": 0.6, "size": 0.8, "position": 0.85}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What `run_demo` trains: the level, the steps of each phase and the targets.

    Args:
        level: the level of the built-in dataset STEM and STREAM train on, the GAN phases end
            on, and whose held-out captions are scored (`data.shapes.LEVELS`).
        steps: steps of each phase at scale 1 (`stem`, `stream`, `gan_64`, `gan`, and
            `polish` for a schedule with that phase).
        chunks: checkpoints (and learning-curve points) per phase.
        targets: what the trained model is to reach at 256 px, per attribute.
        curriculum: levels the 64 px phase moves through before `level`, as
            `LEVEL:STEPS,...` at scale 1 (`train(curriculum=...)`); None trains on `level`.
        stream_curriculum: the same for STREAM's pretraining (`pretrain_stream`).
        recipe: preset `training` overrides of the GAN phases (the grown one with
            `GROWN_OVERRIDES` on top).
        stem_recipe: preset `training` overrides of STEM's DAMSM pretraining.
        polish_recipe: with a `polish` phase: its `training` overrides on top of `recipe` and
            `GROWN_OVERRIDES`. The polish phase continues the 64 px run with fresh
            discriminators, and the grown phase then keeps its recipe.
        sizes: preset overrides of every phase: network widths.

    Example:
        >>> SCHEDULES["ship"].level, SCHEDULES["ship"].stream_curriculum
        ('full', 'easy:3000')
    """

    level: str
    steps: dict[str, int]
    chunks: dict[str, int]
    targets: dict[str, float]
    curriculum: str | None = None
    stream_curriculum: str | None = None
    recipe: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(DEMO_RECIPE))
    stem_recipe: dict[str, Any] = dataclasses.field(
        default_factory=lambda: dict(DEMO_STEM_RECIPE)
    )
    sizes: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(DEMO_SIZES))
    polish_recipe: dict[str, Any] = dataclasses.field(default_factory=dict)


SCHEDULES: dict[str, Schedule] = {
    # `make demo`: 20 minutes on 2 CPU cores, the easiest level.
    "demo": Schedule(DEMO_LEVEL, DEMO_STEPS, DEMO_CHUNKS, DEMO_TARGETS),
    # `make shipped-model`: the model of `saved_models/shapes`, trained for the whole
    # distribution (`full`) in about 1 h 30 min on 2 AVX512-BF16 cores, with the demo's
    # widths. Two thirds of `full`'s shapes are in two-shape scenes, whose colours a bag of
    # words mixes ("a red circle ... and a blue star ..." and the same with the colours
    # exchanged read alike to the published STEM, cosine 0.857). So STEM's sentence also
    # learns what each of the nine cells holds (`damsm_cell_code_weight`, 144 dimensions,
    # hence `nef` 160; the conditioning grows with it to 128): with that code written in
    # exactly, the 64 px phase drew `full` at colour 0.90 / size 0.81 / position 0.99 after
    # 4,000 steps (README, "The shipped model"). STEM trains 6,000 steps for it (held-out
    # captions: every cell's colour right 0.82 after 2,000, 0.93 after 6,000). STREAM reads
    # the captions best after 3,000 steps on `easy` and 3,000 on `full` (shape 0.45 on real
    # `full` images against 0.27-0.37 after 3,000-9,000 on `full` alone); the 64 px phase
    # trains on `full` from the start with the paired loss at weight 100 (the oracle's
    # recipe; the demo's 10,000 fell behind on `full` with the published STEM: 64 px, 4,000
    # steps, colour 0.38 and position 0.36 against 0.59 and 0.50). With the paired loss
    # the stars came out rounded (the model shipped before: stars read as stars 0.03 of the
    # time, circles 0.96; 512 held-out captions), so from 16,000 steps (the curve is level
    # from about 8,000) the 64 px run goes on without it, against fresh discriminators
    # (`polish`; from that model's 64 px stage, 4,500 such steps took 128 held-out captions
    # from 0.862 / 0.540 colour / shape to 0.862 / 0.635). The grown stages then train 200
    # steps with the polish recipe.
    "ship": Schedule(
        "full",
        {"stem": 6000, "stream": 6000, "gan_64": 16000, "polish": 8000, "gan": 200},
        {"stem": 6, "stream": 6, "gan_64": 16, "polish": 16, "gan": 4},
        {"colour": 0.85, "shape": 0.6, "size": 0.8, "position": 0.8},
        stream_curriculum="easy:3000",
        recipe={**DEMO_RECIPE, "paired_loss_weight": 100.0},
        stem_recipe={"damsm_cell_code_weight": 1.0},
        sizes={**DEMO_SIZES, "nef": 160, "condition_dim": 128},
        polish_recipe={"paired_loss_weight": 0.0},
    ),
}
# What `saved_models/shapes` ships: enough to generate, caption, export and fine-tune from
# (the discriminators, 24.7 MB of the 33 at the demo's widths, start fresh when `train
# --init` finds none).
SHIPPED_COMPONENTS = ("text_encoder", "generator", "captioner")
GRID_CAPTIONS = [
    "a small blue square at the bottom right",
    "a large red circle in the centre",
    "a big yellow triangle in the top left corner",
    "a tiny green star on the left and a large purple diamond at the top right",
]
# Levels without small shapes or second shapes draw captions of their own kind.
DEMO_GRID_CAPTIONS = {
    "easy": [
        "a large red circle in the centre",
        "a big yellow triangle in the top left corner",
        "a huge blue square at the bottom right",
        "a large green star on the left",
    ],
    "medium": [
        "a small blue square at the bottom right",
        "a large red circle in the centre",
        "a big yellow triangle in the top left corner",
        "a tiny green star on the left",
    ],
}


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


def _combined_curve(phases: list[tuple[str, str, int]]) -> list[dict]:
    """The learning curves of consecutive runs as one, in images seen since the first step.

    Args:
        phases: `(run folder, label, images the run trained)` in training order; each run's
            rows get `train_level` = `"LEVEL, label"` and images seen offset by the runs
            before it.
    """
    rows, offset = [], 0
    for folder, label, images in phases:
        path = os.path.join(folder, "learning_curve.csv")
        if os.path.exists(path):
            with open(path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    rows.append({**row, "images_seen": int(row["images_seen"]) + offset,
                                 "train_level": f"{row['train_level']}, {label}"})
        offset += images
    return rows


def _scaled_curriculum(
    curriculum: str | None, scale: float, every: int, level: str
) -> str | None:
    """A schedule's curriculum at `scale`, its level changes on checkpoints, ending on `level`.

    Args:
        curriculum: `LEVEL:STEPS,...` at scale 1, or None.
        scale: multiplies every count; each is rounded to a multiple of `every` (at least one).
        every: the phase's checkpoint interval.
        level: the level trained until the phase's last step.

    Example:
        >>> _scaled_curriculum("easy:3000,medium:3000", 0.05, 50, "full")
        'easy:150,medium:150,full'
    """
    if not curriculum:
        return None
    entries = []
    for entry in curriculum.split(","):
        name, _, count = entry.partition(":")
        entries.append(f"{name}:{max(1, round(int(count) * scale / every)) * every}")
    return ",".join([*entries, level])


def run_demo(
    out: str = "runs/demo",
    scale: float = 1.0,
    save_to: str | None = None,
    seed: int = 0,
    num_eval: int = DEMO_EVAL_CAPTIONS,
    curve_captions: int = DEMO_CURVE_CAPTIONS,
    level: str | None = None,
    schedule: str = "demo",
    verbose: int | str = "auto",
    **overrides: Any,
) -> dict:
    """Runs the demo and returns its report (also written to `OUT/report.json`).

    Re-running resumes each phase from its last checkpoint.

    Args:
        out: folder of the runs, the grid, the learning curve and the report.
        scale: multiplies every phase's step count (0.05 for a smoke run).
        save_to: also write the trained model here with `ship_model` (saved_models/shapes).
        seed: makes the demo repeat.
        num_eval: held-out captions scored at the end.
        curve_captions: held-out captions scored at each learning-curve point.
        level: the level of the built-in dataset STEM and STREAM train on, the GAN phases
            end on, and whose held-out captions are scored (`data.shapes.LEVELS`; default:
            the schedule's).
        schedule: a name from `SCHEDULES`: `demo` (`make demo`) or `ship` (`make
            shipped-model`, the model of `saved_models/shapes`).
        verbose: Keras progress-bar verbosity.
        **overrides: `shapes` preset overrides (tests use tiny networks).

    Example:
    >>> run_demo("runs/demo", scale=0.05)  # doctest: +SKIP
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown demo schedule {schedule!r}; expected one of {list(SCHEDULES)}")
    plan = SCHEDULES[schedule]
    level = level or plan.level
    steps = {k: max(2, int(round(v * scale))) for k, v in plan.steps.items()}
    every = {k: max(1, v // plan.chunks[k]) for k, v in steps.items()}
    curriculum = _scaled_curriculum(plan.curriculum, scale, every["gan_64"], level)
    stream_curriculum = _scaled_curriculum(plan.stream_curriculum, scale, every["stream"], level)
    timings = {}
    data = f"shapes:{level}"
    training = overrides.pop("training", {})
    common = {"preset": "shapes", "data": data, "seed": seed, "verbose": verbose,
              "training": training, **plan.sizes, **overrides}
    gan_common = {**common, "eval_captions": curve_captions,
                  "training": {**plan.recipe, **training}}
    polishes = "polish" in steps
    polish_training = {**plan.recipe, **GROWN_OVERRIDES, **plan.polish_recipe, **training}
    last_64_training = polish_training if polishes else gan_common["training"]
    grown_training = {**last_64_training, **GROWN_OVERRIDES, **training}
    stem_training = {**plan.stem_recipe, **training}
    phases = 6 if polishes else 5

    start = time.perf_counter()
    print(f"[1/{phases}] DAMSM pretraining of STEM on {data}: {steps['stem']} steps")
    stem = run.pretrain_stem(out=os.path.join(out, "stem"), steps=steps["stem"],
                             batch_size=DEMO_BATCH["stem"], checkpoint_every=every["stem"],
                             **{**common, "training": stem_training})
    timings["stem_seconds"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    print(f"[2/{phases}] STREAM (captioner) pretraining on {data}: {steps['stream']} steps"
          + (f", levels {stream_curriculum}" if stream_curriculum else ""))
    stream = run.pretrain_stream(out=os.path.join(out, "stream"), steps=steps["stream"],
                                 batch_size=DEMO_BATCH["stream"],
                                 checkpoint_every=every["stream"], trunk_from=stem,
                                 curriculum=stream_curriculum, **common)
    timings["stream_seconds"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    print(f"[3/{phases}] MirrorGAN, 64 px stage alone (STEM and STREAM frozen): "
          f"{steps['gan_64']} steps" + (f", levels {curriculum}" if curriculum else ""))
    gan_64 = run.train(out=os.path.join(out, "mirrorgan_64"), stem=stem, stream=stream,
                       steps=steps["gan_64"], batch_size=DEMO_BATCH["gan_64"],
                       checkpoint_every=every["gan_64"], sample_every=every["gan_64"],
                       eval_every=every["gan_64"], curriculum=curriculum,
                       **{**gan_common, "num_stages": 1})
    timings["gan_64_seconds"] = round(time.perf_counter() - start, 1)

    last_64 = gan_64
    if polishes:
        start = time.perf_counter()
        print(f"[4/{phases}] MirrorGAN, 64 px stage continued with fresh discriminators and "
              f"{plan.polish_recipe}: {steps['polish']} steps")
        last_64 = run.train(out=os.path.join(out, "mirrorgan_64_polish"), stem=stem,
                            stream=stream, init=gan_64, fresh_discriminators=True,
                            steps=steps["polish"], batch_size=DEMO_BATCH["gan_64"],
                            checkpoint_every=every["polish"], sample_every=every["polish"],
                            eval_every=every["polish"],
                            **{**gan_common, "num_stages": 1, "training": polish_training})
        timings["polish_seconds"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    print(f"[{phases - 1}/{phases}] MirrorGAN, all stages, grown from the 64 px run: "
          f"{steps['gan']} steps")
    gan = run.train(out=os.path.join(out, "mirrorgan"), stem=stem, stream=stream,
                    init=last_64, steps=steps["gan"], batch_size=DEMO_BATCH["gan"],
                    checkpoint_every=every["gan"], sample_every=every["gan"],
                    eval_every=every["gan"],
                    **{**gan_common, "training": grown_training})
    timings["gan_seconds"] = round(time.perf_counter() - start, 1)

    print(f"[{phases}/{phases}] Scoring images generated from held-out captions")
    captions, specs = held_out_captions(num_eval, seed, level)
    # The untrained generator, with the same pretrained STEM: the baseline of the score.
    parts = presets.from_preset(resolve_preset(stem), components=["text_encoder"])
    config = parts["config"]
    untrained = TextToImage(
        config,
        Tokenizer.from_vocabulary_file(parts["vocabulary_path"], config["words_num"]),
        parts["text_encoder"],
        presets.build_component("generator", config),
    )
    before = score_model(untrained, captions, specs)
    # What STEM's cell code says of the held-out captions, when it learnt one.
    cell_code = (score_cell_code(untrained, num_eval, seed, level)
                 if stem_training.get("damsm_cell_code_weight") else None)
    model = TextToImage.from_preset(gan)
    after = score_model(model, captions, specs)
    chance = chance_score(num_eval, seed, level)
    # STREAM's reading of real held-out images: what its caption loss can teach at best.
    stream_reading = score_captioner(model, num_eval, seed, level,
                                     image_size=presets.image_sizes(model.config)[0])
    grid_captions = DEMO_GRID_CAPTIONS.get(level, GRID_CAPTIONS)
    grid = os.path.join(out, "grid.png")
    save_generation_grid(model.generate(grid_captions, seed=seed, return_attention=True),
                         grid_captions, grid)
    curve = _combined_curve([
        (gan_64, "64 px", steps["gan_64"] * DEMO_BATCH["gan_64"]),
        *([(last_64, "64 px polish", steps["polish"] * DEMO_BATCH["gan_64"])] if polishes
          else []),
        (gan, "3 stages", steps["gan"] * DEMO_BATCH["gan"]),
    ])
    curve_png = os.path.join(out, "learning_curve.png")
    if curve:
        save_learning_curve(curve, curve_png, chance=chance,
                            title=f"demo --schedule {schedule}: {curve_captions} held-out captions "
                                  f"of shapes:{level}")
    report = {
        "schedule": schedule,
        "level": level,
        "steps": steps,
        "curriculum": curriculum,
        "stream_curriculum": stream_curriculum,
        "recipe_stem": stem_training,
        "sizes": {**plan.sizes, **overrides},
        "stem_cell_code": cell_code,
        "recipe": gan_common["training"],
        "recipe_polish": polish_training if polishes else None,
        "recipe_grown": grown_training,
        "timings": timings,
        "held_out_captions": num_eval,
        "untrained": before,
        "trained": after,
        "chance": chance,
        "stream_reading_real_images": stream_reading,
        "targets": plan.targets,
        "targets_met": {k: after[k] >= v for k, v in plan.targets.items()},
        "grid": grid,
        "learning_curve": {"png": curve_png if curve else None, "rows": curve},
        "samples": [{"caption": c, "stream": s} for c, s in zip(
            grid_captions, model.caption(model.generate(grid_captions, seed=seed)),
            strict=True,
        )],
    }
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(f"\nShapes consistency on {num_eval} held-out captions of {data} "
          "(read from the pixels):")
    print(f"  {'attribute':10s} {'untrained':>10s} {'trained':>10s} {'chance':>10s} "
          f"{'target':>10s}")
    for key in (*CURVE_ATTRIBUTES, "overall"):
        target = f"{plan.targets[key]:.2f} " + ("met" if after[key] >= plan.targets[key]
                                                  else "missed") if key in plan.targets else ""
        print(f"  {key:10s} {before[key]:10.3f} {after[key]:10.3f} {chance[key]:10.3f} "
              f"{target:>10s}")
    print("  (chance: real test images scored against another scene's caption)")
    print("STREAM's captions of the real held-out images, read back: " + ", ".join(
        f"{k} {v:.3f}" for k, v in stream_reading.items()))
    if cell_code is not None:
        print("STEM's cell code of the held-out captions (what each cell holds): " + ", ".join(
            f"{k} {v:.3f}" for k, v in cell_code.items()))
    print(f"Grid with word-attention maps: {grid}")
    if curve:
        print(f"Learning curve ({len(curve)} evaluations): {curve_png}")
    if save_to is not None:
        ship_model(gan, save_to)
        print(f"Model, SavedModel and TFLite files written to {save_to}")
    return report
