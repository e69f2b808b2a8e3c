"""The built-in captioned-shapes dataset: procedurally drawn scenes with template captions.

A scene holds one or two flat-coloured shapes (circle, square, triangle, diamond, star) in
eight saturated colours, two sizes and the nine cells of a 3x3 grid, over a plain or textured
grey background (noise, stripes, gradient). Backgrounds are low-saturation greys and shape
colours are saturated, so a shape can always be told from its background by saturation alone
(the analytic reader of `mirrorgan_tf.evaluation.shapes_score` relies on this). Two shapes are
in different cells and never touch.

Every image has `captions_per_image` (default 10) distinct captions drawn from templates and
synonyms ("a large red circle in the top left corner", "at the upper left there is a big red
disc", "two shapes: tiny blue box on the left and huge green star in the centre"); every
caption has at most `MAX_CAPTION_WORDS` words (the `shapes` preset's `words_num`), so training
never drops words from it. `parse_caption` inverts the templates and `shapes_vocabulary` holds
every word they can produce.

Splits: scene `i` of a split is a function of `(seed, split, i)` only, and the two splits draw
from different random streams. They are also disjoint in content: a fixed set of 80 held-out
(shape, colour, size, position) combinations (two per (shape, colour) pair) never appears in a
training scene, and the first shape of every test scene is one of them, so each test caption
describes a scene no training caption describes (a compositional-generalisation split, like
CLEVR-CoGenT). Class ids (for DAMSM same-class negative masking) index the first shape's
(shape, colour) pair and cover all 40 pairs in both splits.

Difficulty levels (`LEVELS`, `--data shapes:LEVEL`): `easy` draws one large shape on a plain
background, `medium` one shape of either size on a plain or gradient background, and `full`
(the default, `--data shapes`) the distribution above. Every level's captions name colour,
shape, size and position, and every level's test split holds only held-out combinations (at
`easy`, the large ones of `HELD_OUT_COMBINATIONS`). At `full`, scene `i` is the same scene
whichever code path asks for it: the levels only narrow what the random draws choose from.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import random
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from mirrorgan_tf.data.tokenizer import tokenize_text
from mirrorgan_tf.data.vocabulary import Vocabulary

# === Attributes ===
SHAPES = ("circle", "square", "triangle", "diamond", "star")
# Saturated colours, pairwise RGB distance >= 92 and saturation (max - min) >= 150.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 30),
    "orange": (250, 135, 0),
    "yellow": (245, 225, 20),
    "green": (25, 175, 40),
    "cyan": (0, 195, 215),
    "blue": (25, 60, 225),
    "purple": (140, 35, 200),
    "pink": (250, 95, 185),
}
SIZES = ("small", "large")
# Row-major 3x3 grid.
POSITIONS = (
    "top left", "top", "top right",
    "left", "centre", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
BACKGROUNDS = ("plain", "noise", "stripes", "gradient")
# Background tones: greys (some slightly tinted), saturation <= 30, far from every shape colour.
BACKGROUND_TONES: tuple[tuple[int, int, int], ...] = (
    (242, 242, 240),
    (205, 205, 205),
    (215, 205, 185),
    (150, 150, 150),
    (100, 100, 100),
    (75, 80, 92),
    (52, 52, 52),
    (18, 18, 18),
)
MAX_CAPTION_WORDS = 16
NUM_CLASSES = len(SHAPES) * len(COLOURS)
# The colour label of an empty cell in `SceneSpec.cell_labels`, and the class counts of a
# cell's colour (with empty), shape and size: `losses.cell_code_loss`'s `classes`.
CELL_EMPTY = len(COLOURS)
CELL_CODE_CLASSES = (len(COLOURS) + 1, len(SHAPES), len(SIZES))

# Box side as a fraction of the grid cell: drawn extents and the nominal value of each size.
SIZE_EXTENTS = {"small": (0.40, 0.54), "large": (0.72, 0.86)}
NOMINAL_EXTENT = {"small": 0.47, "large": 0.79}
# Every shape keeps this fraction of a cell away from the cell's border, so shapes in adjacent
# cells stay >= 0.12 cell (2.5 px at 64x64) apart and never merge into one blob.
CELL_MARGIN = 0.06
_STAR_INNER_RADIUS = 0.45
_SUPERSAMPLE = 4


def _unit_polygons() -> dict[str, np.ndarray]:
    """Vertices of each polygonal shape in a unit box centred at the origin (y down)."""
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, _STAR_INNER_RADIUS)
    star = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    low, high = star.min(axis=0), star.max(axis=0)
    star = (star - (low + high) / 2) / (high - low).max()
    return {
        "square": np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]),
        "triangle": np.array([[0.0, -0.5], [0.5, 0.5], [-0.5, 0.5]]),
        "diamond": np.array([[0.0, -0.5], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0]]),
        "star": star,
    }


_POLYGONS = _unit_polygons()


@dataclasses.dataclass(frozen=True)
class ShapesLevel:
    """A difficulty level of the dataset: which scenes its draws choose from.

    Args:
        name: the level's name (`--data shapes:NAME`).
        two_shape_fraction: the probability of a second shape.
        sizes: the sizes a shape may have.
        backgrounds: the backgrounds a scene may have.

    Example:
        >>> LEVELS["easy"].sizes, LEVELS["easy"].backgrounds
        (('large',), ('plain',))
    """

    name: str
    two_shape_fraction: float
    sizes: tuple[str, ...]
    backgrounds: tuple[str, ...]


LEVELS: dict[str, ShapesLevel] = {
    level.name: level
    for level in (
        # One large shape on a plain background.
        ShapesLevel("easy", 0.0, ("large",), ("plain",)),
        # One shape of either size on a plain or gradient background.
        ShapesLevel("medium", 0.0, SIZES, ("plain", "gradient")),
        # One or two shapes of either size on plain or textured backgrounds.
        ShapesLevel("full", 0.5, SIZES, BACKGROUNDS),
    )
}
DEFAULT_LEVEL = "full"


def get_level(level: str | ShapesLevel) -> ShapesLevel:
    """The `ShapesLevel` named `level` (or `level` itself).

    Args:
        level: a name from `LEVELS`, or a `ShapesLevel`.

    Raises:
        ValueError: for an unknown name.

    Example:
        >>> get_level("medium").two_shape_fraction
        0.0
    """
    if isinstance(level, ShapesLevel):
        return level
    if level not in LEVELS:
        raise ValueError(
            f"unknown shapes level {level!r}; expected one of {list(LEVELS)}"
        )
    return LEVELS[level]


def shape_geometry(shape: str) -> tuple[float, tuple[float, float]]:
    """The area of a shape over its box's area, and its centroid relative to the box centre.

    Exact (shoelace formula; pi/4 for the circle). The centroid is in units of the box side,
    y down: the triangle's is (0, 1/6).

    Args:
        shape: one of `SHAPES`.

    Example:
        >>> shape_geometry("triangle")
        (0.5, (0.0, 0.16666666666666666))
    """
    if shape == "circle":
        return math.pi / 4, (0.0, 0.0)
    x, y = _POLYGONS[shape].T
    x2, y2 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y2 - x2 * y
    area = cross.sum() / 2
    cx = ((x + x2) * cross).sum() / (6 * area)
    cy = ((y + y2) * cross).sum() / (6 * area)
    return float(abs(area)), (float(cx), float(cy))


# === Specs ===
@dataclasses.dataclass(frozen=True)
class ShapeSpec:
    """One shape of a scene.

    Args:
        shape: one of `SHAPES`.
        colour: one of `COLOURS`.
        size: `"small"` or `"large"`.
        position: one of `POSITIONS` (a cell of the 3x3 grid).
        extent: side of the shape's bounding box as a fraction of the cell (within
            `SIZE_EXTENTS[size]`); `None` for the size's nominal extent.
        offset: `(dx, dy)` in [-1, 1]: where the box sits in the free room of its cell
            (0 = cell centre).

    Example:
        >>> ShapeSpec("circle", "red", "large", "top left").attributes
        ('circle', 'red', 'large', 'top left')
    """

    shape: str
    colour: str
    size: str
    position: str
    extent: float | None = None
    offset: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        for name, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, tuple(COLOURS)),
            ("size", self.size, SIZES),
            ("position", self.position, POSITIONS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {list(allowed)}")
        if self.extent is not None:
            low, high = SIZE_EXTENTS[self.size]
            if not low - 1e-9 <= self.extent <= high + 1e-9:
                raise ValueError(
                    f"extent {self.extent} of a {self.size} shape must be in [{low}, {high}]"
                )
        if len(self.offset) != 2 or any(abs(o) > 1 for o in self.offset):
            raise ValueError(f"offset must be two numbers in [-1, 1], got {self.offset!r}")

    @property
    def attributes(self) -> tuple[str, str, str, str]:
        """`(shape, colour, size, position)`: what a caption says about the shape."""
        return (self.shape, self.colour, self.size, self.position)


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """A scene: one or two shapes in different cells over a background.

    Args:
        shapes: one or two `ShapeSpec`, at different positions.
        background: one of `BACKGROUNDS`.
        background_seed: picks the background's tones and texture parameters.

    Example:
        >>> scene = SceneSpec((ShapeSpec("star", "blue", "small", "centre"),), "stripes", 7)
        >>> render(scene, 64).shape
        (64, 64, 3)
    """

    shapes: tuple[ShapeSpec, ...]
    background: str = "plain"
    background_seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "shapes", tuple(self.shapes))
        if not 1 <= len(self.shapes) <= 2:
            raise ValueError(f"a scene holds one or two shapes, got {len(self.shapes)}")
        if not all(isinstance(s, ShapeSpec) for s in self.shapes):
            raise ValueError("a scene's shapes must be ShapeSpec instances")
        positions = [s.position for s in self.shapes]
        if len(set(positions)) != len(positions):
            raise ValueError(f"two shapes of a scene share the position {positions[0]!r}")
        if self.background not in BACKGROUNDS:
            raise ValueError(
                f"unknown background {self.background!r}; expected one of {list(BACKGROUNDS)}"
            )

    @property
    def attributes(self) -> tuple[tuple[str, str, str, str], ...]:
        """The shapes' `(shape, colour, size, position)`, sorted: order-free comparison."""
        return tuple(sorted(s.attributes for s in self.shapes))

    @property
    def class_id(self) -> int:
        """Index of the first shape's (shape, colour) pair, in `[0, NUM_CLASSES)`."""
        first = self.shapes[0]
        return SHAPES.index(first.shape) * len(COLOURS) + list(COLOURS).index(first.colour)

    def cell_labels(self) -> np.ndarray:
        """What each cell of the grid holds, as class labels: int32 `[9, 3]`.

        Row `k` is cell `POSITIONS[k]`: (colour index in `COLOURS`, shape index in `SHAPES`,
        size index in `SIZES`) of the shape there; an empty cell is `(CELL_EMPTY, -1, -1)`.
        The targets of STEM's cell code (`losses.cell_code_loss`, `training.
        damsm_cell_code_weight`).

        Example:
            >>> scene = SceneSpec((ShapeSpec("star", "blue", "small", "centre"),))
            >>> scene.cell_labels()[4].tolist(), scene.cell_labels()[0].tolist()
            ([5, 4, 0], [8, -1, -1])
        """
        labels = np.tile(np.array([[CELL_EMPTY, -1, -1]], np.int32), [len(POSITIONS), 1])
        for spec in self.shapes:
            labels[POSITIONS.index(spec.position)] = (
                list(COLOURS).index(spec.colour), SHAPES.index(spec.shape),
                SIZES.index(spec.size),
            )
        return labels


# === Rendering ===
def shape_box(spec: ShapeSpec, image_size: int) -> tuple[float, float, float]:
    """`(centre_x, centre_y, side)` of the shape's square bounding box, in pixels.

    Args:
        spec: the shape.
        image_size: the image side in pixels.

    Example:
        >>> shape_box(ShapeSpec("circle", "red", "large", "centre"), 96)
        (48.0, 48.0, 25.28)
    """
    cell = image_size / 3
    row, col = divmod(POSITIONS.index(spec.position), 3)
    extent = NOMINAL_EXTENT[spec.size] if spec.extent is None else spec.extent
    side = extent * cell
    room = max(0.0, (1 - extent) / 2 - CELL_MARGIN) * cell
    cx = (col + 0.5) * cell + spec.offset[0] * room
    cy = (row + 0.5) * cell + spec.offset[1] * room
    return float(cx), float(cy), float(side)


def shape_coverage(
    shape: str, cx: float, cy: float, side: float, origin: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """Antialiased coverage (fraction of each pixel inside the shape) of one shape.

    Drawn at 4x supersampling and box-filtered down. Pixel `(i, j)` covers `[j, j+1] x
    [i, i+1]` in image coordinates.

    Args:
        shape: one of `SHAPES`.
        cx, cy, side: the shape's bounding box (image pixels).
        origin: `(x0, y0)`, the image pixel at the crop's top-left corner.
        size: `(height, width)` of the crop.

    Returns:
        float32 `[height, width]` in [0, 1].

    Example:
        >>> round(float(shape_coverage("circle", 8, 8, 8, (0, 0), (16, 16)).sum()), 1)  # pi*4**2
        50.2
    """
    ss = _SUPERSAMPLE
    height, width = size
    canvas = Image.new("L", (width * ss, height * ss), 0)
    draw = ImageDraw.Draw(canvas)
    x, y = (cx - origin[0]) * ss, (cy - origin[1]) * ss
    half = side * ss / 2
    if shape == "circle":
        # PIL's ellipse fills the pixels [x0, x1] inclusive.
        draw.ellipse([x - half, y - half, x + half - 1, y + half - 1], fill=255)
    else:
        # PIL puts pixel centres on integer coordinates: shift by half a (supersampled) pixel.
        points = _POLYGONS[shape] * side * ss + np.array([x, y]) - 0.5
        draw.polygon([tuple(p) for p in points.tolist()], fill=255)
    return np.asarray(canvas.reduce(ss), np.float32) / 255.0


def _background(kind: str, seed: int, image_size: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 17])
    tones = np.array(BACKGROUND_TONES, np.float32)
    tone = tones[rng.integers(len(tones))]
    if kind == "plain":
        return np.broadcast_to(tone, (image_size, image_size, 3)).copy()
    if kind == "noise":
        # Grey noise (the same on all channels) keeps the tone's low saturation.
        noise = rng.standard_normal((image_size, image_size, 1), dtype=np.float32)
        return np.clip(tone + 14.0 * noise, 0, 255)
    # A second tone with a visibly different brightness.
    others = [i for i in range(len(tones)) if abs(tones[i].mean() - tone.mean()) >= 40]
    other = tones[others[rng.integers(len(others))]]
    coords = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size
    if kind == "stripes":
        angle = rng.choice([0.0, 0.25, 0.5, 0.75]) * np.pi
        period = rng.uniform(0.06, 0.16)
        offset = np.float32(rng.uniform())
        # Separable phase: 1-D x and y terms summed by broadcasting.
        kx, ky = np.float32(np.cos(angle) / period), np.float32(np.sin(angle) / period)
        phase = coords[None, :] * kx + coords[:, None] * ky + offset
        # Smooth (antialiased) square wave.
        t = 0.5 + 0.5 * np.tanh(4.0 * np.sin(np.float32(2 * np.pi) * phase))
    else:  # gradient
        angle = rng.uniform(0, 2 * np.pi)
        x = (coords - 0.5) * np.float32(np.cos(angle))
        y = (coords - 0.5) * np.float32(np.sin(angle))
        t = x[None, :] + y[:, None]
        low, high = float(x.min() + y.min()), float(x.max() + y.max())
        t = (t - low) / max(high - low, 1e-6)
    return tone + (other - tone) * t[..., None].astype(np.float32)


def render(scene: SceneSpec, size: int = 256) -> np.ndarray:
    """Draws a scene: a deterministic function of `scene` and `size`.

    Args:
        scene: the scene.
        size: the image side in pixels (32 to 1024; the reader is checked on 64 to 256).

    Returns:
        uint8 `[size, size, 3]`.

    Example:
        >>> scene = SceneSpec((ShapeSpec("circle", "red", "large", "top left"),))
        >>> render(scene, 128).dtype
        dtype('uint8')
    """
    if int(size) != size or not 32 <= size <= 1024:
        raise ValueError(f"image size must be an integer in [32, 1024], got {size!r}")
    size = int(size)
    image = _background(scene.background, scene.background_seed, size)
    for spec in scene.shapes:
        cx, cy, side = shape_box(spec, size)
        x0 = max(0, math.floor(cx - side / 2) - 1)
        y0 = max(0, math.floor(cy - side / 2) - 1)
        x1 = min(size, math.ceil(cx + side / 2) + 1)
        y1 = min(size, math.ceil(cy + side / 2) + 1)
        alpha = shape_coverage(spec.shape, cx, cy, side, (x0, y0), (y1 - y0, x1 - x0))[..., None]
        colour = np.array(COLOURS[spec.colour], np.float32)
        crop = image[y0:y1, x0:x1]
        image[y0:y1, x0:x1] = crop * (1 - alpha) + colour * alpha
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# === Captions ===
_ARTICLE_SLOT = "{a}"
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
_SHAPE_WORDS = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "box", "square shape"),
    "triangle": ("triangle", "triangular shape"),
    "diamond": ("diamond", "rhombus", "diamond shape"),
    "star": ("star", "five pointed star", "star shape"),
}
_VERTICAL_WORDS = {"top": ("top", "upper"), "bottom": ("bottom", "lower")}
_CENTRE_WORDS = ("centre", "center", "middle")


def _position_phrases(position: str) -> tuple[list[str], list[str]]:
    """(phrases with a preposition, bare phrases) naming a grid cell."""
    vertical, _, horizontal = position.rpartition(" ") if " " in position else ("", "", position)
    if position in ("top", "bottom"):
        vertical, horizontal = position, ""
    if position == "centre":
        return (
            [
                "in the centre",
                "in the center",
                "in the middle",
                "at the centre",
                "in the centre of the image",
                "in the middle of the picture",
            ],
            ["centre", "center", "middle"],
        )
    if not vertical:  # left / right
        h = horizontal
        return (
            [
                f"on the {h}",
                f"at the {h}",
                f"on the {h} side",
                f"near the {h} edge",
                f"in the middle {h}",
            ],
            [h, f"middle {h}"],
        )
    words = _VERTICAL_WORDS[vertical]
    if not horizontal:  # top / bottom
        return (
            [
                f"at the {vertical}",
                f"near the {vertical}",
                f"at the {vertical} centre",
                f"in the {words[1]} middle",
                f"near the {vertical} edge",
            ],
            [vertical, f"{vertical} middle"],
        )
    phrases, bare = [], []
    for v in words:
        phrases += [
            f"in the {v} {horizontal} corner",
            f"at the {v} {horizontal}",
            f"near the {v} {horizontal} corner",
        ]
        bare.append(f"{v} {horizontal}")
    phrases.append(f"in the {vertical} {horizontal}")
    return phrases, bare


_POSITION_PHRASES = {p: _position_phrases(p) for p in POSITIONS}

# Slots: {a} article, {size}, {colour}, {shape}, {pos} (phrase with a preposition), {bare}.
_SINGLE_TEMPLATES = (
    "{a} {size} {colour} {shape} {pos}",
    "there is {a} {size} {colour} {shape} {pos}",
    "{pos} there is {a} {size} {colour} {shape}",
    "{a} {size} {shape} {pos}, coloured {colour}",
    "{a} {size} {shape} {pos}, colored {colour}",
    "{a} {colour} {shape} of {size} size {pos}",
    "this image shows {a} {size} {colour} {shape} {pos}",
    "{size} {colour} {shape} {pos}",
    "{a} {size} {shape} {pos} that is {colour}",
    "a picture of {a} {size} {colour} {shape} {pos}",
    "{bare}: {a} {size} {colour} {shape}",
    "{pos} you can see {a} {size} {colour} {shape}",
    "the {shape} {pos} is {colour} and {size}",
    "{a} {colour} {shape} {pos}, it is {size}",
)
# Two shapes: {np1}/{np2} are "{a} {size} {colour} {shape}", {noun1}/{noun2} the same without
# the article (short captions for two corner shapes); a connector word ("and", "with",
# "plus") always separates the two clauses, which is how `parse_caption` splits them.
_PAIR_TEMPLATES = (
    "{np1} {pos1} and {np2} {pos2}",
    "{noun1} {pos1} and {noun2} {pos2}",
    "{np1}, {bare1}, and {np2}, {bare2}",
    "{np1} {pos1} with {np2} {pos2}",
    "{noun1} {pos1} with {noun2} {pos2}",
    "{pos1} {np1} and {pos2} {np2}",
    "{np1} {pos1} plus {np2} {pos2}",
    "two shapes: {noun1} {pos1} and {noun2} {pos2}",
    "{bare1}: {np1} and {bare2}: {np2}",
)
_CONNECTORS = ("and", "with", "plus")


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _fill(template: str, values: dict[str, str]) -> str:
    # Fillers may hold {a} themselves: `format` inserts them verbatim, resolved below.
    text = template.format(**{**values, "a": _ARTICLE_SLOT})
    # Resolve each article from the word that follows it.
    while _ARTICLE_SLOT in text:
        before, after = text.split(_ARTICLE_SLOT, 1)
        text = before + _article(after.lstrip()) + after
    return text


@functools.cache
def _word_count(text: str) -> int:
    return len(tokenize_text(text))


def _slot_options(scene_shapes: Sequence[ShapeSpec]) -> dict[str, list[str]]:
    """Every filler of every slot, for the shapes in caption order."""
    if len(scene_shapes) == 1:
        spec = scene_shapes[0]
        phrases, bare = _POSITION_PHRASES[spec.position]
        return {
            "size": list(_SIZE_WORDS[spec.size]),
            "colour": [spec.colour],
            "shape": list(_SHAPE_WORDS[spec.shape]),
            "pos": phrases,
            "bare": bare,
        }
    options = {}
    for k, spec in enumerate(scene_shapes, start=1):
        phrases, bare = _POSITION_PHRASES[spec.position]
        nouns = [
            f"{size} {spec.colour} {shape}"
            for size in _SIZE_WORDS[spec.size]
            for shape in _SHAPE_WORDS[spec.shape]
        ]
        options[f"np{k}"] = [f"{_ARTICLE_SLOT} {noun}" for noun in nouns]
        options[f"noun{k}"] = nouns
        options[f"pos{k}"] = phrases
        options[f"bare{k}"] = bare
    return options


def _caption_from(template: str, options: dict[str, list[str]], rng: random.Random) -> str | None:
    """Fills a template with random fillers that keep it within `MAX_CAPTION_WORDS` words.

    Slots are filled in random order, each from the fillers short enough to leave room for the
    shortest fillers of the slots still empty; `None` when even the shortest do not fit.
    """
    slots = [s for s in re.findall(r"\{(\w+)\}", template) if s != "a"]
    budget = MAX_CAPTION_WORDS - _word_count(re.sub(r"\{\w+\}", " ", template))
    budget -= template.count(_ARTICLE_SLOT)
    shortest = {s: min(_word_count(o) for o in options[s]) for s in slots}
    still_needed = sum(shortest.values())
    if still_needed > budget:
        return None
    rng.shuffle(slots)
    values = {}
    for slot in slots:
        still_needed -= shortest[slot]
        fitting = [o for o in options[slot] if _word_count(o) <= budget - still_needed]
        values[slot] = fitting[rng.randrange(len(fitting))]
        budget -= _word_count(values[slot])
    return _fill(template, values)


def captions(scene: SceneSpec, rng: np.random.Generator, num: int = 10) -> list[str]:
    """`num` distinct captions of a scene, each of at most `MAX_CAPTION_WORDS` words.

    Each caption picks a template uniformly, then synonyms until the caption fits in
    `MAX_CAPTION_WORDS` words (a template that cannot fit this scene is replaced). Two-shape
    captions name the shapes in either order.

    Args:
        scene: the scene.
        rng: the random generator choosing templates and synonyms.
        num: how many captions.

    Example:
        >>> scene = SceneSpec((ShapeSpec("circle", "red", "large", "top left"),))
        >>> captions(scene, np.random.default_rng(0), num=2)  # doctest: +SKIP
        ['a big red disc in the upper left corner', 'top left: a huge red round shape']
    """
    # Python's generator is ~20x faster than numpy's for these many small draws.
    rng = random.Random(int(rng.integers(2**63)))
    templates = _SINGLE_TEMPLATES if len(scene.shapes) == 1 else _PAIR_TEMPLATES
    orders = [scene.shapes] if len(scene.shapes) == 1 else [scene.shapes, scene.shapes[::-1]]
    options = [_slot_options(order) for order in orders]
    found: list[str] = []
    for _ in range(50 * num):
        template = templates[rng.randrange(len(templates))]
        text = _caption_from(template, options[rng.randrange(len(options))], rng)
        if text is not None and text not in found:
            found.append(text)
            if len(found) == num:
                return found
    raise RuntimeError(f"found only {len(found)} distinct captions for {scene}")


def shapes_corpus() -> list[str]:
    """Every word the caption templates can produce, as a list of text fragments.

    Example:
        >>> "crimson" in " ".join(shapes_corpus())
        False
    """
    # Template text without its {slots}, then every slot filler.
    corpus = [re.sub(r"\{\w+\}", " ", t) for t in _SINGLE_TEMPLATES + _PAIR_TEMPLATES]
    corpus += ["a", "an"]
    corpus += list(COLOURS)
    corpus += [w for words in _SIZE_WORDS.values() for w in words]
    corpus += [w for words in _SHAPE_WORDS.values() for w in words]
    for phrases, bare in _POSITION_PHRASES.values():
        corpus += phrases + bare
    return corpus


def shapes_vocabulary() -> Vocabulary:
    """The fixed, complete vocabulary of the shapes captions (`Vocabulary.from_corpus`).

    Example:
        >>> shapes_vocabulary().word_to_id("circle") > 1
        True
    """
    return Vocabulary.from_corpus(shapes_corpus())


# === Parsing ===
_SHAPE_KEYWORDS = {
    "circle": "circle",
    "disc": "circle",
    "round": "circle",
    "square": "square",
    "box": "square",
    "triangle": "triangle",
    "triangular": "triangle",
    "diamond": "diamond",
    "rhombus": "diamond",
    "star": "star",
}
# The words that name each shape, one group per shape (canonical name first): what
# `training.swap_negatives: "shapes"` swaps to make the discriminator's shape-swapped negatives.
SHAPE_WORD_GROUPS: tuple[tuple[str, ...], ...] = tuple(
    tuple(sorted((w for w, s in _SHAPE_KEYWORDS.items() if s == shape), key=lambda w: w != shape))
    for shape in SHAPES
)
_SIZE_KEYWORDS = {w: size for size, words in _SIZE_WORDS.items() for w in words}
_VERTICAL_KEYWORDS = {w: v for v, words in _VERTICAL_WORDS.items() for w in words}


def _parse_clause(words: Sequence[str]) -> ShapeSpec | None:
    shapes = {_SHAPE_KEYWORDS[w] for w in words if w in _SHAPE_KEYWORDS}
    colours = {w for w in words if w in COLOURS}
    sizes = {_SIZE_KEYWORDS[w] for w in words if w in _SIZE_KEYWORDS}
    vertical = {_VERTICAL_KEYWORDS[w] for w in words if w in _VERTICAL_KEYWORDS}
    horizontal = {w for w in words if w in ("left", "right")}
    centre = any(w in _CENTRE_WORDS for w in words)
    if len(shapes) != 1 or len(colours) != 1 or len(sizes) != 1:
        return None
    if len(vertical) > 1 or len(horizontal) > 1 or not (vertical or horizontal or centre):
        return None
    position = " ".join([*vertical, *horizontal]) or "centre"
    return ShapeSpec(shapes.pop(), colours.pop(), sizes.pop(), position)


def parse_caption(text: str) -> SceneSpec | None:
    """Reads the shapes a caption asks for: the inverse of the caption templates.

    Bag-of-words per clause (one clause per shape word, split at "and"/"with"/"plus"), so it
    also reads many captions the templates do not produce. The background is not described
    by captions: the result has the default one.

    Args:
        text: a caption.

    Returns:
        The scene, or `None` when the caption does not name one or two shapes each with one
        colour, size and position.

    Example:
        >>> parse_caption("a huge red disc in the upper left corner").attributes
        (('circle', 'red', 'large', 'top left'),)
    """
    words = tokenize_text(text)
    nouns = [i for i, w in enumerate(words) if w in _SHAPE_KEYWORDS]
    if len(nouns) == 1:
        clauses = [words]
    elif len(nouns) == 2:
        cuts = [i for i in range(nouns[0] + 1, nouns[1]) if words[i] in _CONNECTORS]
        if len(cuts) != 1:
            return None
        clauses = [words[: cuts[0]], words[cuts[0] + 1 :]]
    else:
        return None
    shapes = [_parse_clause(clause) for clause in clauses]
    if any(s is None for s in shapes):
        return None
    try:
        return SceneSpec(tuple(shapes))
    except ValueError:  # two shapes in one cell
        return None


# === Splits ===
_SPLITS = {"train": 0, "test": 1}
_HOLDOUT_SEED = 20190616  # fixed: the held-out combinations do not depend on the data seed


def _held_out_combinations() -> frozenset[tuple[str, str, str, str]]:
    rng = np.random.default_rng(_HOLDOUT_SEED)
    cells = list(itertools.product(SIZES, POSITIONS))
    held = set()
    for shape, colour in itertools.product(SHAPES, COLOURS):
        for k in rng.choice(len(cells), size=2, replace=False):
            held.add((shape, colour, *cells[k]))
    return frozenset(held)


HELD_OUT_COMBINATIONS = _held_out_combinations()
_ALL_COMBINATIONS = tuple(itertools.product(SHAPES, COLOURS, SIZES, POSITIONS))
_TRAIN_COMBINATIONS = tuple(c for c in _ALL_COMBINATIONS if c not in HELD_OUT_COMBINATIONS)
_TEST_COMBINATIONS = tuple(sorted(HELD_OUT_COMBINATIONS))


def _jittered(combination, rng: np.random.Generator) -> ShapeSpec:
    shape, colour, size, position = combination
    low, high = SIZE_EXTENTS[size]
    extent = float(rng.uniform(low, high))
    offset = (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)))
    return ShapeSpec(shape, colour, size, position, extent, offset)


def sample_scene(
    seed: int,
    split: str,
    index: int,
    two_shape_fraction: float | None = None,
    level: str | ShapesLevel = DEFAULT_LEVEL,
) -> SceneSpec:
    """Scene `index` of a split: a deterministic function of `(seed, split, index, level)`.

    Args:
        seed: the data seed.
        split: `"train"` or `"test"`.
        index: the scene index.
        two_shape_fraction: the probability of a second shape (default: the level's).
        level: the difficulty level (`LEVELS`); `full` is the whole distribution.

    Example:
        >>> sample_scene(0, "train", 3) == sample_scene(0, "train", 3)
        True
        >>> sample_scene(0, "test", 3, level="easy").shapes[0].size
        'large'
    """
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(_SPLITS)}")
    level = get_level(level)
    if two_shape_fraction is None:
        two_shape_fraction = level.two_shape_fraction
    rng = np.random.default_rng([int(seed), _SPLITS[split], int(index)])
    pool = _level_pool(level, _TRAIN_COMBINATIONS if split == "train" else _TEST_COMBINATIONS)
    first = pool[rng.integers(len(pool))]
    shapes = [_jittered(first, rng)]
    if rng.uniform() < two_shape_fraction:
        # Train scenes hold no held-out combination; a test scene's second shape may be any.
        pool = _TRAIN_COMBINATIONS if split == "train" else _ALL_COMBINATIONS
        pool = [c for c in _level_pool(level, pool) if c[3] != first[3]]
        shapes.append(_jittered(pool[rng.integers(len(pool))], rng))
    background = level.backgrounds[rng.integers(len(level.backgrounds))]
    return SceneSpec(tuple(shapes), background, int(rng.integers(2**31)))


@functools.cache
def _level_pool(level: ShapesLevel, pool: tuple) -> tuple:
    """The combinations of `pool` whose size the level allows (`pool` itself at `full`)."""
    if set(level.sizes) == set(SIZES):
        return pool
    return tuple(c for c in pool if c[2] in level.sizes)


class ShapesDataset:
    """A fixed split of the captioned-shapes dataset, indexable by image.

    Args:
        split: `"train"` or `"test"` (see the module docstring: disjoint streams and
            disjoint attribute combinations).
        num_images: the number of images.
        seed: the data seed; scene `i` depends on `(seed, split, i)` only.
        image_size: the side of the largest image.
        num_stages: the number of generator stages (image scales) served by `make_dataset`.
        captions_per_image: distinct captions per image.
        two_shape_fraction: the fraction of scenes with two shapes (default: the level's).
        level: the difficulty level (`LEVELS`: `easy`, `medium`, `full`).

    Example:
        >>> data = ShapesDataset("train", num_images=100, image_size=64)
        >>> data.image(0).shape, len(data.captions(0)), data.class_id(0) < NUM_CLASSES
        ((64, 64, 3), 10, True)
    """

    def __init__(
        self,
        split: str = "train",
        num_images: int = 1000,
        seed: int = 0,
        image_size: int = 256,
        num_stages: int = 3,
        captions_per_image: int = 10,
        two_shape_fraction: float | None = None,
        level: str | ShapesLevel = DEFAULT_LEVEL,
    ):
        self.level = get_level(level)
        if two_shape_fraction is None:
            two_shape_fraction = self.level.two_shape_fraction
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {list(_SPLITS)}")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if num_stages < 1 or image_size % 2 ** (num_stages - 1):
            raise ValueError(
                f"image_size {image_size} must be divisible by 2**(num_stages - 1) = "
                f"{2 ** (num_stages - 1)}"
            )
        if not 0 <= two_shape_fraction <= 1:
            raise ValueError(f"two_shape_fraction must be in [0, 1], got {two_shape_fraction}")
        # === Config ===
        self.split = split
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.num_stages = int(num_stages)
        self.captions_per_image = int(captions_per_image)
        self.two_shape_fraction = float(two_shape_fraction)
        self._scenes = [
            sample_scene(self.seed, split, i, self.two_shape_fraction, self.level)
            for i in range(self.num_images)
        ]

    def __len__(self) -> int:
        return self.num_images

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        """Image side of each stage, smallest first (e.g. 64, 128, 256)."""
        return tuple(
            self.image_size // 2 ** (self.num_stages - 1 - i) for i in range(self.num_stages)
        )

    def scene(self, index: int) -> SceneSpec:
        """The scene of image `index`."""
        return self._scenes[index]

    def image(self, index: int, size: int | None = None) -> np.ndarray:
        """The uint8 `[size, size, 3]` image `index` (default size: `image_size`)."""
        return render(self._scenes[index], size or self.image_size)

    def captions(self, index: int) -> list[str]:
        """The `captions_per_image` distinct captions of image `index`, in random order."""
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], int(index), 1])
        return captions(self._scenes[index], rng, self.captions_per_image)

    def class_id(self, index: int) -> int:
        """The (shape, colour) class of the first shape of image `index`."""
        return self._scenes[index].class_id

    def key(self, index: int) -> str:
        """A name for image `index`, e.g. `"shapes/train/000042"` (`"shapes:easy/..."`)."""
        prefix = "shapes" if self.level.name == DEFAULT_LEVEL else f"shapes:{self.level.name}"
        return f"{prefix}/{self.split}/{index:06d}"


def make_dataset(
    split: str,
    tokenizer,
    num_images: int,
    image_size: int = 256,
    num_stages: int = 3,
    seed: int = 0,
    training: bool = True,
    all_captions: bool = False,
    cache: bool | None = None,
    level: str | ShapesLevel = DEFAULT_LEVEL,
):
    """A `tf.data.Dataset` of captioned-shapes examples in the data contract's layout.

    Each element is `{"images": (one float32 [s, s, 3] image in [-1, 1] per stage, smallest
    first; lower stages are antialiased bilinear downscales of the largest), "token_ids":
    int32 [max_length], "caption_length": int32, "class_id": int32, "key": string, "caption":
    string, "cell_labels": int32 [9, 3] (`SceneSpec.cell_labels`)}`, unbatched. With
    `training`, the order is shuffled and one of the image's captions is drawn each epoch
    (tokenized with `tokenizer.tokenize_for_training`); otherwise the order is fixed and each
    image gets its first caption (or all of them, with `all_captions`).
    Everything is a function of `seed`. No flips or crops: they would change the positions the
    captions name.

    Args:
        split: `"train"` or `"test"`.
        tokenizer: a `Tokenizer` (built on `shapes_vocabulary()`).
        num_images: the number of images.
        image_size: the side of the largest image.
        num_stages: the number of image scales.
        seed: the data seed (scenes, captions, shuffling and caption draws).
        training: shuffle and draw captions at random.
        all_captions: one element per (image, caption) pair instead of per image.
        cache: keep rendered images in memory; default: when they take at most 512 MiB.
        level: the difficulty level (`LEVELS`).

    Example:
        >>> from mirrorgan_tf.data.tokenizer import Tokenizer
        >>> vocab = shapes_vocabulary()
        >>> ds = make_dataset("train", Tokenizer(vocab, 16), 64, image_size=64, num_stages=2)
        >>> [im.shape for im in next(iter(ds))["images"]]
        [TensorShape([32, 32, 3]), TensorShape([64, 64, 3])]
    """
    import tensorflow as tf

    data = ShapesDataset(split, num_images, seed, image_size, num_stages, level=level)
    n, per_image = len(data), data.captions_per_image
    all_texts = tf.constant([data.captions(i) for i in range(n)], tf.string)  # [n, C]
    class_ids = tf.constant([data.class_id(i) for i in range(n)], tf.int32)
    cell_labels = tf.constant(np.stack([data.scene(i).cell_labels() for i in range(n)]))
    keys = tf.constant([data.key(i) for i in range(n)], tf.string)
    if cache is None:
        cache = n * image_size * image_size * 3 <= 512 * 2**20
    rendered: dict[int, np.ndarray] = {}

    def render_index(index):
        index = int(index)
        if index in rendered:
            return rendered[index]
        image = data.image(index)
        if cache:
            rendered[index] = image
        return image

    def load(index, caption_index, draw):
        image = tf.numpy_function(render_index, [index], tf.uint8, stateful=False)
        image = tf.ensure_shape(image, [image_size, image_size, 3])
        largest = tf.cast(image, tf.float32) / 127.5 - 1.0
        images = tuple(
            largest
            if s == image_size
            else tf.image.resize(largest, [s, s], method="bilinear", antialias=True)
            for s in data.stage_sizes
        )
        caption = all_texts[index, caption_index]
        if training:
            ids, length = tokenizer.tokenize_for_training(caption, draw)
        else:
            ids, length = tokenizer(caption[None])
            ids, length = ids[0], length[0]
        return {
            "images": images,
            "token_ids": tf.cast(ids, tf.int32),
            "caption_length": tf.cast(length, tf.int32),
            "class_id": class_ids[index],
            "cell_labels": cell_labels[index],
            "key": keys[index],
            "caption": caption,
        }

    if all_captions:
        pairs = tf.data.Dataset.range(n * per_image).map(lambda k: (k // per_image, k % per_image))
    else:
        pairs = tf.data.Dataset.range(n).map(lambda k: (k, tf.zeros_like(k)))
    if training:
        pairs = pairs.shuffle(
            n * (per_image if all_captions else 1), seed=seed, reshuffle_each_iteration=True
        )
        # A fresh random pair per element and epoch, reproducible from `seed`.
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(pairs, draws)
        if not all_captions:
            ds = ds.map(lambda p, d: ((p[0], tf.math.floormod(d[0], per_image)), d))
    else:
        ds = tf.data.Dataset.zip(
            pairs, tf.data.Dataset.from_tensors(tf.zeros([2], tf.int64)).repeat()
        )
    # Keep element order deterministic even with parallel calls.
    return ds.map(
        lambda p, d: load(p[0], p[1], d), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
