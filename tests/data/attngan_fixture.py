"""Builds a miniature dataset in the preprocessed AttnGAN layout, for tests and benchmarks.

The layout and the pickles follow the published AttnGAN code (`datasets.py`): the vocabulary is
built as its `build_dictionary` does (words in first-seen order over train then test captions,
ids from 1, `ixtoword[0] == "<end>"`), captions are stored as word ids in file order, every
pickle is written with protocol 2.

Birds (`dataset="birds"`)::

    root/captions.pickle                     [train_ids, test_ids, ixtoword, wordtoix]
    root/{train,test}/filenames.pickle       keys "001.Class_1/Class_1_0000_1"
    root/{train,test}/class_info.pickle      CUB class number per image (1-based)
    root/CUB_200_2011/images.txt             "1 001.Class_1/Class_1_0000_1.jpg"
    root/CUB_200_2011/bounding_boxes.txt     "1 x y w h" (floats, as in CUB)
    root/CUB_200_2011/images/<key>.jpg
    root/text/<key>.txt                      the raw captions, one per line

COCO (`dataset="coco"`): keys "COCO_train2014_000000000001" / "COCO_val2014_...", images in
`root/images/<key>.jpg`, no bounding boxes, no class_info.pickle unless asked for.

Example:
    >>> mini = make_mini_attngan(tmp_path, "birds")
    >>> mini.root, mini.keys["train"][:1]
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

# Image sizes (width, height) cycled over the images: landscape, portrait, square, wide.
DEFAULT_SIZES = ((120, 90), (90, 120), (100, 100), (150, 80))

_COLORS = ["red", "blue", "green", "yellow", "brown", "black", "white", "grey", "orange"]
_PARTS = ["wings", "beak", "belly", "crown", "tail", "breast", "throat", "eyes", "feet"]
_SHAPES = ["small", "large", "tiny", "long", "short", "pointed", "round", "bright", "dark"]


@dataclasses.dataclass
class MiniAttnGAN:
    """What `make_mini_attngan` wrote (all in file order, per split)."""

    root: str
    dataset: str
    captions_per_image: int
    keys: dict[str, list[str]]
    class_ids: dict[str, list[int]]
    captions: dict[str, list[list[str]]]  # raw caption lines kept per image (first cpi)
    caption_ids: dict[str, list[list[int]]]  # ids per caption, file order (as in the pickle)
    bboxes: dict[str, list[float]]  # key -> [x, y, w, h] (birds only)
    image_sizes: dict[str, tuple[int, int]]  # key -> (width, height)
    ixtoword: dict[int, str]
    wordtoix: dict[str, int]

    def image_path(self, key: str) -> str:
        if self.dataset == "birds":
            return os.path.join(self.root, "CUB_200_2011", "images", key + ".jpg")
        return os.path.join(self.root, "images", key + ".jpg")


def _caption(rng: np.random.Generator, long: bool) -> str:
    words = ["this", "bird", "has", rng.choice(_COLORS), rng.choice(_PARTS)]
    extra = int(rng.integers(14, 20)) if long else int(rng.integers(0, 6))
    for _ in range(extra):
        words += [str(rng.choice(_SHAPES)), str(rng.choice(_COLORS)), str(rng.choice(_PARTS))][
            : int(rng.integers(1, 4))
        ]
    text = " ".join(words)
    # Punctuation and capitals, which the \w+ rule drops / lowercases.
    return text[0].upper() + text[1:] + ("." if rng.random() < 0.5 else ", really!")


def _image(rng: np.random.Generator, size: tuple[int, int], bbox: Sequence[float] | None):
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.random(3) * 6.28
    image = np.stack(
        [127 + 100 * np.sin(x / (7 + 3 * i) + y / (11 + 2 * i) + phase[i]) for i in range(3)],
        axis=-1,
    )
    if bbox is not None:
        bx, by, bw, bh = (int(v) for v in bbox)
        image[by : by + bh, bx : bx + bw] = 0.5 * image[by : by + bh, bx : bx + bw] + 100
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def make_mini_attngan(
    root: str | os.PathLike,
    dataset: str = "birds",
    num_classes: int = 3,
    images_per_class: int = 2,
    captions_per_image: int | None = None,
    image_sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    with_class_info: bool | None = None,
    with_text: bool = True,
    long_caption_every: int = 3,
    seed: int = 0,
) -> MiniAttnGAN:
    """Writes a miniature AttnGAN-layout dataset under `root` and describes it.

    Each split (train, test) gets `images_per_class` images of each of `num_classes` classes.
    Every `long_caption_every`-th caption is longer than 18 words (to exercise shortening).
    Text files also hold an empty line and a line without words, which the published loader
    skips, so raw caption lines and caption ids stay aligned only if a reader skips them too.

    Args:
        root: folder to write into (created).
        dataset: "birds" (CUB layout with bounding boxes) or "coco".
        num_classes: number of classes.
        images_per_class: images per class in each split.
        captions_per_image: default 10 (birds) or 5 (COCO), as published.
        image_sizes: (width, height) cycled over the images.
        with_class_info: write `{split}/class_info.pickle` (default: birds yes, COCO no).
        with_text: write `text/<key>.txt`.
        long_caption_every: period of over-long captions (0: none).
        seed: random seed of the contents.

    Returns:
        A `MiniAttnGAN` describing the files.

    Example:
        >>> mini = make_mini_attngan(tmp_path, "coco", num_classes=2, images_per_class=1)
    """
    if dataset not in ("birds", "coco"):
        raise ValueError(f"dataset must be 'birds' or 'coco', got {dataset!r}")
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    cpi = captions_per_image or (10 if dataset == "birds" else 5)
    if with_class_info is None:
        with_class_info = dataset == "birds"

    keys: dict[str, list[str]] = {"train": [], "test": []}
    class_ids: dict[str, list[int]] = {"train": [], "test": []}
    for split in ("train", "test"):
        for c in range(1, num_classes + 1):
            for j in range(images_per_class):
                n = len(keys["train"]) + len(keys["test"])
                if dataset == "birds":
                    keys[split].append(f"{c:03d}.Class_{c}/Class_{c}_{n:04d}_{j + 1}")
                else:
                    prefix = "COCO_train2014" if split == "train" else "COCO_val2014"
                    keys[split].append(f"{prefix}_{n + 1:012d}")
                class_ids[split].append(c)

    all_keys = keys["train"] + keys["test"]
    sizes = {k: tuple(image_sizes[i % len(image_sizes)]) for i, k in enumerate(all_keys)}
    bboxes: dict[str, list[float]] = {}
    if dataset == "birds":
        for k in all_keys:
            w, h = sizes[k]
            bw = float(rng.integers(w // 4, w // 2))
            bh = float(rng.integers(h // 4, h // 2))
            bx = float(rng.integers(0, w - int(bw)))
            by = float(rng.integers(0, h - int(bh)))
            bboxes[k] = [bx, by, bw, bh]
        image_dir = os.path.join(root, "CUB_200_2011", "images")
    else:
        image_dir = os.path.join(root, "images")

    for k in all_keys:
        path = os.path.join(image_dir, k + ".jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _image(rng, sizes[k], bboxes.get(k)).save(path, "JPEG", quality=90)

    if dataset == "birds":
        cub = os.path.join(root, "CUB_200_2011")
        with open(os.path.join(cub, "images.txt"), "w") as f:
            for i, k in enumerate(all_keys):
                f.write(f"{i + 1} {k}.jpg\n")
        with open(os.path.join(cub, "bounding_boxes.txt"), "w") as f:
            for i, k in enumerate(all_keys):
                f.write(f"{i + 1} " + " ".join(f"{v:.1f}" for v in bboxes[k]) + "\n")

    # Raw captions, and the tokens the published loader keeps (first cpi lines with words).
    captions: dict[str, list[list[str]]] = {"train": [], "test": []}
    tokens: dict[str, list[list[str]]] = {"train": [], "test": []}
    count = 0
    for split in ("train", "test"):
        for k in keys[split]:
            lines = []
            for _ in range(cpi):
                count += 1
                lines.append(_caption(rng, long_caption_every and count % long_caption_every == 0))
            kept = list(lines)
            # Lines the published loader skips: empty, and no word characters.
            file_lines = [lines[0], "", "?!", *lines[1:], "an extra caption beyond cpi"]
            if with_text:
                path = os.path.join(root, "text", k + ".txt")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write("\n".join(file_lines) + "\n")
            captions[split].append(kept)
            for line in kept:
                tokens[split].append(re.findall(r"\w+", line.lower()))

    # The published build_dictionary: first-seen order over train + test.
    wordtoix: dict[str, int] = {"<end>": 0}
    ixtoword: dict[int, str] = {0: "<end>"}
    for sent in tokens["train"] + tokens["test"]:
        for word in sent:
            if word not in wordtoix:
                wordtoix[word] = len(ixtoword)
                ixtoword[len(ixtoword)] = word
    caption_ids = {s: [[wordtoix[w] for w in sent] for sent in tokens[s]] for s in tokens}
    with open(os.path.join(root, "captions.pickle"), "wb") as f:
        pickle.dump([caption_ids["train"], caption_ids["test"], ixtoword, wordtoix], f, protocol=2)
    for split in ("train", "test"):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        with open(os.path.join(root, split, "filenames.pickle"), "wb") as f:
            pickle.dump(keys[split], f, protocol=2)
        if with_class_info:
            with open(os.path.join(root, split, "class_info.pickle"), "wb") as f:
                pickle.dump(class_ids[split], f, protocol=2)

    return MiniAttnGAN(
        root=root,
        dataset=dataset,
        captions_per_image=cpi,
        keys=keys,
        class_ids=class_ids,
        captions=captions,
        caption_ids=caption_ids,
        bboxes=bboxes,
        image_sizes=sizes,
        ixtoword=ixtoword,
        wordtoix=wordtoix,
    )
