from mirrorgan_tf.networks.backbones import (  # noqa: F401
    inception_v3_trunk,
    resnet152_torchvision,
    small_cnn,
)
from mirrorgan_tf.networks.captioner import (  # noqa: F401
    Captioner,
    CaptionerDecoder,
    CaptionerEncoder,
)
from mirrorgan_tf.networks.discriminator import Discriminator  # noqa: F401
from mirrorgan_tf.networks.generator import Generator  # noqa: F401
from mirrorgan_tf.networks.image_encoder import ImageEncoder  # noqa: F401
from mirrorgan_tf.networks.text_encoder import TextEncoder, caption_mask  # noqa: F401
