"""Callbacks of the training runs: checkpoints, non-finite losses, sample grids."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from mirrorgan_tf.training.checkpoints import latest_checkpoint, save_checkpoint


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss becomes NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with a clear message when any logged loss is not finite.

    Checkpoints are written only at the end of a chunk whose losses were all finite, so the
    latest checkpoint stays the last good one.

    Args:
        checkpoint_dir: the run's checkpoints folder, named in the message.

    Example:
    >>> callback = StopOnNonFiniteLoss("runs/demo/checkpoints")
    """

    def __init__(self, checkpoint_dir: str):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir

    def on_train_batch_end(self, batch, logs=None):
        for name, value in (logs or {}).items():
            value = float(value)
            if not math.isfinite(value):
                last = latest_checkpoint(self.checkpoint_dir)
                raise NonFiniteLossError(
                    f"`{name}` became {value} at batch {batch}; training stopped. The last good "
                    f"checkpoint is {last or '(none yet)'} and was kept. Try a lower learning "
                    "rate, float32 instead of float16, or check the data for bad images."
                )


class Checkpoint(keras.callbacks.Callback):
    """Writes a crash-safe checkpoint (and optionally the model preset) after each chunk.

    Keras 'epochs' of a run are chunks of `steps_per_epoch` steps, so `epoch + 1` chunks make
    `(epoch + 1) * steps_per_epoch` steps.

    Args:
        checkpoint_dir: the run's checkpoints folder.
        steps_per_epoch: the chunk length.
        optimizers: a function returning name -> optimizer to save (they exist after compile).
        on_save: called with the step after each checkpoint (e.g. to write the preset folder).

    Example:
    >>> Checkpoint("runs/x/checkpoints", 100, lambda: {"g": g_opt})  # doctest: +SKIP
    """

    def __init__(
        self,
        checkpoint_dir: str,
        steps_per_epoch: int,
        optimizers: Callable[[], Mapping[str, keras.optimizers.Optimizer]],
        on_save: Callable[[int], None] | None = None,
    ):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.steps_per_epoch = steps_per_epoch
        self.optimizers = optimizers
        self.on_save = on_save

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.steps_per_epoch
        save_checkpoint(
            self.checkpoint_dir, step, self.model, self.optimizers(), {"epoch": epoch + 1}
        )
        if self.on_save is not None:
            self.on_save(step)


class SampleGrid(keras.callbacks.Callback):
    """Every `every` steps, draws fixed captions with fixed noise through the EMA generator.

    Writes `samples/step-XXXXXXXX.png` (every stage and the word-attention maps) and the
    last-stage images to TensorBoard.

    Args:
        sample: a function step -> result dict of `TextToImage.generate(...,
            return_attention=True)` for the fixed captions.
        captions: the fixed captions.
        out_dir: the samples folder.
        steps_per_epoch: the chunk length (samples are drawn at chunk ends).
        every: draw when the step count is a multiple of this (rounded to chunk ends).
        tensorboard_dir: where to write image summaries, or None.

    Example:
    >>> SampleGrid(sample_fn, ["a red circle"], "runs/x/samples", 50, 100)  # doctest: +SKIP
    """

    def __init__(
        self,
        sample: Callable[[], dict],
        captions: list[str],
        out_dir: str,
        steps_per_epoch: int,
        every: int,
        tensorboard_dir: str | None = None,
    ):
        super().__init__()
        self.sample = sample
        self.captions = captions
        self.out_dir = out_dir
        self.steps_per_epoch = steps_per_epoch
        self.every = max(int(every), 1)
        self.writer = (
            tf.summary.create_file_writer(os.path.join(tensorboard_dir, "samples"))
            if tensorboard_dir
            else None
        )

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.steps_per_epoch
        if step // self.every == (step - self.steps_per_epoch) // self.every:
            return  # this chunk did not cross a multiple of `every`
        from mirrorgan_tf.visualize import save_generation_grid

        result = self.sample()
        save_generation_grid(
            result, self.captions, os.path.join(self.out_dir, f"step-{step:08d}.png")
        )
        if self.writer is not None:
            with self.writer.as_default():
                tf.summary.image(
                    "samples", np.asarray(result["images"][-1]), step=step, max_outputs=8
                )
            self.writer.flush()
