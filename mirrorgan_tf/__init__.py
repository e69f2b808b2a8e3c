"""mirrorgan_tf: MirrorGAN text-to-image generation in Keras 3 / TensorFlow."""

__version__ = "0.1.0"
