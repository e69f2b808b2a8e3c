from mirrorgan_tf.layers.attention import GlobalLocalAttention as GlobalLocalAttention
from mirrorgan_tf.layers.blocks import ResidualBlock as ResidualBlock
from mirrorgan_tf.layers.blocks import UpBlock as UpBlock
from mirrorgan_tf.layers.conditioning import (
    ConditioningAugmentation as ConditioningAugmentation,
)
from mirrorgan_tf.layers.convolution import SmallMapConv2D as SmallMapConv2D
from mirrorgan_tf.layers.glu import GLU as GLU
