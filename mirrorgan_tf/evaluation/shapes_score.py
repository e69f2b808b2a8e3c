"""Text-image consistency on the captioned-shapes dataset, read analytically from the pixels.

No learned model: `read_objects` finds the shapes of an image and names their attributes, and
`read_scene` checks them against the scene a caption asks for (`parse_caption` turns a
caption into that scene). The reading relies on how `mirrorgan_tf.data.shapes` draws scenes:

- foreground = pixels with saturation (max - min channel) >= 70; shape colours have >= 150,
  backgrounds (greys, also when textured) <= 30;
- objects = 4-connected components of the foreground with an area >= 2% of a grid cell;
- colour = the named colour nearest (RGB) to the mean of the component's most saturated half
  (antialiased edges blend with the background and are left out);
- size = the longer bounding-box side over the cell side, "large" above 0.63 (drawn extents
  are 0.40-0.54 for small and 0.72-0.86 for large shapes);
- position = the grid cell of the centroid;
- shape = the template (each shape drawn into the component's bounding box by the renderer
  itself) with the highest intersection-over-union with the component's mask.

Only the N largest objects are read, N = the number of requested shapes (the prominent
shapes a viewer sees; extra blobs earn nothing). Each requested shape is paired with a
distinct one of them so as to maximise the number of agreeing attributes (the pairing a
reader of the caption would make); a requested shape without an object counts as wrong on
every attribute.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np

from mirrorgan_tf.data.shapes import (
    CELL_CODE_CLASSES,
    CELL_EMPTY,
    COLOURS,
    DEFAULT_LEVEL,
    POSITIONS,
    SHAPES,
    SceneSpec,
    ShapesDataset,
    parse_caption,
    shape_coverage,
    shape_geometry,
)

__all__ = [
    "ATTRIBUTES",
    "ObjectReading",
    "chance_score",
    "consistency_score",
    "held_out_captions",
    "parse_caption",
    "read_objects",
    "read_scene",
    "score_captioner",
    "score_cell_code",
    "score_model",
]

ATTRIBUTES = ("colour", "shape", "size", "position")
FOREGROUND_SATURATION = 70
MIN_AREA_FRACTION = 0.02  # of a grid cell
LARGE_EXTENT = 0.63  # bounding-box side over cell side
_PALETTE = np.array(list(COLOURS.values()), np.float32)
_COLOUR_NAMES = tuple(COLOURS)
_GEOMETRY = {shape: shape_geometry(shape) for shape in SHAPES}
# Room around an object's bounding box for the coverage crop (fractions of the box side, at
# least 2 pixels): a wrong shape hypothesis may overhang the object.
_CROP_ROOM = 0.25


@dataclasses.dataclass(frozen=True)
class ObjectReading:
    """One object found in an image.

    Args:
        shape, colour, size, position: the attributes read (names as in `ShapeSpec`).
        area: foreground pixels.
        centroid: `(x, y)` in pixels.
        bbox: `(x0, y0, x1, y1)`, inclusive pixel bounds.
        match: intersection-over-union of the mask with the best shape template.
    """

    shape: str
    colour: str
    size: str
    position: str
    area: int
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]
    match: float

    @property
    def attributes(self) -> tuple[str, str, str, str]:
        """`(shape, colour, size, position)`."""
        return (self.shape, self.colour, self.size, self.position)


def _as_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected one square RGB image [size, size, 3], got {image.shape}")
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [-1, 1], got {image.dtype}")
    # The networks' range: float in [-1, 1].
    return np.clip(np.round((image.astype(np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


def _components(mask: np.ndarray) -> list[list[tuple[int, int, int]]]:
    """4-connected components of a boolean mask, each a list of runs `(row, start, stop)`.

    Union-find over the horizontal runs of each row: Python work grows with the number of
    runs (a few per row for clean shapes), not with the number of pixels.
    """
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    # Row-major order: the k-th start and the k-th stop belong to the same run.
    rows, starts = np.nonzero(edges == 1)
    stops = np.nonzero(edges == -1)[1]
    runs = list(zip(rows.tolist(), starts.tolist(), stops.tolist(), strict=True))
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Runs are sorted by row, then start: merge the overlapping runs of consecutive rows with
    # a pointer into the previous row that only moves forward.
    previous: list[int] = []  # run indices of the previous row
    current: list[int] = []
    row_now = -2
    pointer = 0
    for k, (row, start, stop) in enumerate(runs):
        if row != row_now:
            previous = current if row == row_now + 1 else []
            current, row_now, pointer = [], row, 0
        current.append(k)
        while pointer < len(previous) and runs[previous[pointer]][2] <= start:
            pointer += 1
        q = pointer
        while q < len(previous) and runs[previous[q]][1] < stop:
            a, b = find(k), find(previous[q])
            if a != b:
                parent[max(a, b)] = min(a, b)
            q += 1
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for k, run in enumerate(runs):
        groups.setdefault(find(k), []).append(run)
    return list(groups.values())


def _read_shape(coverage: np.ndarray, origin: tuple[int, int]) -> tuple[str, float, float]:
    """Fits each shape to an object's coverage; returns (shape, box side, match).

    Under each shape hypothesis the box follows from the object's moments: side =
    sqrt(area / fill), centre = centroid - centroid offset * side (`shape_geometry`). The
    shape drawn there that best overlaps the coverage (soft intersection-over-union) wins.
    Moments come from the antialiased coverage, so the fit is sub-pixel even for 9-pixel shapes,
    where bounding boxes are off by a pixel.
    """
    height, width = coverage.shape
    area = float(coverage.sum())
    ys, xs = np.mgrid[0:height, 0:width]
    cx = float((coverage * (xs + 0.5)).sum()) / area + origin[0]
    cy = float((coverage * (ys + 0.5)).sum()) / area + origin[1]
    best = (SHAPES[0], 0.0, -1.0)
    for shape in SHAPES:
        fill, (dx, dy) = _GEOMETRY[shape]
        side = math.sqrt(area / fill)
        template = shape_coverage(
            shape, cx - dx * side, cy - dy * side, side, origin, (height, width)
        )
        match = float(np.minimum(template, coverage).sum() / np.maximum(template, coverage).sum())
        if match > best[2]:
            best = (shape, side, match)
    return best


def read_objects(image) -> list[ObjectReading]:
    """Finds the shapes in an image and reads their attributes, largest first.

    Args:
        image: uint8 `[size, size, 3]` or float in [-1, 1].

    Returns:
        The objects, by decreasing area.

    Example:
        >>> from mirrorgan_tf.data.shapes import SceneSpec, ShapeSpec, render
        >>> scene = SceneSpec((ShapeSpec("star", "blue", "small", "centre"),))
        >>> read_objects(render(scene, 128))[0].attributes
        ('star', 'blue', 'small', 'centre')
    """
    image = _as_uint8(image)
    size = image.shape[0]
    cell = size / 3
    pixels = image.astype(np.int16)
    saturation = pixels.max(axis=-1) - pixels.min(axis=-1)
    foreground = saturation >= FOREGROUND_SATURATION
    readings = []
    components = [
        c
        for c in _components(foreground)
        if sum(stop - start for _, start, stop in c) >= MIN_AREA_FRACTION * cell * cell
    ]
    labels = np.zeros(foreground.shape, np.int32)
    for k, runs in enumerate(components, start=1):
        for row, start, stop in runs:
            labels[row, start:stop] = k
    for k, runs in enumerate(components, start=1):
        ys = np.concatenate([np.full(stop - start, row) for row, start, stop in runs])
        xs = np.concatenate([np.arange(start, stop) for _, start, stop in runs])
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        sat = saturation[ys, xs].astype(np.float32)
        core = sat >= np.median(sat)
        mean = pixels[ys[core], xs[core]].astype(np.float32).mean(axis=0)
        colour = _COLOUR_NAMES[int(np.argmin(((_PALETTE - mean) ** 2).sum(axis=1)))]
        # Coverage: saturation rescaled between the local background's and the object's core
        # (a blend of a colour and a grey has saturation proportional to the colour's share).
        room = max(2, math.ceil(_CROP_ROOM * max(bbox[2] - bbox[0], bbox[3] - bbox[1])))
        x0, y0 = max(0, bbox[0] - room), max(0, bbox[1] - room)
        x1, y1 = min(size, bbox[2] + 1 + room), min(size, bbox[3] + 1 + room)
        crop_sat = saturation[y0:y1, x0:x1].astype(np.float32)
        crop_labels = labels[y0:y1, x0:x1]
        background = crop_sat[~foreground[y0:y1, x0:x1]]
        floor = float(np.median(background)) if background.size else 0.0
        top = float(np.median(sat[core]))
        coverage = np.clip((crop_sat - floor) / max(top - floor, 1.0), 0.0, 1.0)
        # Other objects (and their blended edges) are not this one.
        near_other = (crop_labels != 0) & (crop_labels != k)
        coverage[near_other] = 0.0
        shape, side, match = _read_shape(coverage, (x0, y0))
        cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
        row = min(2, int(cy // cell))
        col = min(2, int(cx // cell))
        readings.append(
            ObjectReading(
                shape=shape,
                colour=colour,
                size="large" if side / cell > LARGE_EXTENT else "small",
                position=POSITIONS[3 * row + col],
                area=int(xs.size),
                centroid=(cx, cy),
                bbox=bbox,
                match=match,
            )
        )
    readings.sort(key=lambda r: -r.area)
    return readings


def _pairings(found: int, requested: int) -> list[tuple[int | None, ...]]:
    """Every injective pairing of `requested` shapes to `found` ones, in a fixed order.

    Each pairing gives, per requested shape, the index of its found shape or None (none left);
    the fixed order makes ties break the same way in every run.

    Example:
        >>> _pairings(1, 2)
        [(0, None), (None, 0), (None, None)]
    """
    slots = list(range(found)) + [None] * requested
    return sorted(set(itertools.permutations(slots, requested)),
                  key=lambda p: [found if k is None else k for k in p])


def read_scene(image, spec: SceneSpec) -> dict:
    """Checks each shape a scene asks for against the objects found in an image.

    Args:
        image: uint8 `[size, size, 3]` or float in [-1, 1].
        spec: the requested scene (e.g. `parse_caption(caption)` or the scene that was drawn).

    Returns:
        `{"colour": bool, "shape": bool, "size": bool, "position": bool}`, each True when that
        attribute is right for every requested shape, plus `"shapes"`: one dict per requested
        shape with the same four keys and `"found"` (an object was paired with it), and
        `"num_objects"`: how many objects were found.

    Example:
        >>> from mirrorgan_tf.data.shapes import SceneSpec, ShapeSpec, render
        >>> scene = SceneSpec((ShapeSpec("circle", "red", "large", "top left"),))
        >>> read_scene(render(scene, 64), scene)["colour"]
        True
    """
    found_objects = read_objects(image)
    requested = spec.shapes
    # Only the most prominent objects, as many as requested, are read: an image cluttered
    # with blobs of every colour must not earn credit by offering more candidates.
    objects = found_objects[: len(requested)]
    best, best_key = None, None
    for pairing in _pairings(len(objects), len(requested)):
        agreements = []
        area = 0
        for want, k in zip(requested, pairing, strict=True):
            if k is None:
                agreements.append(dict.fromkeys(ATTRIBUTES, False))
                continue
            got = objects[k]
            agreements.append({a: getattr(got, a) == getattr(want, a) for a in ATTRIBUTES})
            area += got.area
        # Most agreeing attributes; then objects rather than nothing; then larger objects.
        found = sum(k is not None for k in pairing)
        key = (sum(sum(a.values()) for a in agreements), found, area)
        if best_key is None or key > best_key:
            best, best_key = (pairing, agreements), key
    pairing, agreements = best
    per_shape = tuple(
        {**agreement, "found": k is not None}
        for agreement, k in zip(agreements, pairing, strict=True)
    )
    result = {a: all(s[a] for s in per_shape) for a in ATTRIBUTES}
    result["shapes"] = per_shape
    result["num_objects"] = len(found_objects)
    return result


def consistency_score(images: Iterable, specs: Sequence[SceneSpec]) -> dict[str, float]:
    """Per-attribute accuracy of images against the scenes they should show.

    Every requested shape counts once: `colour`, `shape`, `size` and `position` are the
    fractions of requested shapes read with that attribute right, `overall` the fraction read
    with all four right, and `count` the fraction of images with exactly as many objects as
    requested shapes.

    Args:
        images: uint8 `[N, size, size, 3]` or float in [-1, 1] (or an iterable of images).
        specs: the N requested scenes (`None` entries, e.g. unparsable captions, are skipped).

    Returns:
        `{"colour", "shape", "size", "position", "overall", "count"}` in [0, 1], and
        `"num_shapes"`, the number of requested shapes scored.

    Example:
        >>> from mirrorgan_tf.data.shapes import render, sample_scene
        >>> scenes = [sample_scene(0, "test", i) for i in range(8)]
        >>> consistency_score([render(s, 64) for s in scenes], scenes)["overall"]
        1.0
    """
    totals = dict.fromkeys((*ATTRIBUTES, "overall"), 0)
    shapes = scenes = right_count = 0
    for image, spec in zip(images, specs, strict=True):
        if spec is None:
            continue
        reading = read_scene(image, spec)
        for per_shape in reading["shapes"]:
            for a in ATTRIBUTES:
                totals[a] += per_shape[a]
            totals["overall"] += all(per_shape[a] for a in ATTRIBUTES)
            shapes += 1
        scenes += 1
        right_count += reading["num_objects"] == len(spec.shapes)
    if not shapes:
        raise ValueError("no scene to score (every spec is None)")
    scores = {k: v / shapes for k, v in totals.items()}
    scores["count"] = right_count / scenes
    scores["num_shapes"] = shapes
    return scores


SCENE_KINDS = {1: "one_shape", 2: "two_shapes"}
SCENE_LABELS = {"one_shape": "one-shape scenes", "two_shapes": "two-shape scenes"}


def consistency_by_scene(
    images: Iterable, specs: Sequence[SceneSpec]
) -> dict[str, dict[str, float]]:
    """`consistency_score` of the one-shape and of the two-shape scenes apart.

    On the `full` level half the scenes hold two shapes, and they hold two thirds of the
    requested shapes that `consistency_score` averages over: a model can draw one shape well
    and two shapes badly, which the overall score hides.

    Args:
        images: uint8 `[N, size, size, 3]` or float in [-1, 1].
        specs: the N requested scenes (`None` entries are skipped).

    Returns:
        `{"one_shape": scores, "two_shapes": scores}`, each `consistency_score`'s dict for
        the scenes of that kind; a kind with no scene is left out.

    Example:
        >>> from mirrorgan_tf.data.shapes import render, sample_scene
        >>> scenes = [sample_scene(0, "test", i) for i in range(8)]
        >>> sorted(consistency_by_scene([render(s, 64) for s in scenes], scenes))
        ['one_shape', 'two_shapes']
    """
    images = list(images)
    if len(images) != len(specs):
        raise ValueError(f"{len(images)} images for {len(specs)} scenes")
    result = {}
    for count, kind in SCENE_KINDS.items():
        keep = [i for i, s in enumerate(specs) if s is not None and len(s.shapes) == count]
        if keep:
            result[kind] = consistency_score([images[i] for i in keep], [specs[i] for i in keep])
    return result


def held_out_captions(
    count: int, seed: int = 0, level: str = DEFAULT_LEVEL
) -> tuple[list[str], list[SceneSpec]]:
    """The first caption of `count` test scenes (attribute combinations unseen in training).

    Args:
        count: how many captions.
        seed: the data seed of the test split.
        level: the dataset's difficulty level (`data.shapes.LEVELS`).

    Returns:
        (captions, the scenes they ask for, parsed back from the text).

    Example:
        >>> captions, specs = held_out_captions(2, level="easy")
        >>> [s.shapes[0].size for s in specs]
        ['large', 'large']
    """
    test = ShapesDataset("test", num_images=count, seed=seed, image_size=64, num_stages=1,
                         level=level)
    captions = [test.captions(i)[0] for i in range(count)]
    return captions, [parse_caption(c) for c in captions]


def chance_score(count: int, seed: int = 0, level: str = DEFAULT_LEVEL) -> dict[str, float]:
    """The score of real test images shown with another scene's caption: what chance gives.

    Each of the first `count` held-out scenes is scored against the image of the next one
    (real, crisp shapes, but drawn for a different caption), so a colour is right about one
    time in eight, a position one in nine.

    Args:
        count: how many held-out scenes.
        seed: the data seed of the test split.
        level: the dataset's difficulty level.

    Example:
        >>> chance_score(16)["colour"] < 0.5
        True
    """
    test = ShapesDataset("test", num_images=count, seed=seed, image_size=256, num_stages=1,
                         level=level)
    _, specs = held_out_captions(count, seed, level)
    images = [test.image((i + 1) % count) for i in range(count)]
    return {k: round(float(v), 3) for k, v in consistency_score(images, specs).items()}


def score_model(model, captions: Sequence[str], specs: Sequence[SceneSpec],
                batch: int = 16, by_scene: bool = False) -> dict[str, float]:
    """Shapes consistency of a model's images for `captions` (seeded, so it repeats).

    Args:
        model: anything with `generate(captions, seed=...)` returning uint8 images (a
            `TextToImage`); batch `i // batch` is drawn with seed `i`.
        captions: the captions to draw.
        specs: the scenes they ask for.
        batch: generation batch size.
        by_scene: also score the one-shape and the two-shape scenes apart
            (`consistency_by_scene`), as `one_shape_colour`, ..., `two_shapes_position`
            (a kind the captions do not hold is left out).

    Returns:
        `consistency_score`'s dict, rounded to 3 decimals.

    Example:
        >>> score_model(model, *held_out_captions(32))  # doctest: +SKIP
    """
    images = np.concatenate(
        [model.generate(list(captions[i : i + batch]), seed=i)
         for i in range(0, len(captions), batch)]
    )
    result = consistency_score(images, specs)
    if by_scene:
        for kind, scores in consistency_by_scene(images, specs).items():
            result.update({f"{kind}_{a}": scores[a] for a in ATTRIBUTES})
    return {k: round(float(v), 3) for k, v in result.items()}


def score_cell_code(model, count: int, seed: int = 0,
                    level: str = DEFAULT_LEVEL) -> dict[str, float]:
    """How well STEM's cell code (`training.damsm_cell_code_weight`) says what each cell of a
    held-out caption's scene holds, read from the sentence (`losses.read_cell_code`).

    Args:
        model: anything with `encode_text(captions)["sentence"]` (a `TextToImage`) whose
            STEM learnt the cell code.
        count: how many held-out captions (`held_out_captions`).
        seed: the data seed of the test split.
        level: the dataset's difficulty level.

    Returns:
        `"scenes"`: the fraction of captions with the colour (or emptiness) of all nine
        cells right; `"colour"`, `"shape"`, `"size"`: of the requested shapes, read in their
        cell; `"empty"`: of the cells the caption leaves empty, read empty.

    Example:
        >>> score_cell_code(TextToImage.from_preset("runs/stem"), 256)  # doctest: +SKIP
        {'scenes': 0.91, 'colour': 0.95, 'shape': 0.98, 'size': 0.99, 'empty': 0.99}
    """
    from mirrorgan_tf.losses import read_cell_code  # TensorFlow: only where a model is read

    captions, specs = held_out_captions(count, seed, level)
    truth = np.stack([spec.cell_labels() for spec in specs])
    sentence = model.encode_text(captions)["sentence"]
    read = read_cell_code(sentence, CELL_CODE_CLASSES, len(POSITIONS)).numpy()
    right = read == truth
    occupied = truth[..., 0] != CELL_EMPTY
    result = {"scenes": float(np.all(right[..., 0], axis=1).mean())}
    for index, name in enumerate(("colour", "shape", "size")):
        result[name] = float(right[..., index][occupied].mean())
    result["empty"] = float(right[..., 0][~occupied].mean())
    return {k: round(v, 3) for k, v in result.items()}


def _best_pairing(read: Sequence, requested: Sequence) -> dict[str, int]:
    """Agreeing attributes, counted per attribute, of the best pairing of read to requested shapes.

    Every injective pairing of `requested` shapes to `read` ones (a requested shape may stay
    unpaired) is tried; the one with the most agreeing attributes wins, the first in a fixed
    order on ties.

    Example:
        >>> from mirrorgan_tf.data.shapes import ShapeSpec
        >>> a = ShapeSpec("circle", "red", "large", "top left")
        >>> b = ShapeSpec("star", "blue", "small", "centre")
        >>> _best_pairing([b, a], [a, b])["colour"]
        2
    """
    best: dict[str, int] | None = None
    for pairing in _pairings(len(read), len(requested)):
        counts = {a: sum(k is not None and getattr(read[k], a) == getattr(want, a)
                         for want, k in zip(requested, pairing, strict=True))
                  for a in ATTRIBUTES}
        if best is None or sum(counts.values()) > sum(best.values()):
            best = counts
    return best


def score_captioner(model, count: int, seed: int = 0, level: str = DEFAULT_LEVEL,
                    image_size: int = 64, batch: int = 64) -> dict[str, float]:
    """How well a captioner (STREAM) reads real held-out images: its caption loss's teacher.

    Each of the first `count` test scenes is drawn (real, crisp shapes), captioned by
    `model.caption`, and the caption parsed back (`parse_caption`): an attribute of a requested
    shape counts as read when the caption's shape paired with it has it. Captions of two-shape
    scenes name the shapes in either order (`data.shapes.captions`), so the caption's shapes
    are paired with the scene's as in `read_scene`: the pairing with the most agreeing
    attributes (pairing them in caption order halved the colour read on `full`'s two-shape
    scenes, 0.468 against 0.895, for the shipped STREAM).

    Args:
        model: anything with `caption(uint8 images) -> list[str]` (a `TextToImage` with STREAM).
        count: how many held-out scenes.
        seed: the data seed of the test split.
        level: the dataset's difficulty level.
        image_size: the size the images are drawn at (the `shapes` preset's STREAM reads 64 px).
        batch: images per `caption` call.

    Returns:
        `{"colour", "shape", "size", "position"}` in [0, 1], and `"unreadable"`, the fraction
        of captions that do not parse into a scene (counted wrong on every attribute).

    Example:
        >>> score_captioner(TextToImage.from_preset("runs/gan"), 256)  # doctest: +SKIP
        {'colour': 1.0, 'shape': 0.832, 'size': 1.0, 'position': 1.0, 'unreadable': 0.0}
    """
    test = ShapesDataset("test", num_images=count, seed=seed, image_size=image_size,
                         num_stages=1, level=level)
    _, specs = held_out_captions(count, seed, level)
    images = np.stack([_as_uint8(test.image(i)) for i in range(count)])
    read: list[str] = []
    for start in range(0, count, batch):
        read += list(model.caption(images[start : start + batch]))
    hits, shapes, unreadable = dict.fromkeys(ATTRIBUTES, 0), 0, 0
    for text, spec in zip(read, specs, strict=True):
        got = parse_caption(text)
        unreadable += got is None
        shapes += len(spec.shapes)
        if got is None:
            continue
        for a, agree in _best_pairing(got.shapes, spec.shapes).items():
            hits[a] += agree
    result = {a: round(hits[a] / shapes, 3) for a in ATTRIBUTES}
    result["unreadable"] = round(unreadable / count, 3)
    return result
