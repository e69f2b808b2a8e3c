"""Diagnostics of why the 64 px stage does not draw the caption's shape (README, "The demo").

Not part of the package: experiments of 2026-12-06, kept so that their numbers can be
reproduced. `oracle`, `centre` and `spread` train the demo's 64 px phase (GF 16, DF 16, batch 16,
c_code = mu, EMA 0.999, caption-loss weight 10 unless `--caption-loss-weight`) on
`shapes:easy` from one STEM (300 steps) and STREAM (2,000 steps), write the run's learning
curve (`RUN/learning_curve.csv`) and print the score on 256 training captions at the end:

- `oracle`: five dimensions of STEM's sentence feature are replaced by 4 x a one-hot code of
  the caption's shape word, so the generator and the discriminators' conditional heads get
  the shape exactly, as strongly as any other direction of the (norm-8) sentence.
- `supervised`: no GAN: the 64 px stage alone (or, `--decoder plain`, a DCGAN-style decoder:
  Dense -> 4x4x256, four nearest x2 + conv3x3 + BatchNorm + ReLU, conv3x3 + tanh) learns to
  draw the real image from a one-hot code of the caption's shape, colour, size and position,
  with an L1 loss ten times heavier on the object's pixels (Adam 1e-3, betas 0.5 / 0.999,
  batch 16); prints the score on 256 training scenes every 500 steps, then of the first 64
  scenes drawn as each of the five shapes in turn (`forced_shapes`).
- `centre`: the level's scenes are restricted to the centre cell (both splits), so the
  generator has one place to draw in.
- `spread`: a curriculum's second step: the whole level (nine cells), the generator and
  discriminator started from the `centre` run in the same `--out` (`train(init=...)`, fresh
  optimizer state); the README's row starts from its 6,000-step point.

Usage (the GAN runs resume; about 0.27 s per step on a 2-core AVX2 machine):

    python docs/experiments/shape_diagnostics.py oracle --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py centre --out runs/diag --steps 6000
    python docs/experiments/shape_diagnostics.py centre --out runs/diag --steps 3000 \
        --caption-loss-weight 0 --name centre_lambda0
    python docs/experiments/shape_diagnostics.py spread --out runs/diag --steps 3000
    python docs/experiments/shape_diagnostics.py supervised --steps 2500 [--decoder plain]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

def patch_oracle_sentence() -> None:
    """Every `TextEncoder` writes 4 x the caption's shape one-hot into sentence[:, :5]."""
    import tensorflow as tf

    from mirrorgan_tf.data.shapes import SHAPE_WORD_GROUPS, shapes_vocabulary
    from mirrorgan_tf.networks.text_encoder import TextEncoder

    # Token id -> 1 + index in SHAPES of the shape it names (the parser's keywords), else 0.
    vocabulary = shapes_vocabulary()
    table = [0] * (vocabulary.size + 1)
    for shape, words in enumerate(SHAPE_WORD_GROUPS):
        for word in words:
            table[vocabulary.word_to_id(word)] = shape + 1
    table = tf.constant(table, tf.int32)
    original = TextEncoder.call

    def call(self, token_ids, training=None):
        words, sentence = original(self, token_ids, training=training)
        found = tf.one_hot(tf.gather(table, tf.cast(token_ids, tf.int32)), 6)
        shape = tf.cast(tf.reduce_max(found, axis=1)[:, 1:], sentence.dtype)
        return words, tf.concat([4.0 * shape, sentence[:, 5:]], axis=-1)

    TextEncoder.call = call


def patch_centre_only() -> None:
    """Every level draws only the combinations of the centre cell."""
    from mirrorgan_tf.data import shapes

    original = shapes._level_pool
    shapes._level_pool = lambda level, pool: tuple(
        c for c in original(level, pool) if c[3] == "centre"
    )


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


def supervised(steps: int, decoder: str) -> None:
    """The `supervised` experiment (module docstring)."""
    import dataclasses

    import keras
    import tensorflow as tf

    from mirrorgan_tf.data.shapes import SHAPES, SceneSpec, ShapesDataset
    from mirrorgan_tf.evaluation.shapes_score import consistency_score
    from mirrorgan_tf.networks.generator import Generator

    keras.utils.set_random_seed(0)
    train = ShapesDataset("train", num_images=4096, image_size=64, num_stages=1, level="easy")
    scenes = [train.scene(i) for i in range(len(train))]
    codes = one_hot_codes(scenes)
    images = (np.stack([train.image(i, 64) for i in range(len(train))]) / 127.5 - 1).astype(
        np.float32
    )
    if decoder == "glam":
        stage1 = Generator(gf_dim=16, z_dim=32, condition_dim=32, nef=24, r_num=1,
                           num_stages=1)

        def draw(z, c, training):
            return stage1(z, c, tf.zeros([tf.shape(c)[0], 1, 24]), None, training=training,
                          deterministic=True)["images"][0]
        variables = stage1.trainable_variables
    else:
        layers = [keras.layers.Dense(4 * 4 * 256), keras.layers.BatchNormalization(),
                  keras.layers.ReLU(), keras.layers.Reshape((4, 4, 256))]
        for channels in (128, 64, 32, 16):
            layers += [keras.layers.UpSampling2D(2),
                       keras.layers.Conv2D(channels, 3, padding="same", use_bias=False),
                       keras.layers.BatchNormalization(), keras.layers.ReLU()]
        layers.append(keras.layers.Conv2D(3, 3, padding="same", activation="tanh"))
        plain = keras.Sequential(layers)
        plain.build((None, 24 + 32))

        def draw(z, c, training):
            return plain(tf.concat([c, z], axis=-1), training=training)
        variables = plain.trainable_variables
    optimizer = keras.optimizers.Adam(1e-3, beta_1=0.5, beta_2=0.999)

    @tf.function
    def step(c, x):
        with tf.GradientTape() as tape:
            out = draw(tf.random.normal([16, 32]), c, True)
            saturation = tf.reduce_max(x, -1, keepdims=True) - tf.reduce_min(x, -1, keepdims=True)
            weight = 1.0 + 9.0 * tf.cast(saturation > 0.4, tf.float32)
            loss = tf.reduce_mean(weight * tf.abs(out - x))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    def score(c, specs):
        out = draw(tf.zeros([len(c), 32]), c, False).numpy()
        return {k: round(float(v), 3) for k, v in consistency_score(out, specs).items()}

    rng = np.random.default_rng(0)
    for done in range(1, steps + 1):
        rows = rng.integers(0, len(train), 16)
        step(codes[rows], images[rows])
        if done % 500 == 0 or done == steps:
            print(json.dumps({"step": done, "training_scenes": score(codes[:256], scenes[:256])}),
                  flush=True)
    forced = [SceneSpec((dataclasses.replace(s.shapes[0], shape=shape),))
              for shape in SHAPES for s in scenes[:64]]
    print(json.dumps({"decoder": decoder, "forced_shapes": score(one_hot_codes(forced), forced)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=("oracle", "centre", "spread", "supervised"))
    parser.add_argument("--out", default="runs/diag")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--caption-loss-weight", type=float, default=10.0,
                        help="lambda of STREAM's caption loss (published: 10)")
    parser.add_argument("--name", help="the GAN run's folder under --out (default: EXPERIMENT)")
    parser.add_argument("--decoder", choices=("glam", "plain"), default="glam",
                        help="`supervised`: the 64 px stage or a DCGAN-style decoder")
    args = parser.parse_args()
    if args.experiment == "supervised":
        supervised(args.steps, args.decoder)
        return

    from mirrorgan_tf.data.shapes import ShapesDataset, parse_caption
    from mirrorgan_tf.evaluation.shapes_score import score_model
    from mirrorgan_tf.task import TextToImage
    from mirrorgan_tf.training import run

    common = {"preset": "shapes", "data": "shapes:easy", "seed": 0, "verbose": 2,
              "gf_dim": 16, "df_dim": 16}
    # STEM and STREAM are pretrained on the whole level, as the demo's; the experiment's
    # change applies from the GAN phase on.
    stem = run.pretrain_stem(out=f"{args.out}/stem", steps=300, batch_size=32,
                             checkpoint_every=100, **common)
    stream = run.pretrain_stream(out=f"{args.out}/stream", steps=2000, batch_size=32,
                                 checkpoint_every=500, trunk_from=stem, **common)
    patch = {"oracle": patch_oracle_sentence, "centre": patch_centre_only}.get(args.experiment)
    if patch is not None:
        patch()
    init = f"{args.out}/centre" if args.experiment == "spread" else None
    gan = run.train(out=f"{args.out}/{args.name or args.experiment}", stem=stem, stream=stream,
                    init=init, steps=args.steps, batch_size=16, checkpoint_every=500,
                    sample_every=500, eval_every=500, eval_captions=128, num_stages=1,
                    training={"ca_noise": False, "ema_decay": 0.999,
                              "caption_loss_weight": args.caption_loss_weight}, **common)
    model = TextToImage.from_preset(gan)
    train = ShapesDataset("train", num_images=256, image_size=64, num_stages=1, level="easy")
    captions = [train.captions(i)[0] for i in range(len(train))]
    print(json.dumps({"experiment": args.experiment, "steps": args.steps,
                      "caption_loss_weight": args.caption_loss_weight,
                      "training_captions": score_model(
                          model, captions, [parse_caption(c) for c in captions])}))


if __name__ == "__main__":
    main()
