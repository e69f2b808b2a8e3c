"""Deployment exports: a SavedModel for TF Serving and TFLite models, plus a REST client.

- `export_saved_model` (saved_model.py): `BASE/NAME/VERSION/` with tokenization inside; the
  `serving_default` signature takes `captions` alone (fresh noise), `generate` takes
  `captions` and one int32 `seed` per caption (same caption and seed, same image).
- `export_tflite` (tflite.py): token ids + noise -> image, builtin ops, fixed batch.
- `client` (client.py): REST request bodies, response decoding, PNGs (no TensorFlow needed).
- `export`: the library function behind `mirrorgan-tf export`.

The TensorFlow-heavy modules load on first use, so `mirrorgan_tf.export.client` stays light.
"""

from __future__ import annotations

import os
from typing import Any

FORMATS = ("saved_model", "tflite")

_LAZY = {
    "export_saved_model": "mirrorgan_tf.export.saved_model",
    "export_tflite": "mirrorgan_tf.export.tflite",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export(
    model_path_or_preset: str,
    out: str | os.PathLike,
    format: str = "saved_model",
    version: int = 1,
    quantize: str = "none",
    batch_size: int = 1,
    precision: str = "float32",
) -> list[str]:
    """Exports a trained run, a preset folder or a named preset (random weights).

    Args:
        model_path_or_preset: a training run folder, a preset folder, or `shapes`/`birds`/`coco`.
        out: for `saved_model`, `BASE/NAME` (the version folder goes inside and
            `BASE/models.config` is written); for `tflite`, a `.tflite` file, or a folder that
            receives `mirrorgan[_QUANTIZE].tflite`.
        format: `saved_model` or `tflite`.
        version: the SavedModel version (`saved_model` only).
        quantize: `none`, `float16` or `dynamic` (`tflite` only).
        batch_size: the fixed TFLite batch size (`tflite` only; the SavedModel takes any batch).
        precision: `float32` or `bfloat16` (`saved_model` only): the generator's compute type
            (`saved_model.with_bfloat16_generator`; faster on CPUs with AVX512-BF16).

    Returns:
        The paths written: `[version folder, models.config]` or `[.tflite, .tflite.json]`.

    Raises:
        ValueError: for an unknown format or an option that does not apply to it.

    Example:
    >>> export("runs/shapes", "serving/mirrorgan", version=2)  # doctest: +SKIP
    ['/abs/serving/mirrorgan/2', '/abs/serving/models.config']
    >>> export("runs/shapes", "app/", format="tflite", quantize="float16")  # doctest: +SKIP
    ['app/mirrorgan_float16.tflite', 'app/mirrorgan_float16.tflite.json']
    """
    from mirrorgan_tf.task import TextToImage

    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}; got {format!r}.")
    out = os.fspath(out)
    if format == "saved_model":
        if quantize != "none" or batch_size != 1:
            raise ValueError(
                "`quantize` and `batch_size` apply to TFLite only; the SavedModel takes any "
                "batch size (for a bfloat16 SavedModel, pass `precision`)."
            )
        from mirrorgan_tf.export.saved_model import (
            MODELS_CONFIG_FILE,
            PRECISIONS,
            export_saved_model,
            with_bfloat16_generator,
        )

        if precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {PRECISIONS}; got {precision!r}.")
        out = os.path.abspath(out.rstrip("/\\") or out)
        base, name = os.path.dirname(out), os.path.basename(out)
        model = TextToImage.from_preset(model_path_or_preset, captioner=True)
        if precision == "bfloat16":
            model = with_bfloat16_generator(model)
        path = export_saved_model(model, base, name=name, version=version)
        return [path, os.path.join(base, MODELS_CONFIG_FILE)]

    from mirrorgan_tf.export.tflite import export_tflite

    if version != 1 or precision != "float32":
        raise ValueError("`version` and `precision` apply to SavedModels only.")
    if not out.endswith(".tflite"):
        suffix = "" if quantize == "none" else f"_{quantize}"
        out = os.path.join(out, f"mirrorgan{suffix}.tflite")
    model = TextToImage.from_preset(model_path_or_preset, captioner=False)
    path = export_tflite(model, out, quantize=quantize, batch_size=batch_size)
    return [path, path + ".json"]
