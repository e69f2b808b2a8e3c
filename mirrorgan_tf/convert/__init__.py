"""Conversion of published PyTorch checkpoints (AttnGAN, MirrorGAN) into preset folders.

PyTorch is imported only when a checkpoint is read, so this package imports without it.
"""

from mirrorgan_tf.convert.torch import (
    add_convert_arguments,
    convert_checkpoints,
    load_state_dict,
    run_convert,
)

__all__ = ["add_convert_arguments", "convert_checkpoints", "load_state_dict", "run_convert"]
