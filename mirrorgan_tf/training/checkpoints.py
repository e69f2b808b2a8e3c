"""Crash-safe checkpoints of a trainer and its optimizers, and resuming from them.

A checkpoint is a folder `checkpoints/step-00001200/` holding `trainer.weights.h5`, one
`<optimizer>.npz` per optimizer and `state.json` (step, seed state, anything else). It is
written under a temporary name and renamed into place when complete; then the `latest` file
(also replaced atomically) points at it. A crash (even SIGKILL) mid-write therefore leaves
the previous checkpoint as the latest, never a corrupt one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

LATEST = "latest"
STATE = "state.json"
WEIGHTS = "trainer.weights.h5"


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    directory: str,
    step: int,
    trainer: keras.Model,
    optimizers: Mapping[str, keras.optimizers.Optimizer],
    state: Mapping[str, Any] | None = None,
    keep: int = 3,
) -> str:
    """Writes a checkpoint atomically and points `latest` at it; keeps the newest `keep`.

    Args:
        directory: the checkpoints folder of a run.
        step: the number of training steps done.
        trainer: the trainer model (all its networks' weights are saved).
        optimizers: name -> optimizer whose variables (slots, iteration count) are saved.
        state: extra JSON-serialisable state (e.g. the epoch).
        keep: how many checkpoints to keep.

    Returns:
        The checkpoint folder.

    Example:
    >>> save_checkpoint("runs/demo/checkpoints", 100, trainer, {"g": g_opt})  # doctest: +SKIP
    """
    os.makedirs(directory, exist_ok=True)
    for stale in os.listdir(directory):  # left behind by a crash mid-write
        if stale.startswith(".tmp-step-"):
            shutil.rmtree(os.path.join(directory, stale), ignore_errors=True)
    final = os.path.join(directory, f"step-{int(step):08d}")
    tmp = tempfile.mkdtemp(prefix=".tmp-step-", dir=directory)
    try:
        trainer.save_weights(os.path.join(tmp, WEIGHTS))
        for name, optimizer in optimizers.items():
            arrays = {f"v{i:05d}": np.asarray(v) for i, v in enumerate(optimizer.variables)}
            np.savez(os.path.join(tmp, f"{name}.npz"), **arrays)
        seed_state = {}
        if hasattr(trainer, "seed_generator"):
            seed_state = {"seed_state": np.asarray(trainer.seed_generator.state).tolist()}
        payload = {"step": int(step), **seed_state, **dict(state or {})}
        _write_atomically(os.path.join(tmp, STATE), json.dumps(payload, indent=2))
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_atomically(os.path.join(directory, LATEST), os.path.basename(final) + "\n")
    complete = sorted(d for d in os.listdir(directory) if d.startswith("step-"))
    for old in complete[:-keep]:
        shutil.rmtree(os.path.join(directory, old), ignore_errors=True)
    return final


def latest_checkpoint(directory: str) -> str | None:
    """The folder `latest` points at, or None when the run has no complete checkpoint.

    Args:
        directory: the checkpoints folder of a run.

    Example:
    >>> latest_checkpoint("/nonexistent") is None
    True
    """
    pointer = os.path.join(directory, LATEST)
    if not os.path.exists(pointer):
        return None
    with open(pointer, encoding="utf-8") as f:
        path = os.path.join(directory, f.read().strip())
    return path if os.path.exists(os.path.join(path, STATE)) else None


def restore_checkpoint(
    path: str, trainer: keras.Model, optimizers: Mapping[str, keras.optimizers.Optimizer]
) -> dict[str, Any]:
    """Loads a checkpoint into a built trainer and built optimizers; returns its state.

    Args:
        path: a checkpoint folder (see `latest_checkpoint`).
        trainer: the trainer, built as when it was saved.
        optimizers: the same names as when saved, each already built.

    Raises:
        ValueError: when an optimizer's variables do not match the checkpoint.

    Example:
    >>> state = restore_checkpoint(latest_checkpoint(d), trainer, {"g": g_opt})  # doctest: +SKIP
    """
    trainer.load_weights(os.path.join(path, WEIGHTS))
    for name, optimizer in optimizers.items():
        with np.load(os.path.join(path, f"{name}.npz")) as arrays:
            values = [arrays[k] for k in sorted(arrays.files)]
        if len(values) != len(optimizer.variables):
            raise ValueError(
                f"Checkpoint {path} has {len(values)} variables for optimizer {name!r}; "
                f"the optimizer has {len(optimizer.variables)}. Was the configuration changed?"
            )
        for variable, value in zip(optimizer.variables, values, strict=True):
            variable.assign(value)
    with open(os.path.join(path, STATE), encoding="utf-8") as f:
        state = json.load(f)
    if "seed_state" in state and hasattr(trainer, "seed_generator"):
        trainer.seed_generator.state.assign(
            np.asarray(state["seed_state"], dtype=trainer.seed_generator.state.dtype)
        )
    return state
