"""Pictures: sample grids and word-attention maps, drawn with matplotlib."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np


def _figure(rows: int, cols: int, scale: float = 2.0, row_extra: float = 0.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * scale, rows * (scale + row_extra)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    return plt, fig, axes


# Characters of a 10 pt caption that fit over one 2-inch column, and the height of a line.
_CHARS_PER_COLUMN = 22
_LINE_INCHES = 0.2


def _resize_map(attention: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upsampling of an [h, w] map to [size, size]."""
    reps = max(1, size // attention.shape[0])
    return np.kron(attention, np.ones([reps, reps]))[:size, :size]


def save_generation_grid(
    result: dict[str, Any],
    captions: Sequence[str],
    path: str,
    max_words: int = 8,
) -> str:
    """Draws, per caption, the image of every stage and the last word-attention maps.

    One row per caption: the stage images (64, 128, 256, ...), then the attention of the last
    attention stage for each of the caption's first `max_words` words, over the final image,
    with the word as the title.

    Args:
        result: `TextToImage.generate(..., return_attention=True)`.
        captions: the captions, for the row titles.
        path: the PNG to write.
        max_words: how many words' attention maps to draw per caption.

    Returns:
        `path`.

    Example:
    >>> result = model.generate(["a red circle"], seed=0, return_attention=True)  # doctest: +SKIP
    >>> save_generation_grid(result, ["a red circle"], "grid.png")  # doctest: +SKIP
    """
    stages = result["images"]
    attention = result["attention"][-1] if result["attention"] else None
    n_words = 0 if attention is None else min(max_words, attention.shape[-1])
    cols = len(stages) + n_words
    # Captions wider than the row (a one-stage run has one column) wrap onto more lines.
    titles = [textwrap.fill(c, width=max(20, int(cols * _CHARS_PER_COLUMN))) for c in captions]
    extra_lines = max((t.count("\n") for t in titles), default=0)
    plt, fig, axes = _figure(len(captions), cols, row_extra=_LINE_INCHES * extra_lines)

    def label(ax, text: str) -> None:  # under the image, so the caption can span the row
        ax.text(0.5, -0.03, text, transform=ax.transAxes, ha="center", va="top", fontsize=9)

    for row in range(len(captions)):
        axes[row, 0].set_title(titles[row], loc="left", fontsize=10)
        for col, images in enumerate(stages):
            axes[row, col].imshow(images[row])
            label(axes[row, col], f"{images.shape[1]}px")
        words = result["words"][row]
        final = stages[-1][row]
        for k in range(min(n_words, len(words))):
            ax = axes[row, len(stages) + k]
            ax.imshow(final)
            amap = _resize_map(attention[row, :, :, k], final.shape[0])
            ax.imshow(amap, cmap="jet", alpha=0.5, extent=(0, final.shape[1], final.shape[0], 0))
            label(ax, words[k])
    fig.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.05,
                        hspace=0.45 + 0.1 * extra_lines, wspace=0.08)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def save_image_grid(images: np.ndarray, path: str, titles: Sequence[str] | None = None) -> str:
    """Writes uint8 images [N, H, W, 3] as a grid PNG, optionally titled.

    Args:
        images: uint8 images.
        path: the PNG to write.
        titles: one title per image.

    Returns:
        `path`.

    Example:
    >>> save_image_grid(np.zeros([4, 64, 64, 3], np.uint8), "/tmp/grid.png")
    '/tmp/grid.png'
    """
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    plt, fig, axes = _figure(rows, cols, scale=2.4)
    for i, image in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(image)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7, wrap=True)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


CURVE_ATTRIBUTES = ("colour", "shape", "size", "position")


def save_learning_curve(
    rows: Sequence[dict[str, Any]],
    path: str,
    chance: dict[str, float] | None = None,
    title: str | None = None,
) -> str:
    """Plots shapes-consistency scores against the number of training images seen.

    One line per attribute; the chance level of each as a dotted line of the same colour;
    a vertical line and the level's name where the trained level (`train_level`) changes.

    Args:
        rows: dicts with `images_seen`, the attributes of `CURVE_ATTRIBUTES` and, optionally,
            `train_level` (e.g. the rows of a run's `learning_curve.csv`).
        path: the PNG to write.
        chance: the attributes' chance scores, or None.
        title: the figure's title.

    Returns:
        `path`.

    Example:
    >>> rows = [{"images_seen": 800 * k, "colour": k / 4, "shape": 0.2, "size": 0.5,
    ...          "position": k / 5} for k in range(1, 4)]
    >>> save_learning_curve(rows, "/tmp/curve.png")
    '/tmp/curve.png'
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    seen = [float(r["images_seen"]) for r in rows]
    for k, attribute in enumerate(CURVE_ATTRIBUTES):
        colour = f"C{k}"
        ax.plot(seen, [float(r[attribute]) for r in rows], "o-", color=colour, ms=3,
                label=attribute)
        if chance is not None and attribute in chance:
            ax.axhline(float(chance[attribute]), color=colour, ls=":", lw=1)
    previous, changes = None, 0
    for r, x in zip(rows, seen, strict=True):
        level = r.get("train_level")
        if level and level != previous:
            if previous is not None:
                ax.axvline(x, color="grey", lw=0.8)
            # Alternate heights, so the labels of short levels do not overlap.
            ax.text(x, 1.02 - 0.05 * (changes % 2), f" {level}", fontsize=8, color="grey",
                    va="bottom")
            previous, changes = level, changes + 1
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("training images seen")
    ax.set_ylabel("shapes consistency (held-out captions)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, ncol=2,
              title="dotted: chance" if chance is not None else None, title_fontsize=8)
    if title:
        ax.set_title(title, fontsize=10, pad=16)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
