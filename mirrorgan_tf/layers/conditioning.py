"""Conditioning augmentation (CA): a Gaussian code sampled around the sentence feature."""

from __future__ import annotations

import keras
from keras import ops

from mirrorgan_tf.distribute import global_normal
from mirrorgan_tf.layers.glu import GLU
from mirrorgan_tf.layers.initializers import kernel_initializer


@keras.saving.register_keras_serializable(package="mirrorgan_tf")
class ConditioningAugmentation(keras.layers.Layer):
    """Conditioning augmentation: sentence feature -> (c_code, mu, logvar).

    Implements the published `CA_NET` (StackGAN's conditioning augmentation, used by MirrorGAN,
    paper Sec. 3.2): Linear(nef -> 4c, bias), GLU -> 2c, mu = first c, logvar = last c, and the
    reparameterised sample c_code = mu + eps * exp(0.5 * logvar), eps ~ N(0, I) (under
    tf.distribute drawn for the global batch, `mirrorgan_tf.distribute.global_normal`). As
    published, sampling happens whatever `training` is; `deterministic=True` returns c_code = mu.
    mu, logvar and c_code are float32 under mixed precision (the KL term and exp need it).
    Weight mapping: `ca_net.fc.weight` [4c, nef] -> `fc.kernel` (transposed), `fc.bias`.

    Args:
        condition_dim: c, the size of the conditioning code (100 in the published configs).
        seed: seed of the layer's `keras.random.SeedGenerator`, or None for a random one.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
    >>> ca = ConditioningAugmentation(condition_dim=8, seed=1)
    >>> c_code, mu, logvar = ca(np.zeros([2, 16], "float32"))
    >>> c_code.shape
    TensorShape([2, 8])
    """

    def __init__(self, condition_dim: int = 100, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)

        # === Layers ===
        self.fc = keras.layers.Dense(
            4 * condition_dim, use_bias=True, kernel_initializer=kernel_initializer(), name="fc"
        )
        self.glu = GLU(name="glu")
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")

        # === Config ===
        self.condition_dim = condition_dim
        self.seed = seed

    def build(self, input_shape):
        self.fc.build(input_shape)

    def call(self, sentence, training=None, deterministic=False):
        x = self.glu(self.fc(sentence))
        x = ops.cast(x, "float32")
        mu = x[:, : self.condition_dim]
        logvar = x[:, self.condition_dim :]
        if deterministic:
            return mu, mu, logvar
        # Under tf.distribute: this replica's rows of the global batch's noise.
        eps = global_normal(ops.shape(mu)[0], (self.condition_dim,), self.seed_generator)
        c_code = mu + eps * ops.exp(0.5 * logvar)
        return c_code, mu, logvar

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], self.condition_dim)
        return shape, shape, shape

    def get_config(self):
        config = super().get_config()
        config.update(condition_dim=self.condition_dim, seed=self.seed)
        return config
