"""Callbacks of the training runs: checkpoints, non-finite losses, sample grids, curves."""

from __future__ import annotations

import csv
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


class LearningCurve(keras.callbacks.Callback):
    """Every `every` steps, scores the generator and keeps the curve: CSV, PNG, TensorBoard.

    `evaluate()` returns the scores (e.g. the shapes consistency of the moving-average
    generator on held-out captions). Each evaluation becomes a row of `csv_path` (`step`,
    `images_seen`, `train_level`, then the scores) and a point of the plot at `png_path`
    (`visualize.save_learning_curve`), and `eval/NAME` scalars in TensorBoard. A resumed run
    replaces the rows of steps it trains again, so the file never holds two rows of a step.

    Args:
        evaluate: a function returning name -> score.
        every: evaluate when the global step is a multiple of this.
        steps_per_epoch: the chunk length (to turn Keras' epoch and batch into a step).
        batch_size: the global batch size (images seen = step x batch size).
        csv_path: the CSV to keep.
        png_path: the plot to redraw after each evaluation.
        train_level: a function step -> the name of the data (level) trained at that step.
        chance: chance scores drawn as dotted lines, or None.
        tensorboard_dir: where to write the scalars, or None.

    Example:
    >>> LearningCurve(lambda: {"colour": 0.5}, 500, 100, 8, "runs/x/learning_curve.csv",
    ...               "runs/x/learning_curve.png")  # doctest: +SKIP
    """

    def __init__(
        self,
        evaluate: Callable[[], Mapping[str, float]],
        every: int,
        steps_per_epoch: int,
        batch_size: int,
        csv_path: str,
        png_path: str,
        train_level: Callable[[int], str] | None = None,
        chance: Mapping[str, float] | None = None,
        tensorboard_dir: str | None = None,
    ):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"`every` must be a positive number of steps; got {every}.")
        self.evaluate = evaluate
        self.every = int(every)
        self.steps_per_epoch = int(steps_per_epoch)
        self.batch_size = int(batch_size)
        self.csv_path = csv_path
        self.png_path = png_path
        self.train_level = train_level
        self.chance = dict(chance) if chance is not None else None
        self.writer = (
            tf.summary.create_file_writer(os.path.join(tensorboard_dir, "eval"))
            if tensorboard_dir
            else None
        )
        self._epoch = 0

    def rows(self) -> list[dict[str, str]]:
        """The rows of the CSV so far (empty before the first evaluation)."""
        if not os.path.exists(self.csv_path):
            return []
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch * self.steps_per_epoch + int(batch) + 1
        if step % self.every == 0:
            self.record(step)

    def record(self, step: int) -> dict:
        """Evaluates now, as step `step`, and writes the row, the plot and the scalars."""
        scores = {k: round(float(v), 4) for k, v in self.evaluate().items()}
        row = {
            "step": step,
            "images_seen": step * self.batch_size,
            "train_level": self.train_level(step) if self.train_level else "",
            **scores,
        }
        rows = [r for r in self.rows() if int(r["step"]) < step] + [row]
        fields = list(row)
        os.makedirs(os.path.dirname(os.path.abspath(self.csv_path)), exist_ok=True)
        partial = self.csv_path + ".partial"
        with open(partial, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, self.csv_path)
        from mirrorgan_tf.visualize import save_learning_curve

        save_learning_curve(rows, self.png_path, chance=self.chance)
        if self.writer is not None:
            with self.writer.as_default():
                for name, value in scores.items():
                    tf.summary.scalar(f"eval/{name}", value, step=step)
            self.writer.flush()
        return row
