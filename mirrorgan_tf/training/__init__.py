"""Trainers: DAMSM pretraining of STEM, STREAM pretraining, and the MirrorGAN GAN trainer."""

from mirrorgan_tf.training.captioner import (  # noqa: F401
    CaptionerTrainer,
    evaluate_captions,
    token_accuracy,
)
from mirrorgan_tf.training.damsm import (  # noqa: F401
    DAMSMLearningRate,
    DAMSMTrainer,
    batch_retrieval_accuracy,
    damsm_optimizer,
    stage_images,
)
