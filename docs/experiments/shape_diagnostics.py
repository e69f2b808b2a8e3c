"""Diagnostics of why the 64 px stage does not draw the caption's shape.

What they measured is in `docs/experiments/shape_experiments.md` (summed up in the README,
"The demo").

Not part of the package: experiments of 2026-12-06, kept so that their numbers can be
reproduced. The GAN experiments train the demo's 64 px phase (GF 16, DF 16, batch 16,
c_code = mu, EMA 0.999, caption-loss weight 10 unless `--caption-loss-weight`) on
`shapes:easy` from one STEM (300 steps) and STREAM (2,000 steps), write the run's learning
curve (`RUN/learning_curve.csv`) and print the score on 256 training captions at the end:

- `baseline`: the demo's 64 px phase as it is (with `--gf-dim`, another generator width;
  `--swap-negatives`, shape-swapped captions as extra negatives, `training.swap_negatives`;
  `--init RUN`, the generator and discriminator started from the run `--out/RUN`;
  `--paired-weight W`, the paired, tone-blind pixel loss, `training.paired_loss_weight`;
  `--g-learning-rate`, the generator's; `--ema-warmup`, the warmed-up moving average,
  `training.ema_warmup`). Before 2026-12-07 the demo's phase had none of the last three;
  every run of the README's tables trained without them unless it says so.
- `oracle`: five dimensions of STEM's sentence feature are replaced by 4 x a one-hot code of
  the caption's shape word, so the generator and the discriminators' conditional heads get
  the shape exactly, as strongly as any other direction of the (norm-8) sentence.
- `centre`: the level's scenes are restricted to the centre cell (both splits), so the
  generator has one place to draw in.
- `spread`: a curriculum's second step: the whole level (nine cells), the generator and
  discriminator started from the `centre` run in the same `--out` (`train(init=...)`, fresh
  optimizer state); the README's row starts from its 6,000-step point.
- `aligned`: the cells' centres at 1/4, 1/2 and 3/4 of the image (the corners of the 4x4
  seed map) instead of 1/6, 1/2 and 5/6 (`patch_aligned_cells`).
- `patchd`, `patchcond`: the 64 px discriminator also judges each cell of its 8x8 map,
  unconditionally, and with `patchcond` against the sentence too
  (`patch_patch_discriminator`).
- `stamp`, `stampsoftmax`: stage 1 up to its 16x16 map is replaced by a "where" map (a
  sigmoid gate per cell, or a softmax over the cells) that places a "what" vector, and
  convolutions that draw it (`patch_stamp_generator`).
- `modulated`: each of stage 1's up-blocks is followed by a per-channel scale and shift
  from the text, DF-GAN-style (`patch_modulated_generator`); `modcond` adds
  `patchcond`'s discriminator.
- `coord`: after stage 1's up-blocks to 16, 32 and 64 px, a residual per-pixel MLP of the
  features, the pixel's coordinates and the text (CoordConv-style, `patch_coord_generator`).
- `twocells`: the level's scenes restricted to the centre and the top-left cells;
  `twocellsmod` with `modulated`'s generator as well.
- `grow128`: the `baseline` run in the same `--out` grown to two stages (128 px; batch 8, a
  curve point every 250 steps), as the demo grows its 64 px run.
- `layered`: stage 1's image is a mask times one flat colour (from c_code alone) plus a
  background (`patch_layered_generator`).
- `stampconv`, `stampsoftconv`: `stamp` with its "where" map a sigmoid, or a softmax over
  the cells, of a 1x1 convolution of the published stage 1's own 16x16 map; `stampcond`:
  `stampconv` with `patchcond`'s discriminator; `stampcentre`: `stampconv` on `centre`'s
  scenes; `stampspread`: the whole level again from the `stampcentre` run in the same
  `--out`, and `stampfreeze` the same with the stamp's drawing frozen
  (`patch_freeze_drawing`); `stamphardcentre`: `stampcentre` with a "where" map of one
  cell (straight-through).
- `noisyd`: every discriminator input gets Gaussian noise of std 0.25 in training
  (instance noise, `patch_instance_noise`).
- `smoothcap`: in the caption loss, STREAM re-describes the generated image blurred
  (Gaussian, std 1 px) with noise of std 0.1 added (`patch_smoothed_caption_loss`).

`places` reads the images the GAN runs `--name`s (comma-separated, under `--out`) draw
from the first caption of 900 training scenes: shape right per place, the shape of each
image's largest object, and which shapes were asked and read. A run whose generator was
patched is loaded with its patch, so it must be named by its experiment and read alone.

`where` reads the "where" map of a stamp run (`--name`, one of the `stamp*` experiments)
for the first caption of 64 training scenes, z drawn from a fixed seed: the largest
cell's share of the map's weight, the four largest cells' share, and the median number of
cells that hold half of it.

`critic` asks a GAN run's (`--name`) trained 64 px discriminator how real it finds, and how
well matched to their captions, 256 held-out `shapes:easy` scenes drawn five ways: as they
are, with the shape replaced by a circle, with the next shape of `SHAPES`, blurred (Gaussian,
radius 1.5 px), and generated by the run from the same captions (seed 0). Mean sigmoid of
the unconditional and the conditional logits, BatchNorm on the statistics of each batch of
16 as in training; `--figure` draws six scenes of each kind with their conditional reading.

`live` scores, on `--count` held-out captions, the live generator and its moving average
as one checkpoint (`--checkpoint`) of the run `--name` holds them (`--oracle` for a run of
`oracle`, whose generator reads the patched sentence).

`probe` names the shape, colour and position of 900 held-out captions (3 per scene) from
the sentence feature of the STEM of `--name` (a pretrain-stem run or model folder; with
`--stem-words`, from the mean of its word features; with `--whiten`, PCA-whitened by the
training captions' mean and covariance), by a ridge-regression linear probe and by the 15
nearest of 6,000 training captions (cosine).

`stemswap` pretrains a STEM as `baseline`'s (300 steps, batch 32, into `--out/--name`) with
an extra term in DAMSM's sentence loss: for each caption naming a shape, `--swap-weight` x
-log softmax of gamma3 x the image's cosine with [its caption, the caption with the shape
word swapped] (`patch_damsm_swaps`).

`stemkeys` pretrains a STEM the same way with the package's `training.damsm_keywords:
"shapes"` (weight `--swap-weight`): the first five dimensions of the sentence also learn to
name the caption's shape word (`losses.keyword_code_loss`). A GAN run reads it with
`--stem-name NAME` (default: `stem`, the STEM it pretrains itself).

`stembind` pretrains a STEM as the shipped model's (500 steps on `full`, batch 32, into
`--out/--name`) with an extra term in DAMSM's sentence loss: for each two-shape caption and
each word class (the colour words, the shape words), `--swap-weight` x -log softmax of
gamma3 x the image's cosine with [its caption, the caption with its two words of the class
exchanged] (`patch_damsm_exchanges`).

`stemcells` pretrains a STEM with `nef` 160 on `full` (`--steps`, batch 32, into
`--out/--name`; it resumes) with an extra term in DAMSM's loss: `--swap-weight` x the
squared error between the sentence's first 135 dimensions and `cell_codes` of the caption
(`patch_damsm_cell_code`), so that the sentence learns from the caption what each cell
holds. `cells --name STEM` reads how well it does on 900 held-out captions
(`cells_read_out`).

`celltext --loss mse|ce` trains a STEM on captions alone, no images and no DAMSM, to say
what each cell holds (`cell_text`): the squared error of `stemcells`, or the cross-entropy
of the package's cell code (`training.damsm_cell_code_weight`).

`binding` reads a model folder or run (`--name`, e.g. `saved_models/shapes`; a pretrain-stem
run for the first number alone) on two-shape scenes: the mean cosine between the STEM
sentences of two-shape training captions and of the same captions with their two colour
words exchanged (against another two-shape caption's), and, on the two-shape ones among
`--count` held-out `full` captions of data seed 1, how often the two largest objects read
from the generated image hold the requested colours as a set, the requested cells as a set,
and the requested (colour, cell) pairs.

`byshape --name MODEL [--count 512]` reads a model's images for the first `--count` held-out
`full` captions (the set of `tests/test_demo.py`) at every stage and prints each attribute's
accuracy by requested shape, size and scene kind, and what one-shape scenes' objects read as
(`by_shape_read_out`; 2026-12-07, eighth session: the seventh session's shipped model drew
stars that read as circles and diamonds); `--noise-scale S` draws with the noise times S.

`streamstars --name MODEL [--count 512]`: on the one-shape scenes among those captions, the
shape word STREAM's greedy caption of the generated image holds (any of the shape's words),
against the shape the pixel reader reads, per requested shape (`stream_against_reader`).
`rerank --name MODEL [--count 512] [--candidates 4]` draws each caption `--candidates` times
and keeps the image whose caption cross-entropy under STREAM is lowest, as a
captioner-reranked sampler would, and prints the score of the first draw and of the kept
images (`stream_rerank`; both 2026-12-08, ninth session).

`cli PATCH ARGS` runs `mirrorgan-tf ARGS` patched: `saturation`, the paired loss replaced
by `saturation_l1_loss` (`patch_saturation_paired_loss`: colours matched on the real
image's saturated pixels, saturation matched everywhere, the grey background left to the
discriminators); `scenecode`, STEM's sentence begins with an oracle code of the scene the
caption asks for, bound per shape (`patch_scene_code`, 48 dimensions); `cellcode`, with an
oracle code of what each grid cell holds (`patch_cell_code`, 135 dimensions: `--set
nef=160` and a STEM pretrained with it). A model trained so is read with the same patch,
e.g. `cli cellcode evaluate ...`.

And one without a GAN:

- `supervised`: the 64 px stage alone (or, `--decoder plain`, a DCGAN-style decoder:
  Dense -> 4x4x256, four nearest x2 + conv3x3 + BatchNorm + ReLU, conv3x3 + tanh) learns to
  draw the real image from a one-hot code of the caption's shape, colour, size and position,
  with an L1 loss ten times heavier on the object's pixels (`--object-weight`; Adam 1e-3,
  betas 0.5 / 0.999, batch 16); `--decoder coordmlp`: a per-pixel MLP of the pixel's
  coordinates and the code (three hidden layers of 64, no convolution). Prints the score on
  256 training scenes every 500 steps, then of the first 64 scenes drawn as each of the five
  shapes in turn (`forced_shapes`); `--tone-code` adds the plain background's tone to the
  code, so that the target is the image up to its jitter; `--centred` compares each image
  less its own mean colour instead (the tone unknown; as `losses.centred_l1_loss`, with
  the object found by saturation as in the rest of `supervised`). It also
  scores 256 held-out scenes (their combinations unseen) at every point. `--stem-from
  RUN` gives the decoder, instead of the one-hot code, the sentence of one of the scene's
  captions (a new draw each step, the first caption when scored) by the STEM of a
  pretrain-stem run or model folder, as the GAN's stage 1 reads it (no forced-shapes
  read-out then); with `--oracle`, that sentence as `oracle` patches it; with
  `--stem-words`, the mean of the caption's word features, rescaled to the sentence's norm
  sqrt(nef), instead of the sentence; with `--stem-embeddings`, the mean of its word
  embeddings (a bag of words; `embedding_dim` 64 in `shapes`, rescaled to norm 8 as well);
  with `--whiten`, any of them PCA-whitened by the training captions' mean and covariance
  (`stem_features`). `--cells centre` or `--cells aligned` draws the scenes of `centre` or
  `aligned` instead; `--stage1 coord` gives the 64 px stage `coord`'s MLPs.

Usage (the GAN runs resume; 0.25-0.35 s per step on a 2-core AVX2 machine, 0.12-0.18 s on
AVX512-BF16):

    python docs/experiments/shape_diagnostics.py oracle --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py centre --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py centre --out runs/diag --steps 3000 \
        --caption-loss-weight 0 --name centre_lambda0
    python docs/experiments/shape_diagnostics.py spread --out runs/diag --steps 3000
    python docs/experiments/shape_diagnostics.py aligned --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py patchd --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py patchcond --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py stampsoftmax --out runs/diag --steps 2000
    python docs/experiments/shape_diagnostics.py stamp --out runs/diag --steps 1500
    python docs/experiments/shape_diagnostics.py modulated --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py modcond --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py places --out runs/diag --name modulated
    python docs/experiments/shape_diagnostics.py coord --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py twocells --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py twocellsmod --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py baseline --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py grow128 --out runs/diag --steps 2000
    python docs/experiments/shape_diagnostics.py layered|stampconv|stampcond|stampsoftconv \
        --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py stampcentre --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py stampspread|stampfreeze --out runs/diag \
        --steps 4000
    python docs/experiments/shape_diagnostics.py where --out runs/diag --name stampcentre
    python docs/experiments/shape_diagnostics.py critic --out runs/diag --name baseline \
        --figure docs/diag_critic.png
    python docs/experiments/shape_diagnostics.py noisyd|smoothcap --out runs/diag --steps 4000
    python docs/experiments/shape_diagnostics.py baseline --out runs/diag --steps 8000 \
        --caption-loss-weight 0 --name baseline_l0
    python docs/experiments/shape_diagnostics.py baseline --out runs/diag --steps 8000 \
        --caption-loss-weight 0 --swap-negatives --name l0swap
    python docs/experiments/shape_diagnostics.py baseline --out runs/diag --steps 4000 \
        --caption-loss-weight 0 --swap-negatives --init baseline_l0 --name l0swapinit
    python docs/experiments/shape_diagnostics.py supervised --steps 4500 --decoder coordmlp \
        [--object-weight 1]
    python docs/experiments/shape_diagnostics.py supervised --steps 2500 --stage1 coord
    python docs/experiments/shape_diagnostics.py places --out runs/diag \
        --name patchcond,aligned,oracle,centre
    python docs/experiments/shape_diagnostics.py supervised --steps 2500 [--decoder plain]
    python docs/experiments/shape_diagnostics.py supervised --steps 2000 --cells centre
    python docs/experiments/shape_diagnostics.py supervised --steps 4500 --decoder plain \
        --cells centre
    python docs/experiments/shape_diagnostics.py supervised --steps 3000 --decoder plain \
        --tone-code
    python docs/experiments/shape_diagnostics.py stamphardcentre --out runs/diag --steps 4000
    python docs/experiments/shape_diagnostics.py supervised --steps 3000 [--decoder plain] \
        --centred|--tone-code
    python docs/experiments/shape_diagnostics.py supervised --steps 6000 --centred
    python docs/experiments/shape_diagnostics.py baseline --out runs/diag --steps 4000 \
        --paired-weight 10 --name paired
    python docs/experiments/shape_diagnostics.py baseline --out runs/diag --steps 4000 \
        --paired-weight 100 --name paired100
    python docs/experiments/shape_diagnostics.py baseline --out runs/diag --steps 6000 \
        --paired-weight 100 --g-learning-rate 1e-3 --name paired100lr
    python docs/experiments/shape_diagnostics.py oracle --out runs/diag --steps 4000 \
        --paired-weight 100 --g-learning-rate 1e-3 --name oraclepaired
    python docs/experiments/shape_diagnostics.py baseline --out runs/diag --steps 4000 \
        --paired-weight 10000 --g-learning-rate 1e-3 --name paired1e4
    python docs/experiments/shape_diagnostics.py oracle --out runs/diag --steps 8000 \
        --paired-weight 10000 --g-learning-rate 1e-3 --ema-warmup --name oracle1e4
    python docs/experiments/shape_diagnostics.py live --out runs/diag --name oracle1e4 \
        --checkpoint step-00008000 --count 256 --oracle
    python docs/experiments/shape_diagnostics.py supervised --steps 4000 --centred \
        --stem-from runs/diag/stem [--oracle|--stem-words|--stem-embeddings] [--whiten]
    python docs/experiments/shape_diagnostics.py live --out runs/diag --name paired1e4 \
        --checkpoint step-00002500 --count 128
    python docs/experiments/shape_diagnostics.py probe --name runs/diag/stem [--stem-words] \
        [--whiten]
    mirrorgan-tf pretrain-stem --data shapes:easy --out runs/diag/stem128 --steps 300 \
        --batch-size 128 --checkpoint-every 100 --set gf_dim=16 --set df_dim=16
    python docs/experiments/shape_diagnostics.py stemswap --out runs/diag --name stem_swap10 \
        [--swap-weight 1]
    python docs/experiments/shape_diagnostics.py supervised --steps 4000 --centred \
        --stem-from runs/diag/stem_swap10
    python docs/experiments/shape_diagnostics.py celltext --loss mse|ce --steps 4000
    python docs/experiments/shape_diagnostics.py byshape --name saved_models/shapes --count 512
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

def patch_oracle_sentence() -> None:
    """Every `TextEncoder` writes 4 x the caption's shape one-hot into sentence[:, :5]."""
    import tensorflow as tf

    from mirrorgan_tf.data.shapes import shapes_vocabulary
    from mirrorgan_tf.losses import named_groups
    from mirrorgan_tf.networks.text_encoder import TextEncoder
    from mirrorgan_tf.training import run

    # The ids of each shape's words (the parser's keywords), in the order of SHAPES.
    groups = run.word_group_ids("shapes", shapes_vocabulary())
    original = TextEncoder.call

    def call(self, token_ids, training=None):
        words, sentence = original(self, token_ids, training=training)
        shape = tf.cast(named_groups(token_ids, groups), sentence.dtype)
        return words, tf.concat([4.0 * shape, sentence[:, 5:]], axis=-1)

    TextEncoder.call = call


def patch_cells(*positions: str) -> None:
    """Every level draws only the combinations of the cells `positions`."""
    from mirrorgan_tf.data import shapes

    original = shapes._level_pool
    shapes._level_pool = lambda level, pool: tuple(
        c for c in original(level, pool) if c[3] in positions
    )


def patch_centre_only() -> None:
    """Every level draws only the combinations of the centre cell."""
    patch_cells("centre")


def patch_two_cells() -> None:
    """Every level draws only the combinations of the centre and the top-left cells."""
    patch_cells("centre", "top left")


def pixel_grid(size: int) -> np.ndarray:
    """float32 [size, size, 2]: each pixel centre's (x, y), both in [-1, 1]."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.stack(np.meshgrid(axis, axis), axis=-1)


def patch_aligned_cells() -> None:
    """Cell centres at 1/4, 1/2 and 3/4 of the image instead of 1/6, 1/2 and 5/6.

    There they sit on the nine interior corners of the generator's 4x4 seed map (and of the
    discriminators' 4x4 code), so moving a shape from one cell to the next is a shift by one
    seed cell (16 px at 64 px), which the upsampling convolutions draw with the same kernels.
    The captions, and the reader's thirds, are unchanged: 1/4 still lies in the first third.
    """
    from mirrorgan_tf.data import shapes

    original = shapes.shape_box

    def shape_box(spec, image_size):
        cx, cy, side = original(spec, image_size)
        cell = image_size / 3
        row, col = divmod(shapes.POSITIONS.index(spec.position), 3)
        return (cx + (col + 1) * image_size / 4 - (col + 0.5) * cell,
                cy + (row + 1) * image_size / 4 - (row + 0.5) * cell, side)

    shapes.shape_box = shape_box


def patch_patch_discriminator(conditional: bool = False) -> None:
    """The 64 px discriminator also judges each cell of its 8x8 map, PatchGAN-style.

    A 1x1 convolution on the 8x8 map (4 x df_dim channels after LeakyReLU; each cell sees 22
    px of the image, about one large shape) gives 64 unconditional logits per image. With
    `conditional`, the sentence tiled over the 8x8 map joins it as in the published 4x4
    head (1x1 conv to 4 x df_dim, LeakyReLU 0.2, 1x1 conv to a logit): 64 conditional
    logits, from weights shared by every cell, so "an object here has the sentence's
    shape and colour" is learnt once for the nine cells. Each head's logits become the
    published logit repeated 64 times followed by the 64 cell logits, so the global and the
    cell terms weigh the same in every BCE. The 8x8 map travels with the 4x4 code (packed
    into its channels by space-to-depth), so slices of the code (the mismatched pairs) keep
    it.
    """
    import keras
    import tensorflow as tf
    from keras import ops

    from mirrorgan_tf.networks.discriminator import Discriminator, _build_chain

    original_init = Discriminator.__init__
    original_uncond = Discriminator.unconditional_logits
    original_cond = Discriminator.conditional_logits

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if self.image_size != 64:
            return
        channels = 4 * self.df_dim
        self.patch_logits = keras.layers.Conv2D(1, 1, name="patch_logits")
        self.patch_logits.build((None, 8, 8, channels))
        if conditional:
            self.patch_cond_layers = [
                keras.layers.Conv2D(channels, 1, name="patch_cond_joint"),
                keras.layers.LeakyReLU(negative_slope=0.2),
                keras.layers.Conv2D(1, 1, name="patch_cond_logits"),
            ]
            _build_chain(self.patch_cond_layers, (None, 8, 8, channels + self.nef))

    def encode(self, images, training=None):
        x = ops.cast(images, self.compute_dtype)
        fine = None
        for layer in self.encoder_layers:
            x = layer(x, training=training)
            if x.shape[1] == 8:
                fine = x
        if not hasattr(self, "patch_logits"):
            return x
        return ops.concatenate([x, tf.nn.space_to_depth(fine, 2)], axis=-1)

    def split(self, code):
        if not hasattr(self, "patch_logits"):
            return code, None
        width = 8 * self.df_dim
        return code[..., :width], tf.nn.depth_to_space(code[..., width:], 2)

    def with_cells(logits, cells):
        cells = ops.cast(ops.reshape(cells, [-1]), "float32")
        return ops.concatenate([ops.tile(logits, [64]), cells], axis=0)

    def unconditional_logits(self, code):
        code, fine = split(self, code)
        logits = original_uncond(self, code)
        return logits if fine is None else with_cells(logits, self.patch_logits(fine))

    def conditional_logits(self, code, sentence, training=None):
        code, fine = split(self, code)
        logits = original_cond(self, code, sentence, training=training)
        if fine is None or not conditional:
            return logits
        tiled = ops.tile(ops.cast(sentence, fine.dtype)[:, None, None, :], [1, 8, 8, 1])
        x = ops.concatenate([fine, tiled], axis=-1)
        for layer in self.patch_cond_layers:
            x = layer(x)
        return with_cells(logits, x)

    Discriminator.__init__ = __init__
    Discriminator.encode = encode
    Discriminator.unconditional_logits = unconditional_logits
    Discriminator.conditional_logits = conditional_logits


def patch_stamp_generator(where: str = "gate") -> None:
    """Stage 1 draws the object with the same kernels wherever the caption puts it.

    The published stage 1 (Dense -> 4x4 seed, four up-blocks) is replaced up to its 16x16
    map: a "where" map over the 16x16 cells weights a "what" vector (a Dense of [c_code,
    z]), a "background" vector (another) is added everywhere, and two 5x5 convolutions
    (reflect-padded, BatchNorm, GLU) stamp the object's features around the chosen cells;
    the published up-blocks 3 and 4 take it to 64 px. Every layer after the "where" map is
    a convolution, so an outline learnt at one place would be drawn at any other (up to
    the cell's 4 px phase and the border padding near the edges), and a (shape, colour)
    pair seen at some places at the held-out ones. The published Dense and up-blocks 1
    and 2 are still created (and saved) but get no gradient.

    `where="gate"` (`stamp`): a sigmoid per cell from a small MLP (64 LeakyReLU units) of
    [c_code, z] and the cell's coordinates in [-1, 1], shared by the cells, so every cell
    learns on its own whether it holds the object. `where="softmax"` (`stampsoftmax`): a
    softmax over the cells of five times a Dense of [c_code, z], times 256 so that it
    averages 1. `where="conv"` (`stampconv`): a sigmoid of a 1x1 convolution of the
    published stage 1's own 16x16 map (its Dense and up-blocks 1 and 2, which learn the
    caption's place in every nine-place run), so the published pathway keeps the place and
    loses, through the one-channel bottleneck, the room to draw the outline itself.
    `where="convsoftmax"` (`stampsoftconv`): the same logits, a softmax over the cells
    (times 256, so that it averages 1), so that the map tends to one peak and the stamp
    draws one object whose outline is the stamp's, not the map's. `where="hard"`
    (`stamphardcentre`): the same logits, and the map is one cell, the largest logit's, from the
    first step (times 16), its gradient the softmax's (straight-through: Bengio et al.,
    2013), so that the object is the stamp's alone wherever it is put.
    """
    if where not in ("gate", "softmax", "conv", "convsoftmax", "hard"):
        raise ValueError(
            f"`where` must be 'gate', 'softmax', 'conv', 'convsoftmax' or 'hard'; got {where!r}"
        )
    import keras
    from keras import ops

    from mirrorgan_tf.layers.glu import GLU
    from mirrorgan_tf.layers.initializers import batch_norm
    from mirrorgan_tf.networks.discriminator import _build_chain
    from mirrorgan_tf.networks.generator import Generator

    grid = 16
    axis = np.linspace(-1.0, 1.0, grid, dtype=np.float32)
    coordinates = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1)  # [16, 16, (y, x)]
    original_init = Generator.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        channels = 4 * self.gf_dim  # the published stage 1's map at 16x16
        inputs = (None, self.condition_dim + self.z_dim)
        if where == "softmax":
            self.stamp_where = keras.layers.Dense(grid * grid, name="stamp_where")
            self.stamp_where.build(inputs)
        elif where in ("conv", "convsoftmax", "hard"):
            self.stamp_where = keras.layers.Conv2D(1, 1, name="stamp_where")
            self.stamp_where.build((None, grid, grid, channels))
        else:
            # A 1x1 convolution of [x tiled, coordinates], split into its two Dense parts.
            self.stamp_gate = [keras.layers.Dense(64, name="stamp_gate_text"),
                               keras.layers.Dense(64, use_bias=False, name="stamp_gate_xy"),
                               keras.layers.Dense(1, name="stamp_gate_out")]
            for layer, shape in zip(self.stamp_gate, (inputs, (None, 2), (None, 64)),
                                    strict=True):
                layer.build(shape)
        self.stamp_what = keras.layers.Dense(channels, name="stamp_what")
        self.stamp_background = keras.layers.Dense(channels, name="stamp_background")
        for layer in (self.stamp_what, self.stamp_background):
            layer.build(inputs)
        self.stamp_layers = []
        for index in range(2):
            self.stamp_layers += [
                keras.layers.Conv2D(2 * channels, 5, use_bias=False, name=f"stamp_conv{index}"),
                batch_norm(name=f"stamp_bn{index}"),
                GLU(name=f"stamp_glu{index}"),
            ]
        _build_chain(self.stamp_layers, (None, None, None, channels))

    def where_map(self, x, training=None):
        """[batch, 16, 16, 1]: how much of the "what" vector each cell gets."""
        if where in ("conv", "convsoftmax", "hard"):
            h = self._seed_map(x, training=training)
            for block in self.stage1_up[:2]:
                h = block(h, training=training)
            logits = self.stamp_where(h)
            if where == "conv":
                return ops.sigmoid(logits)
            weights = ops.softmax(ops.reshape(logits, (-1, grid * grid)), axis=-1)
            if where == "hard":
                chosen = ops.one_hot(ops.argmax(weights, axis=-1), grid * grid,
                                     dtype=weights.dtype)
                weights = chosen + weights - ops.stop_gradient(weights)
                return ops.reshape(16.0 * weights, (-1, grid, grid, 1))
            return ops.reshape(weights * grid * grid, (-1, grid, grid, 1))
        if where == "softmax":
            weights = ops.softmax(5.0 * self.stamp_where(x), axis=-1) * grid * grid
            return ops.reshape(weights, (-1, grid, grid, 1))
        text, xy, out = self.stamp_gate
        hidden = text(x)[:, None, None, :] + xy(ops.cast(coordinates, x.dtype))[None]
        return ops.sigmoid(out(ops.leaky_relu(hidden, 0.2)))

    def _initial_features(self, x, training=None):
        h = (where_map(self, x, training) * self.stamp_what(x)[:, None, None, :]
             + self.stamp_background(x)[:, None, None, :])
        for layer in self.stamp_layers:
            if isinstance(layer, keras.layers.Conv2D):
                h = ops.pad(h, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="reflect")
            h = layer(h, training=training)
        for block in self.stage1_up[2:]:
            h = block(h, training=training)
        return h

    original_load = Generator.load_lower_stages

    def load_lower_stages(self, source):
        """The published copy (`train(init=...)`, as `stampspread`), and the stamp's layers."""
        original_load(self, source)
        for name in ("stamp_where", "stamp_gate", "stamp_what", "stamp_background",
                     "stamp_layers"):
            if hasattr(self, name):
                mine, theirs = getattr(self, name), getattr(source, name)
                if not isinstance(mine, list):
                    mine, theirs = [mine], [theirs]
                for target, origin in zip(mine, theirs, strict=True):
                    target.set_weights(origin.get_weights())

    Generator.__init__ = __init__
    Generator._initial_features = _initial_features
    Generator.load_lower_stages = load_lower_stages
    Generator.where_map = where_map  # for inspecting a trained generator


def patch_modulated_generator() -> None:
    """Stage 1's up-blocks are modulated by the text, DF-GAN-style (Tao et al., 2022).

    After each of the four up-blocks (4 -> 64 px) the features become `h * (1 + gamma) +
    beta`, with `gamma` and `beta` (one per channel) from an MLP of [c_code, z] (Dense to
    the block's width, ReLU, Dense to twice that, the last initialised to zero, so training
    starts as the published stage 1). DF-GAN has an MLP each for the scale and the shift
    and applies them twice before each convolution; here one MLP gives both, once after
    each block. The same scale and shift apply at every pixel: the place stays the seed
    map's business, and what the sentence says reaches the convolutions that draw the
    outline wherever it is (the published stage 1 has the text only in its first Dense).
    """
    import keras
    from keras import ops

    from mirrorgan_tf.networks.generator import Generator

    original_init = Generator.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.modulation = []
        for index, block in enumerate(self.stage1_up):
            width = block.out_channels
            layers = [keras.layers.Dense(width, activation="relu", name=f"mod{index}_hidden"),
                      keras.layers.Dense(2 * width, kernel_initializer="zeros",
                                         name=f"mod{index}_affine")]
            layers[0].build((None, self.condition_dim + self.z_dim))
            layers[1].build((None, width))
            self.modulation.append(layers)

    def _initial_features(self, x, training=None):
        h = self._seed_map(x, training=training)
        for block, (hidden, affine) in zip(self.stage1_up, self.modulation, strict=True):
            h = block(h, training=training)
            gamma, beta = ops.split(affine(hidden(x))[:, None, None, :], 2, axis=-1)
            h = h * (1.0 + gamma) + beta
        return h

    Generator.__init__ = __init__
    Generator._initial_features = _initial_features


def patch_coord_generator() -> None:
    """Stage 1 draws with pixel coordinates: a residual per-pixel MLP after its last up-blocks.

    CoordConv (Liu et al., 2018, "An intriguing failing of convolutional neural networks and
    the CoordConv solution"): convolutional decoders learn slowly to draw an object at a place
    given as input, because no layer knows where it is. Here, after the up-blocks that reach
    16, 32 and 64 px, each pixel's features get `h + W3 relu(W2 relu(W1 [h, x, y] + T [c_code,
    z]))` (x, y in [-1, 1]; 64 hidden units; `W3` starts at zero, so training starts as the
    published stage 1). The first layer's units are half-planes whose offsets the text sets,
    so "a star at the caption's place" is one function of (x, y) minus the place, the same at
    every place.
    """
    import keras
    from keras import ops

    from mirrorgan_tf.networks.generator import Generator

    original_init = Generator.__init__
    hidden = 64

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.coord_mlps = {}
        for index, block in enumerate(self.stage1_up):
            width = block.out_channels
            if index >= 1:  # outputs at 16, 32 and 64 px
                layers = [
                    keras.layers.Dense(hidden, name=f"coord{index}_text"),
                    keras.layers.Dense(hidden, name=f"coord{index}_pixel"),
                    keras.layers.Dense(hidden, name=f"coord{index}_hidden"),
                    keras.layers.Dense(width, kernel_initializer="zeros",
                                       name=f"coord{index}_out"),
                ]
                layers[0].build((None, self.condition_dim + self.z_dim))
                layers[1].build((None, width + 2))
                layers[2].build((None, hidden))
                layers[3].build((None, hidden))
                self.coord_mlps[index] = layers

    def _initial_features(self, x, training=None):
        h = self._seed_map(x, training=training)
        for index, block in enumerate(self.stage1_up):
            h = block(h, training=training)
            if index not in self.coord_mlps:
                continue
            text, pixel, mid, out = self.coord_mlps[index]
            size = h.shape[1]
            grid = ops.cast(pixel_grid(size)[None], h.dtype)
            grid = ops.broadcast_to(grid, (ops.shape(h)[0], size, size, 2))
            a = ops.relu(pixel(ops.concatenate([h, grid], axis=-1))
                         + text(x)[:, None, None, :])
            h = h + out(ops.relu(mid(a)))
        return h

    Generator.__init__ = __init__
    Generator._initial_features = _initial_features


def patch_layered_generator() -> None:
    """Stage 1 draws a mask, a flat colour and a background, and composes them.

    A layered output (as LR-GAN, Yang et al., 2017, and FineGAN, Singh et al., 2019): the
    64 px image is `m * colour + (1 - m) * background`, with the mask `m` a sigmoid of a 3x3
    convolution of stage 1's features, `background` a tanh of another, and `colour` one RGB
    per image, a tanh of a Dense of c_code alone. Colour is then a direction of the text that
    the outline need not carry: the mask has to learn shape x size x place (90
    combinations), not shape x colour x size x place (720), and a held-out (shape, colour,
    place) is a mask seen with other colours. The published image head is still created
    (and saved) but gets no gradient; the later stages take the composed image's logits.
    """
    import keras
    from keras import ops

    from mirrorgan_tf.layers.blocks import conv3x3
    from mirrorgan_tf.networks.generator import Generator

    original_init = Generator.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.layer_mask = keras.layers.Conv2D(1, 3, padding="same", name="layer_mask",
                                              dtype="float32")
        self.layer_background = conv3x3(3, name="layer_background", dtype="float32")
        self.layer_colour = keras.layers.Dense(3, name="layer_colour", dtype="float32")
        for layer in (self.layer_mask, self.layer_background):
            layer.build((None, None, None, self.gf_dim))
        self.layer_colour.build((None, self.condition_dim))

    def _stage1_logits(self, h, x):
        mask = ops.sigmoid(self.layer_mask(h))
        background = ops.tanh(self.layer_background(h))
        colour = ops.tanh(self.layer_colour(ops.cast(x[:, : self.condition_dim], "float32")))
        image = mask * colour[:, None, None, :] + (1.0 - mask) * background
        image = ops.clip(image, -0.995, 0.995)
        return 0.5 * ops.log((1.0 + image) / (1.0 - image))  # atanh: the pipeline's logits

    Generator.__init__ = __init__
    Generator._stage1_logits = _stage1_logits


def patch_freeze_drawing() -> None:
    """The stamp's drawing is frozen: only the "where" pathway and the background learn.

    For `stampfreeze`, a spread from `stampcentre` in which the outline cannot be unlearnt
    while the "where" map learns the other eight places: the kernels of the "what" Dense,
    the stamp's convolutions, up-blocks 3 and 4 and the image head stop training (their
    BatchNorms still train and normalise by the batch, as in the run they come from). CA,
    the published Dense, up-blocks 1 and 2, the "where" convolution and the background
    vector train.
    """
    from mirrorgan_tf.networks.generator import Generator

    original_init = Generator.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        frozen = [self.stamp_what, self.image_heads[0]]
        frozen += [layer for layer in self.stamp_layers if not hasattr(layer, "gamma")]
        frozen += [block.conv for block in self.stage1_up[2:]]
        for layer in frozen:
            layer.trainable = False

    Generator.__init__ = __init__


def patch_instance_noise(sigma: float) -> None:
    """Every discriminator sees its input with Gaussian noise of std `sigma` added, in
    training only (instance noise: Sonderby et al., 2017; Arjovsky and Bottou, 2017).

    For `noisyd`: the trained discriminators tell generated images from real ones by
    something other than the outline (the `critic` read-out), by the look of them the
    generated images' speckled texture; noise on the real and the generated images alike
    hides fine texture, so that the outline is what is left to judge.
    """
    import tensorflow as tf

    from mirrorgan_tf.networks.discriminator import Discriminator

    original_encode = Discriminator.encode

    def encode(self, images, training=None):
        if training:
            images = images + sigma * tf.random.normal(tf.shape(images), dtype=images.dtype)
        return original_encode(self, images, training=training)

    Discriminator.encode = encode


def patch_smoothed_caption_loss(blur: float = 1.0, noise: float = 0.1) -> None:
    """STREAM re-describes the generated image blurred (Gaussian, std `blur` px) and with
    Gaussian noise of std `noise` added, in the generator's caption loss only.

    For `smoothcap`: with the caption loss, the generated objects are speckled, and the
    trained discriminator rejects them (the `critic` read-out) while accepting real images of
    the wrong shape; without it they are cleaner. A captioner that reads only what survives
    the blur and the noise cannot be satisfied by fine speckle (randomised smoothing).
    """
    import tensorflow as tf

    from mirrorgan_tf.training.mirrorgan import MirrorGANTrainer

    radius = int(np.ceil(3 * blur))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / blur) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    original = MirrorGANTrainer._caption_loss

    def _caption_loss(self, image, token_ids, lengths):
        kernel = tf.constant(np.outer(taps, taps)[:, :, None, None], image.dtype)
        kernel = tf.tile(kernel, [1, 1, 3, 1])
        padded = tf.pad(image, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
        image = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")
        image = image + noise * tf.random.normal(tf.shape(image), dtype=image.dtype)
        return original(self, image, token_ids, lengths)

    MirrorGANTrainer._caption_loss = _caption_loss


# What each experiment (or `supervised --cells`) changes before it trains.
PATCHES = {
    "oracle": patch_oracle_sentence,
    "centre": patch_centre_only,
    "twocells": patch_two_cells,
    "aligned": patch_aligned_cells,
    "patchd": patch_patch_discriminator,
    "patchcond": lambda: patch_patch_discriminator(conditional=True),
    "stamp": patch_stamp_generator,
    "stampsoftmax": lambda: patch_stamp_generator(where="softmax"),
    "stampconv": lambda: patch_stamp_generator(where="conv"),
    "stampcond": lambda: (patch_stamp_generator(where="conv"),
                          patch_patch_discriminator(conditional=True)),
    "stampcentre": lambda: (patch_stamp_generator(where="conv"), patch_centre_only()),
    "stampspread": lambda: patch_stamp_generator(where="conv"),
    "stampsoftconv": lambda: patch_stamp_generator(where="convsoftmax"),
    "stampfreeze": lambda: (patch_stamp_generator(where="conv"), patch_freeze_drawing()),
    "stamphardcentre": lambda: (patch_stamp_generator(where="hard"), patch_centre_only()),
    "modulated": patch_modulated_generator,
    "coord": patch_coord_generator,
    "layered": patch_layered_generator,
    "twocellsmod": lambda: (patch_two_cells(), patch_modulated_generator()),
    "modcond": lambda: (patch_modulated_generator(),
                        patch_patch_discriminator(conditional=True)),
    "noisyd": lambda: patch_instance_noise(0.25),
    "smoothcap": patch_smoothed_caption_loss,
}


# The experiments whose generator differs from the published one (loading needs the patch).
GENERATOR_PATCHES = ("stamp", "stampsoftmax", "stampconv", "stampcond", "stampcentre",
                     "stampspread", "stampfreeze", "stampsoftconv", "stamphardcentre",
                     "modulated", "modcond", "coord", "twocellsmod", "layered")


def first_training_captions(count: int) -> tuple[list[str], list]:
    """The first caption of each of the first `count` training scenes of `shapes:easy` (with
    whatever patch is in force), and the scenes `parse_caption` reads from them."""
    from mirrorgan_tf.data.shapes import ShapesDataset, parse_caption

    train = ShapesDataset("train", num_images=count, image_size=64, num_stages=1, level="easy")
    captions = [train.captions(i)[0] for i in range(len(train))]
    return captions, [parse_caption(c) for c in captions]


def with_shape(scene, shape: str):
    """`scene` (one shape) with its shape replaced by `shape`; the rest as it was."""
    import dataclasses

    from mirrorgan_tf.data.shapes import SceneSpec

    return SceneSpec((dataclasses.replace(scene.shapes[0], shape=shape),), scene.background,
                     scene.background_seed)


def one_hot_codes(scenes) -> np.ndarray:
    """[N, 24]: shape, colour, size and position one-hot, each 4 (norm 8, as the sentence)."""
    from mirrorgan_tf.data.shapes import COLOURS, POSITIONS, SHAPES, SIZES

    codes = np.zeros([len(scenes), 24], np.float32)
    for row, scene in enumerate(scenes):
        spec = scene.shapes[0]
        codes[row, SHAPES.index(spec.shape)] = 4
        codes[row, 5 + list(COLOURS).index(spec.colour)] = 4
        codes[row, 13 + SIZES.index(spec.size)] = 4
        codes[row, 15 + POSITIONS.index(spec.position)] = 4
    return codes


def stem_features(folder: str, feature: str = "sentence", whiten: bool = False):
    """A function of captions -> [N, D] numpy features by the STEM of a pretrain-stem run or
    model folder: its sentence feature (`feature="sentence"`, D = nef), the mean of its word
    features (`"words"`, D = nef) or the mean of its word embeddings (`"embeddings"`, the
    LSTM's inputs, D = `embedding_dim`: a bag of words).

    `whiten`: the features are PCA-whitened with the mean and covariance of the captions of
    the first `features` call (the training captions), each direction at unit variance, so
    a faint direction (the shape's) counts as much as a strong one (the place's)."""
    import tensorflow as tf

    from mirrorgan_tf import presets
    from mirrorgan_tf.data.tokenizer import Tokenizer
    from mirrorgan_tf.task import resolve_preset

    parts = presets.from_preset(resolve_preset(folder), components=["text_encoder"])
    tokenizer = Tokenizer.from_vocabulary_file(parts["vocabulary_path"],
                                               parts["config"]["words_num"])

    def features(captions) -> np.ndarray:
        chunks = []
        for k in range(0, len(captions), 1024):
            token_ids = tokenizer(tf.constant(captions[k:k + 1024]))[0]
            if feature == "embeddings":
                per_word = parts["text_encoder"].embedding(token_ids)
            else:
                per_word, sentence = parts["text_encoder"](token_ids, training=False)
            if feature != "sentence":  # [B, T, D]: the mean over the caption's words
                mask = tf.cast(tf.not_equal(token_ids, 0), per_word.dtype)[:, :, None]
                sentence = tf.reduce_sum(per_word * mask, 1) / tf.reduce_sum(mask, 1)
            chunks.append(sentence.numpy())
        out = np.concatenate(chunks)
        if not whiten:
            return out
        if not statistics:
            values, vectors = np.linalg.eigh(np.cov(out, rowvar=False))
            floor = 1e-4 * values.max()  # directions with no variance stay at zero
            scale = np.where(values > floor, 1 / np.sqrt(np.maximum(values, floor)), 0.0)
            statistics.update(mean=out.mean(0), map=vectors * scale)
        return ((out - statistics["mean"]) @ statistics["map"]).astype(np.float32)

    statistics: dict = {}
    return features


def supervised(steps: int, decoder: str, object_weight: float = 10.0,
               tone_code: bool = False, centred: bool = False, stem: str | None = None,
               stem_feature: str = "sentence", whiten: bool = False) -> None:
    """The `supervised` experiment (module docstring)."""

    import keras
    import tensorflow as tf

    from mirrorgan_tf.data.shapes import SHAPES, ShapesDataset
    from mirrorgan_tf.evaluation.shapes_score import consistency_score
    from mirrorgan_tf.networks.generator import Generator

    keras.utils.set_random_seed(0)
    train = ShapesDataset("train", num_images=4096, image_size=64, num_stages=1, level="easy")
    scenes = [train.scene(i) for i in range(len(train))]
    images = (np.stack([train.image(i, 64) for i in range(len(train))]) / 127.5 - 1).astype(
        np.float32
    )

    def codes_for(specs, pictures):
        # `--tone-code`: the plain background's tone (a corner pixel, x 4) as well, so the
        # target is the image up to its jitter.
        codes = one_hot_codes(specs)
        if tone_code:
            codes = np.concatenate([codes, 4 * pictures[:, 0, 0, :]], axis=-1)
        return codes

    codes = codes_for(scenes, images)
    sentences = None
    if stem is not None:
        # `--stem-from`: the decoder reads STEM's sentence of one of the scene's captions
        # (a new draw each step; the first caption when scored), as the GAN's stage 1 does.
        read = stem_features(stem, stem_feature, whiten)

        def sentences_of(dataset):
            texts = [dataset.captions(i) for i in range(len(dataset))]
            features = read([t for per_scene in texts for t in per_scene])
            # At norm sqrt(D), as `normalize_sentence` puts the sentence at sqrt(nef).
            if stem_feature != "sentence" and not whiten:
                features *= features.shape[1] ** 0.5 / np.linalg.norm(features, axis=1,
                                                                        keepdims=True)
            return features.reshape(len(texts), len(texts[0]), -1)

        sentences = sentences_of(train)  # [N, captions, nef]
        codes = sentences[:, 0]
    width = codes.shape[1]
    if decoder == "glam":
        stage1 = Generator(gf_dim=16, z_dim=32, condition_dim=32, nef=width, r_num=1,
                           num_stages=1)

        def draw(z, c, training):
            return stage1(z, c, tf.zeros([tf.shape(c)[0], 1, width]), None, training=training,
                          deterministic=True)["images"][0]
        variables = stage1.trainable_variables
    elif decoder == "coordmlp":
        # Every pixel drawn by the same MLP of its coordinates and the code (no convolution).
        grid = tf.constant(pixel_grid(64)[None])  # [1, 64, 64, 2]
        mlp = keras.Sequential([keras.layers.Dense(64, activation="relu"),
                                keras.layers.Dense(64, activation="relu"),
                                keras.layers.Dense(64, activation="relu"),
                                keras.layers.Dense(3, activation="tanh")])
        mlp.build((None, 64, 64, 2 + width + 32))

        def draw(z, c, training):
            text = tf.concat([c, z], axis=-1)[:, None, None, :]
            batch = tf.shape(c)[0]
            return mlp(tf.concat([tf.tile(grid, [batch, 1, 1, 1]),
                                  tf.tile(text, [1, 64, 64, 1])], axis=-1))
        variables = mlp.trainable_variables
    else:
        layers = [keras.layers.Dense(4 * 4 * 256), keras.layers.BatchNormalization(),
                  keras.layers.ReLU(), keras.layers.Reshape((4, 4, 256))]
        for channels in (128, 64, 32, 16):
            layers += [keras.layers.UpSampling2D(2),
                       keras.layers.Conv2D(channels, 3, padding="same", use_bias=False),
                       keras.layers.BatchNormalization(), keras.layers.ReLU()]
        layers.append(keras.layers.Conv2D(3, 3, padding="same", activation="tanh"))
        plain = keras.Sequential(layers)
        plain.build((None, width + 32))

        def draw(z, c, training):
            return plain(tf.concat([c, z], axis=-1), training=training)
        variables = plain.trainable_variables
    optimizer = keras.optimizers.Adam(1e-3, beta_1=0.5, beta_2=0.999)

    @tf.function
    def step(c, x):
        with tf.GradientTape() as tape:
            out = draw(tf.random.normal([16, 32]), c, True)
            saturation = tf.reduce_max(x, -1, keepdims=True) - tf.reduce_min(x, -1, keepdims=True)
            weight = 1.0 + (object_weight - 1.0) * tf.cast(saturation > 0.4, tf.float32)
            if centred:  # `--centred`: each image less its own mean colour
                out = out - tf.reduce_mean(out, axis=[1, 2], keepdims=True)
                x = x - tf.reduce_mean(x, axis=[1, 2], keepdims=True)
            loss = tf.reduce_mean(weight * tf.abs(out - x))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    def score(c, specs):
        out = draw(tf.zeros([len(c), 32]), c, False).numpy()
        return {k: round(float(v), 3) for k, v in consistency_score(out, specs).items()}

    test = ShapesDataset("test", num_images=256, image_size=64, num_stages=1, level="easy")
    test_scenes = [test.scene(i) for i in range(len(test))]
    test_codes = codes_for(test_scenes, np.stack([test.image(i, 64) for i in range(len(test))])
                           / 127.5 - 1)
    rng = np.random.default_rng(0)
    if sentences is not None:
        test_codes = sentences_of(test)[:, 0]
    for done in range(1, steps + 1):
        rows = rng.integers(0, len(train), 16)
        if sentences is None:
            step(codes[rows], images[rows])
        else:
            step(sentences[rows, rng.integers(0, sentences.shape[1], 16)], images[rows])
        if done % 500 == 0 or done == steps:
            print(json.dumps({"step": done, "training_scenes": score(codes[:256], scenes[:256]),
                              "held_out_scenes": score(test_codes, test_scenes)}), flush=True)
    if sentences is not None:
        return
    forced = [with_shape(s, shape) for shape in SHAPES for s in scenes[:64]]
    forced_codes = codes_for(forced, np.concatenate([images[:64]] * len(SHAPES)))
    print(json.dumps({"decoder": decoder, "forced_shapes": score(forced_codes, forced)}))


def places(out: str, names: list[str]) -> None:
    """The `places` read-out (module docstring) of the runs `out/NAME`."""
    import collections

    from mirrorgan_tf.data.shapes import POSITIONS, SHAPES
    from mirrorgan_tf.evaluation.shapes_score import read_objects, read_scene
    from mirrorgan_tf.task import TextToImage

    patched = [name for name in names if name in GENERATOR_PATCHES]
    if patched and len(names) > 1:
        raise SystemExit(f"a run with a patched generator ({patched[0]}) is read alone")
    for name in patched:
        PATCHES[name]()
    captions, specs = first_training_captions(900)
    for name in names:
        model = TextToImage.from_preset(f"{out}/{name}")
        images = [im for k in range(0, len(captions), 100)
                  for im in model.generate(captions[k:k + 100], seed=0)]
        right = collections.defaultdict(list)
        asked_read = collections.Counter()
        for image, spec in zip(images, specs, strict=True):
            right[spec.shapes[0].position].append(read_scene(image, spec)["shape"])
            objects = read_objects(image)
            asked_read[spec.shapes[0].shape, objects[0].shape if objects else "none"] += 1
        read = collections.Counter()
        for (_, got), n in asked_read.items():
            read[got] += n
        print(json.dumps({
            "run": name,
            "shape_per_place": {p: round(float(np.mean(right[p])), 2) for p in POSITIONS},
            "largest_object_read_as": dict(read),
            "asked_then_read": {s: {g: n for (a, g), n in asked_read.items() if a == s}
                                for s in SHAPES},
        }))


def where_read_out(out: str, name: str) -> None:
    """The `where` read-out (module docstring) of the stamp run `out/NAME`."""
    import tensorflow as tf

    from mirrorgan_tf.task import TextToImage

    PATCHES[name]()
    model = TextToImage.from_preset(f"{out}/{name}")
    captions, _ = first_training_captions(64)
    generator = model.generator
    _, mu, _ = generator.ca_net(model.encode_text(captions)["sentence"], training=False,
                                deterministic=True)
    noise = tf.random.stateless_normal([len(captions), generator.z_dim], seed=[0, 0])
    x = tf.concat([tf.cast(mu, noise.dtype), noise], axis=-1)
    weights = generator.where_map(x, training=False).numpy().reshape(len(captions), -1)
    shares = np.sort(weights / weights.sum(axis=1, keepdims=True), axis=1)[:, ::-1]
    print(json.dumps({
        "run": name,
        "largest_cell_share": round(float(shares[:, 0].mean()), 3),
        "top4_share": round(float(shares[:, :4].sum(axis=1).mean()), 3),
        "cells_for_half": float(np.median((np.cumsum(shares, axis=1) < 0.5).sum(axis=1) + 1)),
    }))


def critic_read_out(out: str, name: str, figure: str | None = None) -> None:
    """The `critic` read-out (module docstring) of the GAN run `out/NAME`."""

    import tensorflow as tf
    from PIL import Image, ImageFilter

    from mirrorgan_tf import presets
    from mirrorgan_tf.data.shapes import SHAPES, ShapesDataset, render
    from mirrorgan_tf.task import TextToImage, resolve_preset

    if name in PATCHES:  # its networks, its input noise, its scenes: as it was trained
        PATCHES[name]()
    folder = f"{out}/{name}"
    model = TextToImage.from_preset(folder, captioner=False)
    critic = presets.from_preset(resolve_preset(folder), components=["discriminator_64"])[
        "discriminator_64"]
    test = ShapesDataset("test", num_images=256, image_size=64, num_stages=1, level="easy")
    scenes = [test.scene(i) for i in range(len(test))]
    captions = [test.captions(i)[0] for i in range(len(test))]
    sentence = model.encode_text(captions)["sentence"]

    def next_shape(scene):
        return SHAPES[(SHAPES.index(scene.shapes[0].shape) + 1) % len(SHAPES)]

    real = [render(s, 64) for s in scenes]
    kinds = {
        "real": real,
        "real_as_circle": [render(with_shape(s, "circle"), 64) for s in scenes],
        "real_next_shape": [render(with_shape(s, next_shape(s)), 64) for s in scenes],
        "real_blurred": [np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(1.5)))
                         for image in real],
        "generated": list(model.generate(captions, seed=0)),
    }
    readings, per_image = {}, {}
    for kind, images in kinds.items():
        x = np.stack(images).astype(np.float32) / 127.5 - 1
        real, matched = [], []
        # Batches of 16 in training mode: BatchNorm on batch statistics of one kind of image,
        # as the discriminator sees real and generated batches in training.
        for k in range(0, len(x), 16):
            code = critic.encode(x[k:k + 16], training=True)
            real.append(tf.sigmoid(critic.unconditional_logits(code)))
            matched.append(tf.sigmoid(
                critic.conditional_logits(code, sentence[k:k + 16], training=True)))
        real, matched = np.concatenate(real).ravel(), np.concatenate(matched).ravel()
        per_image[kind] = matched
        readings[kind] = {"unconditional": round(float(real.mean()), 3),
                          "conditional": round(float(matched.mean()), 3)}
    print(json.dumps({"run": name, "p_real": readings}))
    if figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        columns = 6
        fig, axes = plt.subplots(len(kinds), columns, figsize=(1.7 * columns, 1.95 * len(kinds)))
        for row, (kind, images) in enumerate(kinds.items()):
            for col in range(columns):
                ax = axes[row, col]
                ax.imshow(images[col], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(f"{per_image[kind][col]:.2f}", fontsize=9)
                if col == 0:
                    ax.set_ylabel(kind.replace("_", " "), fontsize=9)
        fig.suptitle(f"{name}: the 64 px discriminator's P(real and matching the caption)",
                     fontsize=10)
        fig.tight_layout()
        fig.savefig(figure, dpi=80)


def live_read_out(out: str, name: str, checkpoint: str, count: int) -> None:
    """The `live` read-out (module docstring): the live and the moving-average generator of
    one checkpoint of the GAN run `out/name`, scored on `count` held-out captions."""
    from mirrorgan_tf import presets
    from mirrorgan_tf.evaluation.shapes_score import held_out_captions, score_model
    from mirrorgan_tf.task import TextToImage
    from mirrorgan_tf.training.mirrorgan import MirrorGANTrainer

    folder = f"{out}/{name}/model"
    model = TextToImage.from_preset(folder)
    discriminators = [presets.build_component(f"discriminator_{size}", model.config)
                      for size in presets.image_sizes(model.config)]
    trainer = MirrorGANTrainer(model.text_encoder, model.generator, discriminators,
                               model.captioner)
    trainer.load_weights(f"{out}/{name}/checkpoints/{checkpoint}/trainer.weights.h5")
    captions, specs = held_out_captions(count, 0, "easy")
    for kind, generator in (("live", trainer.generator), ("average", trainer.ema_generator)):
        task = TextToImage(model.config, model.tokenizer, model.text_encoder, generator)
        print(json.dumps({"run": name, "checkpoint": checkpoint, "generator": kind,
                          **score_model(task, captions, specs)}))


def probe_read_out(folder: str, stem_words: bool = False, whiten: bool = False) -> None:
    """The `probe` read-out (module docstring): how well a linear and a 15-nearest-neighbour
    probe name the shape, colour and position of held-out captions from STEM's sentence (or,
    `stem_words`, the mean of its word features; `whiten`, PCA-whitened)."""
    from mirrorgan_tf.data.shapes import (
        COLOURS,
        POSITIONS,
        SHAPES,
        ShapesDataset,
        parse_caption,
    )

    read = stem_features(folder, "words" if stem_words else "sentence", whiten)

    def encoded(split: str, scenes: int):
        data = ShapesDataset(split, num_images=scenes, image_size=64, num_stages=1,
                             level="easy")
        texts = [c for i in range(len(data)) for c in data.captions(i)[:3]]
        sentences = read(texts)
        firsts = [parse_caption(t).shapes[0] for t in texts]
        labels = {"shape": [SHAPES.index(f.shape) for f in firsts],
                  "colour": [list(COLOURS).index(f.colour) for f in firsts],
                  "position": [POSITIONS.index(f.position) for f in firsts]}
        return sentences, {k: np.array(v) for k, v in labels.items()}

    train_x, train_y = encoded("train", 2000)
    test_x, test_y = encoded("test", 300)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6

    def with_bias(x):
        return np.concatenate([(x - mean) / std, np.ones([len(x), 1])], axis=1)

    unit_train = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    unit_test = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    neighbours = np.argsort(-(unit_test @ unit_train.T), axis=1)[:, :15]
    result = {}
    for attribute, labels in train_y.items():
        classes = labels.max() + 1
        a = with_bias(train_x)  # ridge regression onto one-hot labels (lambda 1)
        w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ np.eye(classes)[labels])
        linear = np.argmax(with_bias(test_x) @ w, axis=1)
        votes = np.array([np.bincount(labels[row], minlength=classes).argmax()
                          for row in neighbours])
        result[attribute] = {"linear": round(float((linear == test_y[attribute]).mean()), 3),
                             "nearest_15": round(float((votes == test_y[attribute]).mean()), 3)}
    print(json.dumps({"stem": folder, "words": stem_words, "whiten": whiten, **result}))


def _negative_caption_term(trainer, image_global, sentence, other_ids, has, training):
    """Mean over the captions where `has` of -log softmax of gamma3 x the image's cosine with
    [its caption, the caption `other_ids`] (softplus of the scaled cosine difference)."""
    import tensorflow as tf

    image = tf.math.l2_normalize(image_global, -1)
    own = tf.reduce_sum(image * tf.math.l2_normalize(sentence, -1), -1)
    _, other_sentence = trainer.text_encoder(other_ids, training=training)
    other = tf.reduce_sum(image * tf.math.l2_normalize(other_sentence, -1), -1)
    has = tf.cast(has, tf.float32)
    term = tf.nn.softplus(trainer.gamma3 * (other - own))
    return tf.reduce_sum(term * has) / tf.maximum(tf.reduce_sum(has), 1.0)


def patch_damsm_swaps(weight: float) -> None:
    """DAMSM's sentence loss gains, per image, weight x -log softmax over [its caption, the
    same caption with the shape word swapped] (gamma3 x cosine), the `stemswap` experiment."""
    import tensorflow as tf

    from mirrorgan_tf.data.shapes import shapes_vocabulary
    from mirrorgan_tf.losses import swap_group_words
    from mirrorgan_tf.training import run
    from mirrorgan_tf.training.damsm import DAMSMTrainer

    groups = run.word_group_ids("shapes", shapes_vocabulary())
    original = DAMSMTrainer.damsm_losses

    def damsm_losses(self, data, training):
        word, sentence_term, image_global, sentence = original(self, data, training)
        token_ids = tf.cast(data["token_ids"], tf.int32)
        offset = tf.random.uniform(tf.shape(token_ids), 1, len(groups), dtype=tf.int32)
        swapped, any_swapped = swap_group_words(token_ids, groups, offset)
        extra = _negative_caption_term(self, image_global, sentence, swapped, any_swapped,
                                       training)
        return word, sentence_term + weight * extra, image_global, sentence

    DAMSMTrainer.damsm_losses = damsm_losses


def saturation_l1_loss(fake, real, object_weight: float = 10.0, threshold: float = 0.3):
    """L1 between generated and real images on the real image's saturated pixels (x
    `object_weight`), plus L1 between the two images' saturations (max - min over the
    channels) everywhere: blind to a grey background's tone and texture, which a `full`
    caption does not name. `threshold` in [-1, 1] units: the built-in backgrounds reach a
    saturation of 0.24, its colours at least 1.18."""
    import tensorflow as tf

    fake, real = tf.cast(fake, tf.float32), tf.cast(real, tf.float32)

    def saturation(image):
        return tf.reduce_max(image, axis=-1) - tf.reduce_min(image, axis=-1)

    real_saturation = saturation(real)
    saturated = tf.cast(real_saturation > threshold, tf.float32)
    colour = saturated * tf.reduce_mean(tf.abs(fake - real), axis=-1)
    return tf.reduce_mean(object_weight * colour + tf.abs(saturation(fake) - real_saturation))


def patch_saturation_paired_loss() -> None:
    """The paired loss (`training.paired_loss_weight`) is `saturation_l1_loss` instead of
    `losses.centred_l1_loss`: the `cli saturation` experiment."""
    from mirrorgan_tf import losses

    losses.centred_l1_loss = saturation_l1_loss


SCENE_CODE_DIMS = 48


def scene_codes(captions) -> np.ndarray:
    """[N, 48]: per shape the caption names, in the order it names them, 2 x the one-hot of
    its colour (8), shape (5), size (2) and cell (9); zeros for a missing second shape (and
    for a caption the parser cannot read)."""
    from mirrorgan_tf.data.shapes import COLOURS, POSITIONS, SHAPES, SIZES, parse_caption

    codes = np.zeros([len(captions), SCENE_CODE_DIMS], np.float32)
    for row, caption in enumerate(captions):
        scene = parse_caption(caption)
        for slot, spec in enumerate(scene.shapes[:2] if scene else ()):
            base = 24 * slot
            codes[row, base + list(COLOURS).index(spec.colour)] = 2
            codes[row, base + 8 + SHAPES.index(spec.shape)] = 2
            codes[row, base + 13 + SIZES.index(spec.size)] = 2
            codes[row, base + 15 + POSITIONS.index(spec.position)] = 2
    return codes


CELL_CODE_DIMS = 9 * (8 + 5 + 2)


def cell_codes(captions) -> np.ndarray:
    """[N, 135]: per grid cell, 3 x the one-hot of the colour (72 dims), shape (45) and size
    (18) of the shape the caption puts there, zeros for an empty cell: a scene code that is
    additive over the shapes, where `scene_codes` binds by slot."""
    from mirrorgan_tf.data.shapes import COLOURS, POSITIONS, SHAPES, SIZES, parse_caption

    codes = np.zeros([len(captions), CELL_CODE_DIMS], np.float32)
    for row, caption in enumerate(captions):
        scene = parse_caption(caption)
        for spec in scene.shapes if scene else ():
            cell = POSITIONS.index(spec.position)
            codes[row, 8 * cell + list(COLOURS).index(spec.colour)] = 3
            codes[row, 72 + 5 * cell + SHAPES.index(spec.shape)] = 3
            codes[row, 117 + 2 * cell + SIZES.index(spec.size)] = 3
    return codes


def _codes_of_token_ids(code_of_captions):
    """A function of a token-id tensor -> `code_of_captions` of the captions it spells (for
    `tf.py_function`)."""
    from mirrorgan_tf.data.shapes import shapes_vocabulary

    vocabulary = shapes_vocabulary()

    def codes(token_ids):
        return code_of_captions([vocabulary.decode(row) for row in token_ids.numpy()])

    return codes


def _patch_sentence_code(code_of_captions, dims: int) -> None:
    """Every `TextEncoder` writes `code_of_captions(its captions)` into sentence[:, :dims]."""
    import tensorflow as tf

    from mirrorgan_tf.networks.text_encoder import TextEncoder

    original = TextEncoder.call
    codes = _codes_of_token_ids(code_of_captions)

    def call(self, token_ids, training=None):
        words, sentence = original(self, token_ids, training=training)
        code = tf.py_function(codes, [token_ids], tf.float32)
        code.set_shape([None, dims])
        code = tf.cast(code, sentence.dtype)
        return words, tf.concat([code, sentence[:, dims:]], axis=-1)

    TextEncoder.call = call


def patch_scene_code() -> None:
    """STEM's sentence begins with `scene_codes` (48 dims): an oracle that says which colour,
    shape, size and cell go together, bound per shape (the `cli scenecode` experiment)."""
    _patch_sentence_code(scene_codes, SCENE_CODE_DIMS)


def patch_cell_code() -> None:
    """STEM's sentence begins with `cell_codes` (135 dims, so `nef` must exceed it): what
    each cell holds (the `cli cellcode` experiment)."""
    _patch_sentence_code(cell_codes, CELL_CODE_DIMS)


def patch_damsm_cell_code(weight: float) -> None:
    """DAMSM's loss gains weight x the squared error (summed over the 135 dimensions,
    averaged over the batch) between the first 135 dimensions of STEM's sentence and
    `cell_codes` of its captions: STEM learns from the caption what each cell holds (the
    `stemcells` experiment; needs `nef` > 135)."""
    import tensorflow as tf

    from mirrorgan_tf.training.damsm import DAMSMTrainer

    original = DAMSMTrainer.damsm_losses
    codes = _codes_of_token_ids(cell_codes)

    def damsm_losses(self, data, training):
        word, sentence_term, image_global, sentence = original(self, data, training)
        target = tf.py_function(codes, [data["token_ids"]], tf.float32)
        target.set_shape([None, CELL_CODE_DIMS])
        code = tf.cast(sentence[:, :CELL_CODE_DIMS], tf.float32)
        error = tf.reduce_mean(tf.reduce_sum(tf.square(code - target), axis=-1))
        return word, sentence_term + weight * error, image_global, sentence

    DAMSMTrainer.damsm_losses = damsm_losses


def cells_read_out(folder: str) -> None:
    """How well the first 135 sentence dimensions of a STEM (`--name`, a pretrain-stem run
    or model folder) name what each cell holds, on 900 held-out `full` captions (3 per
    scene): per cell, the cell counts as empty when its colour block's largest value is
    below 1.5 (half the code's 3), else as holding that colour, the block's shape and size;
    the fraction of captions with every cell right, and of shapes read right."""
    from mirrorgan_tf.data.shapes import ShapesDataset

    features = stem_features(folder)
    test = ShapesDataset("test", num_images=300, image_size=64, num_stages=1)
    captions = [test.captions(i)[k] for i in range(300) for k in range(3)]
    code, truth = features(captions)[:, :CELL_CODE_DIMS], cell_codes(captions)

    def read(c):
        colour = c[:, :72].reshape(-1, 9, 8)
        shape = c[:, 72:117].reshape(-1, 9, 5).argmax(-1)
        size = c[:, 117:].reshape(-1, 9, 2).argmax(-1)
        full = colour.max(-1) >= 1.5
        return full, np.where(full, colour.argmax(-1), -1), shape, size

    (full, colour, shape, size), (t_full, t_colour, t_shape, t_size) = read(code), read(truth)
    scene_right = np.all(colour == t_colour, axis=1)
    print(json.dumps({
        "stem": folder,
        "captions_with_every_cell_coloured_right": round(float(scene_right.mean()), 3),
        "occupied_cells_found": round(float(full[t_full].mean()), 3),
        "empty_cells_left_empty": round(float((~full[~t_full]).mean()), 3),
        "colour_of_shapes": round(float((colour == t_colour)[t_full].mean()), 3),
        "shape_of_shapes": round(float((shape == t_shape)[t_full].mean()), 3),
        "size_of_shapes": round(float((size == t_size)[t_full].mean()), 3),
    }))


def cell_text(loss: str, steps: int, batch: int = 32) -> None:
    """Text alone: a STEM as the `shapes` preset's but with `nef` 160 learns what each cell
    holds from the captions of 2,000 `full` training scenes (10 each), Adam 2e-3 and the
    text gradients clipped to 0.25 as in DAMSM pretraining, batch 32, no images; `loss` mse:
    the squared error to `cell_codes` (`stemcells`'s term), ce: `losses.cell_code_loss` on the
    scenes' `cell_labels` (the package's `training.damsm_cell_code_weight`). Prints, 8 times,
    on the 3,000 captions of 300 held-out scenes: the fraction with every cell's colour (or
    emptiness) right, and the colour, shape and size of the shapes read in their cells."""
    import keras
    import tensorflow as tf

    from mirrorgan_tf import losses
    from mirrorgan_tf.data.shapes import CELL_CODE_CLASSES, ShapesDataset, shapes_vocabulary
    from mirrorgan_tf.data.tokenizer import Tokenizer
    from mirrorgan_tf.networks.text_encoder import TextEncoder

    vocabulary = shapes_vocabulary()
    tokenizer = Tokenizer(vocabulary, 16)

    def table(split, count):
        data = ShapesDataset(split, num_images=count, image_size=64, num_stages=1)
        captions = [c for i in range(count) for c in data.captions(i)]
        labels = np.stack([data.scene(i).cell_labels() for i in range(count)
                           for _ in data.captions(i)])
        return tokenizer(tf.constant(captions))[0].numpy(), cell_codes(captions), labels

    train_ids, train_codes, train_labels = table("train", 2000)
    test_ids, _, test_labels = table("test", 300)
    keras.utils.set_random_seed(0)
    encoder = TextEncoder(len(vocabulary), embedding_dim=64, nef=160, normalize_sentence=True)
    optimizer = keras.optimizers.Adam(2e-3)

    def loss_of(sentence, codes, labels):
        if loss == "mse":
            return tf.reduce_mean(tf.reduce_sum(tf.square(sentence[:, :CELL_CODE_DIMS] - codes),
                                                -1))
        return losses.cell_code_loss(sentence, labels, CELL_CODE_CLASSES)

    @tf.function
    def step(ids, codes, labels):
        with tf.GradientTape() as tape:
            value = loss_of(encoder(ids, training=True)[1], codes, labels)
        gradients = [tf.convert_to_tensor(g)
                     for g in tape.gradient(value, encoder.trainable_variables)]
        gradients, _ = tf.clip_by_global_norm(gradients, 0.25)
        optimizer.apply_gradients(zip(gradients, encoder.trainable_variables, strict=True))
        return value

    def read(sentence):
        """[N, 9, 3] labels as `SceneSpec.cell_labels`, read from either code."""
        if loss == "ce":
            return losses.read_cell_code(sentence, CELL_CODE_CLASSES, 9).numpy()
        code = sentence[:, :CELL_CODE_DIMS]
        colour = code[:, :72].reshape(-1, 9, 8)
        return np.stack([np.where(colour.max(-1) >= 1.5, colour.argmax(-1), 8),
                         code[:, 72:117].reshape(-1, 9, 5).argmax(-1),
                         code[:, 117:].reshape(-1, 9, 2).argmax(-1)], -1)

    rng = np.random.default_rng(0)
    for i in range(1, steps + 1):
        rows = rng.integers(0, len(train_ids), batch)
        value = step(train_ids[rows], train_codes[rows], train_labels[rows])
        if i % max(1, steps // 8) == 0:
            right = read(encoder(test_ids, training=False)[1].numpy()) == test_labels
            occupied = test_labels[..., 0] != 8
            print(json.dumps({"step": i, "loss": round(float(value), 3), "every_cell": round(
                float(right[..., 0].all(1).mean()), 3), **{name: round(float(
                    right[..., k][occupied].mean()), 3) for k, name in enumerate(
                        ("colour", "shape", "size"))}}), flush=True)


def exchanged_words(token_ids, ids):
    """Captions with their first and last word of `ids` exchanged where those two differ,
    and which captions were changed ("a red circle and a blue star" -> "a blue circle and a
    red star" for the colour words)."""
    import tensorflow as tf

    is_word = tf.reduce_any(tf.equal(token_ids[..., None], ids), -1)
    length = tf.shape(token_ids)[1]
    first = tf.argmax(tf.cast(is_word, tf.int32), axis=1, output_type=tf.int32)
    last = length - 1 - tf.argmax(tf.cast(is_word[:, ::-1], tf.int32), axis=1,
                                  output_type=tf.int32)
    first_id = tf.gather(token_ids, first, batch_dims=1)
    last_id = tf.gather(token_ids, last, batch_dims=1)
    changed = tf.logical_and(tf.reduce_sum(tf.cast(is_word, tf.int32), 1) >= 2,
                             tf.not_equal(first_id, last_id))
    where = tf.range(length)[None]
    out = tf.where(where == first[:, None], last_id[:, None], token_ids)
    out = tf.where(where == last[:, None], first_id[:, None], out)
    return tf.where(changed[:, None], out, token_ids), changed


def patch_damsm_exchanges(weight: float) -> None:
    """DAMSM's sentence loss gains, per two-shape caption and per word class (the colour
    words, the shape words), weight x -log softmax over [its caption, the caption with its
    two words of the class exchanged] (gamma3 x the image's cosine): the `stembind`
    experiment, a sentence that must say which colour and which shape go where."""
    import tensorflow as tf

    from mirrorgan_tf.data.shapes import COLOURS, shapes_vocabulary
    from mirrorgan_tf.training import run
    from mirrorgan_tf.training.damsm import DAMSMTrainer

    vocabulary = shapes_vocabulary()
    shape_ids = [i for group in run.word_group_ids("shapes", vocabulary) for i in group]
    colour_ids = [i for group in run.word_group_ids([[c] for c in COLOURS], vocabulary)
                  for i in group]
    classes = [tf.constant(colour_ids, tf.int32), tf.constant(shape_ids, tf.int32)]
    original = DAMSMTrainer.damsm_losses

    def damsm_losses(self, data, training):
        word, sentence_term, image_global, sentence = original(self, data, training)
        token_ids = tf.cast(data["token_ids"], tf.int32)
        extra = 0.0
        for ids in classes:
            exchanged, changed = exchanged_words(token_ids, ids)
            extra += _negative_caption_term(self, image_global, sentence, exchanged, changed,
                                            training)
        return word, sentence_term + weight * extra, image_global, sentence

    DAMSMTrainer.damsm_losses = damsm_losses


def binding_read_out(folder: str, count: int) -> None:
    """Two-shape scenes: does a model's STEM bind colours to shapes, and its generator?

    Prints the mean cosine between the sentences of two-shape training captions and of the
    same captions with their two colour words exchanged (1: the sentence is a bag of words),
    against that of another two-shape caption; then, on the two-shape captions among the
    first `count` held-out `full` captions of data seed 1, how often the two largest objects
    the pixel reader finds hold the requested colours as a set, the requested cells as a set,
    and the requested (colour, cell) pairs.
    """
    import re

    from mirrorgan_tf.data.shapes import COLOURS, ShapesDataset
    from mirrorgan_tf.evaluation.shapes_score import held_out_captions, read_objects
    from mirrorgan_tf.task import TextToImage, resolve_preset

    data = ShapesDataset("train", num_images=400, image_size=64, num_stages=1)
    captions, swapped = [], []
    for i in range(len(data)):
        caption = data.captions(i)[0]
        named = [w for w in caption.split() if w in COLOURS]
        if len(data.scene(i).shapes) != 2 or len(set(named)) != 2 or len(named) != 2:
            continue
        a, b = named
        exchanged = re.sub(rf"\b{a}\b", "@", caption)
        exchanged = re.sub(rf"\b{b}\b", a, exchanged).replace("@", b)
        captions.append(caption)
        swapped.append(exchanged)

    features = stem_features(folder)
    own, other = (x / np.linalg.norm(x, axis=1, keepdims=True)
                  for x in (features(captions), features(swapped)))
    print(f"{len(captions)} two-shape captions: cosine with the colours exchanged "
          f"{np.mean(np.sum(own * other, 1)):.3f}, with another two-shape caption "
          f"{np.mean(np.sum(own * np.roll(own, 1, axis=0), 1)):.3f}")
    if not os.path.exists(os.path.join(resolve_preset(folder), "generator.weights.h5")):
        return  # a pretrain-stem run: no images to read
    model = TextToImage.from_preset(folder, captioner=False)
    held_out, specs = held_out_captions(count, 1, "full")
    two = [i for i, spec in enumerate(specs) if spec is not None and len(spec.shapes) == 2]
    texts = [held_out[i] for i in two]
    images = np.concatenate([model.generate(texts[i : i + 16], seed=i)
                             for i in range(0, len(texts), 16)])
    hits = {"colours": 0, "cells": 0, "pairs": 0}
    for image, i in zip(images, two, strict=True):
        found, wanted = read_objects(image)[:2], specs[i].shapes
        for key, attrs in (("colours", ("colour",)), ("cells", ("position",)),
                           ("pairs", ("colour", "position"))):
            hits[key] += (sorted(tuple(getattr(o, a) for a in attrs) for o in found)
                          == sorted(tuple(getattr(w, a) for a in attrs) for w in wanted))
    print(f"{len(two)} two-shape held-out captions: the two largest objects hold the colours "
          f"{hits['colours'] / len(two):.3f}, the cells {hits['cells'] / len(two):.3f}, the "
          f"(colour, cell) pairs {hits['pairs'] / len(two):.3f}")


def by_shape_read_out(folder: str, count: int, noise_scale: float = 1.0) -> None:
    """Which requested shapes a model draws so that they read right, stage by stage.

    Scores the first `count` held-out `full` captions (`held_out_captions(count)`, as
    `tests/test_demo.py`) at every stage's resolution and prints, per stage, the fraction of
    requested shapes read with each attribute right: all, by requested shape, by size and by
    scene kind (one or two shapes), and by scene kind and size; then, for one-shape scenes
    at the last stage, what the largest object reads as, per requested shape. The noise is
    `noise_scale` times the seeded noise of `score_model`.
    """
    import collections

    from mirrorgan_tf.evaluation.shapes_score import (
        ATTRIBUTES,
        held_out_captions,
        read_objects,
        read_scene,
    )
    from mirrorgan_tf.task import TextToImage, noise_for_seeds

    model = TextToImage.from_preset(folder, captioner=False)
    captions, specs = held_out_captions(count, level="full")
    tallies, confusion = {}, collections.Counter()
    for i in range(0, count, 16):
        batch = captions[i : i + 16]
        noise = noise_scale * noise_for_seeds([i] * len(batch), model.config["z_dim"])
        stages = model.generate(batch, noise=noise, return_attention=True)["images"]
        for stage, images in enumerate(stages):
            for image, spec in zip(images, specs[i : i + 16], strict=True):
                read = read_scene(image, spec)
                kind = f"{len(spec.shapes)} shape(s)"
                for want, got in zip(spec.shapes, read["shapes"], strict=True):
                    for group in ("all", want.shape, want.size, kind, f"{kind} {want.size}"):
                        tally = tallies.setdefault((stage, group), collections.Counter())
                        tally["n"] += 1
                        tally.update(a for a in ATTRIBUTES if got[a])
                if stage == len(stages) - 1 and len(spec.shapes) == 1:
                    found = read_objects(image)
                    confusion[spec.shapes[0].shape, found[0].shape if found else "-"] += 1
    for (stage, group), tally in sorted(tallies.items()):
        print(f"stage {stage + 1} {group:12s} {tally['n']:4d} shapes: " + " / ".join(
            f"{tally[a] / tally['n']:.3f}" for a in ATTRIBUTES))
    print("one-shape scenes, last stage, requested -> read:", dict(sorted(confusion.items())))


def stream_against_reader(folder: str, count: int) -> None:
    """What STREAM and the pixel reader say a model drew, on one-shape held-out scenes.

    For the one-shape scenes among the first `count` held-out `full` captions, the model's
    image (seeded as `score_model`) is captioned by its STREAM (greedy) and read by the pixel
    reader (the largest object); prints, per requested shape, how often each names the
    requested shape (STREAM: any of its words, `SHAPE_WORD_GROUPS`).
    """
    import collections

    from mirrorgan_tf.data.shapes import SHAPE_WORD_GROUPS, SHAPES
    from mirrorgan_tf.evaluation.shapes_score import held_out_captions, read_objects
    from mirrorgan_tf.task import TextToImage

    model = TextToImage.from_preset(folder)
    captions, specs = held_out_captions(count, level="full")
    said, read = collections.Counter(), collections.Counter()
    total = collections.Counter()
    for i in range(0, count, 16):
        keep = [j for j in range(i, min(i + 16, count)) if len(specs[j].shapes) == 1]
        images = model.generate(captions[i : i + 16], seed=i)
        images = images[[j - i for j in keep]]
        for j, image, caption in zip(keep, images, model.caption(images), strict=True):
            want = specs[j].shapes[0].shape
            total[want] += 1
            words = set(caption.split())
            said[want] += bool(words & set(SHAPE_WORD_GROUPS[SHAPES.index(want)]))
            found = read_objects(image)
            read[want] += bool(found) and found[0].shape == want
    for shape in sorted(total):
        n = total[shape]
        print(f"{shape:9s} {n:3d} scenes: STREAM names it {said[shape] / n:.3f}, "
              f"the pixel reader {read[shape] / n:.3f}")


def stream_rerank(folder: str, count: int, candidates: int) -> None:
    """Best of `candidates` draws per caption by STREAM's caption cross-entropy, scored.

    Draw k of the batch starting at caption i has seed i + 100003 k (draw 0 is `score_model`'s
    image). Prints the shapes consistency of the first draws and of the kept ones, over all
    scenes and by scene kind.
    """
    import tensorflow as tf

    from mirrorgan_tf import losses
    from mirrorgan_tf.evaluation.shapes_score import (
        ATTRIBUTES,
        consistency_by_scene,
        consistency_score,
        held_out_captions,
    )
    from mirrorgan_tf.task import TextToImage, from_uint8

    model = TextToImage.from_preset(folder)
    captions, specs = held_out_captions(count, level="full")
    first, kept = [], []
    for i in range(0, count, 16):
        ids, lengths = model.tokenizer(tf.constant(captions[i : i + 16], tf.string))
        draws, costs = [], []
        for k in range(candidates):
            images = model.generate(captions[i : i + 16], seed=i + 100003 * k)
            logits = model.captioner(from_uint8(images), ids, training=False)
            # One cross-entropy per caption: caption_loss over a batch of one.
            costs.append([float(losses.caption_loss(logits[b : b + 1], ids[b : b + 1],
                                                    lengths[b : b + 1]))
                          for b in range(len(images))])
            draws.append(images)
        best = np.argmin(np.asarray(costs), axis=0)
        first += list(draws[0])
        kept += [draws[k][b] for b, k in enumerate(best)]
    for label, images in (("first draw", first), (f"best of {candidates}", kept)):
        images = np.stack(images)
        whole = consistency_score(images, specs)
        kinds = consistency_by_scene(images, specs)
        print(f"{label:12s} " + " / ".join(f"{whole[a]:.3f}" for a in ATTRIBUTES)
              + "; shape by scene kind: "
              + ", ".join(f"{kind} {scores['shape']:.3f}" for kind, scores in kinds.items()))


CLI_PATCHES = {"saturation": patch_saturation_paired_loss, "scenecode": patch_scene_code,
               "cellcode": patch_cell_code}


def main() -> None:
    if sys.argv[1:2] == ["cli"]:
        # `mirrorgan-tf` itself, patched: `cli PATCH ARGS...`.
        from mirrorgan_tf.cli import main as cli

        if len(sys.argv) < 4 or sys.argv[2] not in CLI_PATCHES:
            sys.exit(f"usage: {sys.argv[0]} cli {{{','.join(CLI_PATCHES)}}} MIRRORGAN_TF_ARGS...")
        CLI_PATCHES[sys.argv[2]]()
        sys.exit(cli(sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment",
                        choices=("baseline", "spread", "grow128", *PATCHES, "places",
                                 "where", "critic", "supervised", "live", "probe",
                                 "stemswap", "stemkeys", "stembind", "stemcells", "cells",
                                 "binding", "celltext", "byshape", "streamstars",
                                 "rerank"))
    parser.add_argument("--out", default="runs/diag")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--caption-loss-weight", type=float, default=10.0,
                        help="lambda of STREAM's caption loss (published: 10)")
    parser.add_argument("--paired-weight", type=float, default=0.0,
                        help="the weight of the paired, tone-blind pixel loss "
                             "(training.paired_loss_weight; published: 0)")
    parser.add_argument("--g-learning-rate", type=float, default=2e-4,
                        help="the generator's Adam learning rate (published: 2e-4)")
    parser.add_argument("--ema-warmup", action="store_true",
                        help="the generator's moving average warms up (training.ema_warmup)")
    parser.add_argument("--gf-dim", type=int, default=16, help="the generator's width")
    parser.add_argument("--init", help="start the GAN run's generator and discriminator from "
                        "this run under --out (fresh optimizer state; steps counted anew)")
    parser.add_argument("--swap-negatives", action="store_true",
                        help="the discriminators also reject real images paired with their "
                             "caption with the shape word swapped (training.swap_negatives)")
    parser.add_argument("--name", help="the GAN run's folder under --out (default: EXPERIMENT); "
                        "`places`: the runs to read, comma-separated; `binding`: a model "
                        "folder")
    parser.add_argument("--cells", choices=("nine", "centre", "aligned"), default="nine",
                        help="`supervised`: the level's nine cells, the centre cell alone, or "
                             "the nine cells at the 4x4 seed map's corners (as `aligned`)")
    parser.add_argument("--stage1", choices=("published", "coord"), default="published",
                        help="`supervised`: the 64 px stage as published or with `coord`'s MLPs")
    parser.add_argument("--object-weight", type=float, default=10.0,
                        help="`supervised`: the L1 loss's weight on the object's pixels")
    parser.add_argument("--figure", help="`critic`: also draw the first six scenes of each kind, "
                        "with the conditional P(real), into this PNG")
    parser.add_argument("--centred", action="store_true",
                        help="`supervised`: the L1 loss compares each image less its own mean")
    parser.add_argument("--tone-code", action="store_true",
                        help="`supervised`: the background's tone is part of the code")
    parser.add_argument("--decoder", choices=("glam", "plain", "coordmlp"), default="glam",
                        help="`supervised`: the 64 px stage, a DCGAN-style decoder or a "
                             "per-pixel MLP of coordinates and code")
    parser.add_argument("--stem-from", help="`supervised`: the decoder reads the sentence of "
                        "this run's or model folder's STEM (e.g. runs/diag/stem) instead of "
                        "the one-hot code")
    parser.add_argument("--checkpoint", default="step-00004000",
                        help="`live`: the checkpoint folder under RUN/checkpoints")
    parser.add_argument("--count", type=int, default=256,
                        help="`live`, `binding`, `byshape`, `streamstars`, `rerank`: "
                             "held-out captions to score")
    parser.add_argument("--noise-scale", type=float, default=1.0,
                        help="`byshape`: the noise times this")
    parser.add_argument("--candidates", type=int, default=4,
                        help="`rerank`: draws per caption")
    parser.add_argument("--swap-weight", type=float, default=10.0,
                        help="`stemswap`: the weight of the swapped-caption term; `stemkeys`: "
                             "of the keyword code (`training.damsm_keyword_weight`; the log's "
                             "run gives 1)")
    parser.add_argument("--stem-words", action="store_true",
                        help="`supervised --stem-from`, `probe`: the mean of STEM's word "
                             "features (rescaled to the sentence's norm) instead of its sentence")
    parser.add_argument("--stem-embeddings", action="store_true",
                        help="`supervised --stem-from`: the mean of STEM's word embeddings (a "
                             "bag of words, rescaled to norm sqrt(embedding_dim)) instead of its "
                             "sentence")
    parser.add_argument("--whiten", action="store_true",
                        help="`supervised --stem-from`, `probe`: STEM's features PCA-whitened "
                             "with the training captions' statistics")
    parser.add_argument("--oracle", action="store_true",
                        help="`supervised --stem-from`, `live`: STEM's sentence as in `oracle` "
                             "(`live` of an `oracle` run needs it)")
    parser.add_argument("--loss", choices=("mse", "ce"), default="ce",
                        help="`celltext`: the cell code's squared error (`stemcells`) or "
                             "cross-entropy (`losses.cell_code_loss`)")
    parser.add_argument("--stem-name", default="stem",
                        help="GAN runs: the STEM run under --out they read (default: the one "
                             "they pretrain, `stem`; e.g. a `stemkeys` run)")
    args = parser.parse_args()
    if args.experiment == "places":
        places(args.out, args.name.split(","))
        return
    if args.experiment == "where":
        where_read_out(args.out, args.name)
        return
    if args.experiment == "critic":
        critic_read_out(args.out, args.name, args.figure)
        return
    if args.experiment == "live":
        if args.oracle:  # a run of `oracle`: its generator reads the patched sentence
            patch_oracle_sentence()
        live_read_out(args.out, args.name, args.checkpoint, args.count)
        return
    # The read-outs and checks that train nothing of the GAN's.
    read_outs = {
        "probe": lambda: probe_read_out(args.name, args.stem_words, args.whiten),
        "binding": lambda: binding_read_out(args.name, args.count),
        "cells": lambda: cells_read_out(args.name),
        "byshape": lambda: by_shape_read_out(args.name, args.count, args.noise_scale),
        "streamstars": lambda: stream_against_reader(args.name, args.count),
        "rerank": lambda: stream_rerank(args.name, args.count, args.candidates),
        "celltext": lambda: cell_text(args.loss, args.steps),
    }
    if args.experiment in read_outs:
        read_outs[args.experiment]()
        return
    if args.experiment in ("stemswap", "stemkeys", "stembind", "stemcells"):
        from mirrorgan_tf.training import run

        training, data, steps, widths = {}, "shapes:easy", 300, {}
        if args.experiment == "stemswap":
            patch_damsm_swaps(args.swap_weight)
        elif args.experiment == "stemkeys":
            training = {"damsm_keywords": "shapes", "damsm_keyword_weight": args.swap_weight}
        else:  # the shipped model's STEM: 500 steps on `full`
            data, steps = "shapes:full", 500
            if args.experiment == "stembind":
                patch_damsm_exchanges(args.swap_weight)
            else:  # --steps of them (it resumes)
                patch_damsm_cell_code(args.swap_weight)
                steps, widths = args.steps, {"nef": 160}
        run.pretrain_stem(preset="shapes", data=data, out=f"{args.out}/{args.name}",
                          steps=steps, batch_size=32, checkpoint_every=100, seed=0, verbose=2,
                          gf_dim=16, df_dim=16, training=training, **widths)
        return
    if args.experiment == "supervised":
        if args.cells != "nine":
            PATCHES[args.cells]()
        if args.stage1 == "coord":
            PATCHES["coord"]()
        if args.oracle:
            patch_oracle_sentence()
        # The two flags name one choice: which of STEM's features the decoder reads.
        stem_feature = ("embeddings" if args.stem_embeddings
                        else "words" if args.stem_words else "sentence")
        supervised(args.steps, args.decoder, args.object_weight, args.tone_code, args.centred,
                   args.stem_from, stem_feature, args.whiten)
        return

    from mirrorgan_tf.evaluation.shapes_score import score_model
    from mirrorgan_tf.task import TextToImage
    from mirrorgan_tf.training import run

    common = {"preset": "shapes", "data": "shapes:easy", "seed": 0, "verbose": 2,
              "gf_dim": args.gf_dim, "df_dim": 16}
    # STEM and STREAM are pretrained on the whole level, as the demo's; the experiment's
    # change applies from the GAN phase on.
    stem = run.pretrain_stem(out=f"{args.out}/{args.stem_name}", steps=300, batch_size=32,
                             checkpoint_every=100, **common)
    stream = run.pretrain_stream(out=f"{args.out}/stream", steps=2000, batch_size=32,
                                 checkpoint_every=500, trunk_from=stem, **common)
    if args.experiment in PATCHES:
        PATCHES[args.experiment]()
    init = {"spread": f"{args.out}/centre", "stampspread": f"{args.out}/stampcentre",
            "stampfreeze": f"{args.out}/stampcentre",
            "grow128": f"{args.out}/baseline"}.get(args.experiment)
    if args.init:
        init = f"{args.out}/{args.init}"
    grown = args.experiment == "grow128"
    every = 250 if grown else 500
    gan = run.train(out=f"{args.out}/{args.name or args.experiment}", stem=stem, stream=stream,
                    init=init, steps=args.steps, batch_size=8 if grown else 16,
                    checkpoint_every=every, sample_every=every, eval_every=every,
                    eval_captions=128, num_stages=2 if grown else 1,
                    training={"ca_noise": False, "ema_decay": 0.999,
                              "g_learning_rate": args.g_learning_rate,
                              "paired_loss_weight": args.paired_weight,
                              "ema_warmup": args.ema_warmup,
                              "caption_loss_weight": args.caption_loss_weight,
                              "swap_negatives": "shapes" if args.swap_negatives else None},
                    **common)
    model = TextToImage.from_preset(gan)
    captions, specs = first_training_captions(256)
    print(json.dumps({"experiment": args.experiment, "steps": args.steps,
                      "caption_loss_weight": args.caption_loss_weight,
                      "training_captions": score_model(model, captions, specs)}))


if __name__ == "__main__":
    main()
