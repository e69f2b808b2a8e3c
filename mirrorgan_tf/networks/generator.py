"""GLAM, MirrorGAN's global-local collaborative attentive cascaded generator (with CA)."""

from __future__ import annotations

import keras
from keras import ops

from mirrorgan_tf.layers.attention import GlobalLocalAttention
from mirrorgan_tf.layers.blocks import ResidualBlock, UpBlock, conv3x3
from mirrorgan_tf.layers.conditioning import ConditioningAugmentation
from mirrorgan_tf.layers.glu import GLU
from mirrorgan_tf.layers.initializers import batch_norm, kernel_initializer
from mirrorgan_tf.validation import check_rank

IMAGE_SIZES = (64, 128, 256)


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class Generator(keras.Model):
    """GLAM: CA, a 64x64 first stage and attentive refinement stages to 128 and 256.

    MirrorGAN paper Sec. 3.2 (Eqs. 2-6), the published `G_NET`:
    - CA (`ca_net`): sentence feature -> c_code, mu, logvar.
    - Stage 1 (`h_net1`, Eq. 2 F_0): cat(c_code, z) -> Linear(c + z -> 16ngf*4*4*2, no bias)
      -> BatchNorm1d -> GLU -> 16ngf x 4 x 4 -> 4 up blocks -> ngf x 64 x 64.
    - Stages 2.. (`h_net{2,3}`, Eq. 3 F_i): global-local attention (Eqs. 4, 5) on h, then
      cat[h, word_context, sentence_context] -> conv1x1 (no bias) to 2ngf -> r_num residual
      blocks -> up block to ngf at twice the size.
    - Image heads (`img_net{i}`, Eq. 6 G_i): conv3x3 (ngf -> 3, no bias) -> tanh, in float32.
    The concatenation order is the published one (c_code before z), so the stage-1 kernel
    converts row for row.

    `residual_images=True` (DEVIATION, off by default and in the published-size presets):
    each refinement stage's head predicts a correction to the lower stage's image instead of
    a whole image, `image_i = tanh(up2(logits_{i-1}) + img_net_i(h_i))` (nearest x2 up-sampling
    of the lower stage's pre-tanh output), and those heads start at zero. A refinement stage
    then starts by drawing the lower stage's image at twice the size, so a generator grown
    from a trained 64 px stage (`load_lower_stages`) keeps its colours and layout from the
    first step instead of starting from grey noise at 128 and 256 px. Published checkpoints
    do not have it.

    Stage-1 layout, for checkpoint conversion: PyTorch views the GLU output [B, 16ngf*16] as
    [B, 16ngf, 4, 4] (channel-major). Here the same [B, 16ngf, 4, 4] view is taken and then
    transposed to NHWC, so `h_net1.fc.0.weight` converts with a plain transpose (kernel = W.T) and
    `h_net1.fc.1.*` (BatchNorm1d) without any permutation.

    Args:
        gf_dim: ngf (GF_DIM: 32 birds, 48 COCO).
        z_dim: noise size (100).
        condition_dim: c, CA code size (100).
        nef: text feature size of words and sentence (256).
        r_num: residual blocks per refinement stage (R_NUM: 2 birds, 3 COCO).
        num_stages: 1, 2 or 3 stages, giving images of 64, 128 and 256 pixels.
        residual_images: refinement heads correct the up-sampled lower image (see above).
        seed: seed of the CA sampler, or None.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Call args:
        noise: z [B, z_dim].
        sentence: sentence feature [B, nef].
        words: word features [B, T, nef].
        word_mask: bool [B, T], True for real words (see `text_encoder.caption_mask`), or None.
        training: BatchNorm mode.
        deterministic: use c_code = mu instead of sampling.

    Returns:
        dict with `images` (list of [B, S, S, 3] float32 in [-1, 1], S = 64, 128, 256 up to
        num_stages), `attention` (list of word attention maps [B, S, S, T] of stages >= 2),
        `c_code`, `mu`, `logvar` ([B, c] float32).

    Example:
    >>> g = Generator(gf_dim=4, z_dim=8, condition_dim=8, nef=16, r_num=1, num_stages=2)
    >>> out = g(np.zeros([1, 8], "float32"), np.zeros([1, 16], "float32"),
    ...         np.zeros([1, 5, 16], "float32"), np.ones([1, 5], bool), training=False)
    >>> [image.shape[1] for image in out["images"]]
    [64, 128]
    """

    def __init__(
        self,
        gf_dim: int = 32,
        z_dim: int = 100,
        condition_dim: int = 100,
        nef: int = 256,
        r_num: int = 2,
        num_stages: int = 3,
        residual_images: bool = False,
        seed: int | None = None,
        **kwargs,
    ):
        if num_stages not in (1, 2, 3):
            raise ValueError(f"`num_stages` must be 1, 2 or 3; got {num_stages!r}.")
        super().__init__(**kwargs)
        ngf = gf_dim

        # === Layers ===
        self.ca_net = ConditioningAugmentation(condition_dim, seed=seed, name="ca_net")
        # Stage 1 (published INIT_STAGE_G with ngf*16 channels).
        self.stage1_fc = keras.layers.Dense(
            16 * ngf * 4 * 4 * 2, use_bias=False, kernel_initializer=kernel_initializer(),
            name="h_net1_fc",
        )
        self.stage1_bn = batch_norm(name="h_net1_bn")
        self.stage1_glu = GLU(name="h_net1_glu")
        self.stage1_up = [
            UpBlock(16 * ngf // 2 ** (i + 1), name=f"h_net1_upsample{i + 1}") for i in range(4)
        ]
        # Refinement stages (published NEXT_STAGE_G).
        self.attention = []
        self.fusion = []
        self.residual = []
        self.upsample = []
        for stage in range(2, num_stages + 1):
            self.attention.append(GlobalLocalAttention(ngf, name=f"h_net{stage}_att"))
            self.fusion.append(
                keras.layers.Conv2D(
                    2 * ngf, 1, use_bias=False, kernel_initializer=kernel_initializer(),
                    name=f"h_net{stage}_conv",
                )
            )
            self.residual.append(
                [ResidualBlock(2 * ngf, name=f"h_net{stage}_residual{i}") for i in range(r_num)]
            )
            self.upsample.append(UpBlock(ngf, name=f"h_net{stage}_upsample"))
        # Image heads in float32 so tanh outputs stay float32 under mixed precision.
        # With residual images the refinement heads start at zero (an identity refinement).
        self.image_heads = [
            conv3x3(
                3, name=f"img_net{stage}", dtype="float32",
                **({"kernel_initializer": "zeros"} if residual_images and stage > 1 else {}),
            )
            for stage in range(1, num_stages + 1)
        ]

        # === Config ===
        self.gf_dim = gf_dim
        self.z_dim = z_dim
        self.condition_dim = condition_dim
        self.nef = nef
        self.r_num = r_num
        self.num_stages = num_stages
        self.residual_images = bool(residual_images)
        self.seed = seed

        self._build_from_config()

    def _build_from_config(self):
        """Creates every weight now: all shapes follow from the config (counts, loading)."""
        ngf = self.gf_dim
        self.ca_net.build((None, self.nef))
        self.stage1_fc.build((None, self.condition_dim + self.z_dim))
        self.stage1_bn.build((None, 16 * ngf * 4 * 4 * 2))
        channels = 16 * ngf
        for block in self.stage1_up:
            block.build((None, None, None, channels))
            channels = block.out_channels
        feature_shape = (None, None, None, ngf)
        for attention, fusion, residual, upsample in zip(
            self.attention, self.fusion, self.residual, self.upsample, strict=True
        ):
            attention.build(
                h_shape=feature_shape,
                words_shape=(None, None, self.nef),
                c_code_shape=(None, self.condition_dim),
            )
            fusion.build((None, None, None, 3 * ngf))
            for block in residual:
                block.build((None, None, None, 2 * ngf))
            upsample.build((None, None, None, 2 * ngf))
        for head in self.image_heads:
            head.build(feature_shape)
        self.built = True

    @property
    def image_sizes(self) -> list[int]:
        """The output image sizes, one per stage: [64, 128, 256][:num_stages]."""
        return list(IMAGE_SIZES[: self.num_stages])

    def _check_inputs(self, noise, sentence, words, word_mask) -> None:
        check_rank(noise, 2, "noise", "[batch, z_dim] noise")
        check_rank(sentence, 2, "sentence", "[batch, nef] sentence features")
        check_rank(words, 3, "words", "[batch, length, nef] word features")
        if word_mask is not None:
            check_rank(word_mask, 2, "word_mask", "[batch, length] boolean word mask")
        for name, x, size, what in (
            ("noise", noise, self.z_dim, "z_dim"),
            ("sentence", sentence, self.nef, "nef"),
            ("words", words, self.nef, "nef"),
        ):
            if x.shape[-1] is not None and x.shape[-1] != size:
                raise ValueError(
                    f"`{name}` must have {what}={size} features on its last axis; "
                    f"got shape {tuple(x.shape)}."
                )

    def call(self, noise, sentence, words, word_mask=None, training=None, deterministic=False):
        self._check_inputs(noise, sentence, words, word_mask)
        c_code, mu, logvar = self.ca_net(sentence, training=training, deterministic=deterministic)
        # Stage 1 (F_0): c_code first, as the published torch.cat((c_code, z_code), 1).
        x = ops.concatenate([ops.cast(c_code, self.compute_dtype), noise], axis=-1)
        h = self._initial_features(x, training=training)
        logits = self._stage1_logits(h, x)
        images = [ops.tanh(logits)]
        attention_maps = []
        for stage, (attention, fusion, residual, upsample) in enumerate(
            zip(self.attention, self.fusion, self.residual, self.upsample, strict=True), start=1
        ):
            word_context, sentence_context, word_attention = attention(
                h, words, c_code, word_mask
            )
            h = fusion(ops.concatenate([h, word_context, sentence_context], axis=-1))
            for block in residual:
                h = block(h, training=training)
            h = upsample(h, training=training)
            correction = self.image_heads[stage](h)
            if self.residual_images:
                # Nearest x2 up-sampling of the lower stage's pre-tanh image.
                logits = ops.repeat(ops.repeat(logits, 2, axis=1), 2, axis=2) + correction
            else:
                logits = correction
            images.append(ops.tanh(logits))
            attention_maps.append(word_attention)

        return {
            "images": images,
            "attention": attention_maps,
            "c_code": c_code,
            "mu": mu,
            "logvar": logvar,
        }

    def _initial_features(self, x, training=None):
        """Stage 1 (F_0): [batch, 64, 64, gf_dim] features from [c_code, z].

        A method of its own so that an experiment can replace stage 1 alone
        (`docs/experiments/shape_diagnostics.py`).
        """
        h = self._seed_map(x, training=training)
        for block in self.stage1_up:
            h = block(h, training=training)
        return h

    def _stage1_logits(self, h, x):
        """Stage 1's pre-tanh image from its features `h` (and `x` = [c_code, z], unused here).

        A method of its own so that an experiment can replace the image head alone.
        """
        del x
        return self.image_heads[0](h)

    def _seed_map(self, x, training=None):
        """Stage 1's [batch, 4, 4, 16 * gf_dim] start from [c_code, z]."""
        x = self.stage1_glu(self.stage1_bn(self.stage1_fc(x), training=training))
        # Channel-major view as in PyTorch (see class docstring), then NHWC.
        x = ops.reshape(x, (-1, 16 * self.gf_dim, 4, 4))
        return ops.transpose(x, (0, 2, 3, 1))

    def load_lower_stages(self, source: Generator) -> None:
        """Copies the weights of the stages this generator shares with `source` into it.

        CA, stage 1, the refinement stages both have and their image heads take `source`'s
        weights (BatchNorm statistics included); stages beyond `source`'s keep their own, and
        those `source` has beyond this one's are left out. This is how a run grows a generator
        trained at 64 px into a three-stage one (progressive growing: a training schedule, not
        part of the published method; see `training.run.train`), or goes on training the 64 px
        stage of a three-stage one alone.

        Args:
            source: a generator of the same configuration, any `num_stages`.

        Raises:
            ValueError: if `source` has a different configuration.

        Example:
        >>> small = Generator(gf_dim=4, z_dim=8, condition_dim=8, nef=16, r_num=1, num_stages=1)
        >>> big = Generator(gf_dim=4, z_dim=8, condition_dim=8, nef=16, r_num=1, num_stages=2)
        >>> big.load_lower_stages(small)
        """
        mine, theirs = self.get_config(), source.get_config()
        differences = [
            key for key in ("gf_dim", "z_dim", "condition_dim", "nef", "r_num", "residual_images")
            if mine[key] != theirs[key]
        ]
        if differences:
            raise ValueError(
                f"Cannot start a {self.num_stages}-stage generator from a {source.num_stages}-"
                f"stage one: they differ in {', '.join(differences)}."
            )
        lower = min(source.num_stages, self.num_stages) - 1  # refinement stages shared
        pairs = [
            (self.ca_net, source.ca_net),
            (self.stage1_fc, source.stage1_fc),
            (self.stage1_bn, source.stage1_bn),
            *zip(self.stage1_up, source.stage1_up, strict=True),
            *zip(self.attention[:lower], source.attention[:lower], strict=True),
            *zip(self.fusion[:lower], source.fusion[:lower], strict=True),
            *zip(sum(self.residual[:lower], []), sum(source.residual[:lower], []), strict=True),
            *zip(self.upsample[:lower], source.upsample[:lower], strict=True),
            *zip(self.image_heads[: lower + 1], source.image_heads[: lower + 1], strict=True),
        ]
        for target, origin in pairs:
            target.set_weights(origin.get_weights())

    def get_config(self):
        config = super().get_config()
        config.update(
            gf_dim=self.gf_dim,
            z_dim=self.z_dim,
            condition_dim=self.condition_dim,
            nef=self.nef,
            r_num=self.r_num,
            num_stages=self.num_stages,
            residual_images=self.residual_images,
            seed=self.seed,
        )
        return config
