"""Conversion of published PyTorch checkpoints (AttnGAN, MirrorGAN) into preset folders.

PyTorch is imported only when a checkpoint is read, so this package imports without it.
"""

from mirrorgan_tf.convert.torch import convert_checkpoints, load_state_dict

__all__ = ["convert_checkpoints", "load_state_dict"]
