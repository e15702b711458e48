"""One read against a known answer (gold or calibration), for every schema the workflow runs:
pure, on the quality engine, the same figures the consensus uses.

:func:`score_read` compares a reader's payload with the reference payload of a known-answer
item and gives a :class:`ReadScore`: the read's overall score in [0, 1] and, per class of the
schema, whether the reference and the read have the class and the counts the per-class
figures of :mod:`truthset.workflow.readers` are pooled from.

=============  ============================================  ===================================
schema          overall score of a read                        per class
=============  ============================================  ===================================
single          1 if the class is the reference's, else 0      reference / read has it
multi-label     share of the schema's classes answered right   reference / read has it
                (present or absent; 1 − Hamming loss)
box, polygon    matched F1 of the read's objects against the   matched, reference and read
                reference at the policy's ``iou_threshold``    objects (optimal one-to-one
                (:func:`truthset.quality.boxes.matched_f1`:    matching, classes must match)
                optimal one-to-one matching, classes must
                match; 1.0 when both have no object)
mask            mean Dice over the classes the reference or    Dice of the class's masks over
                the read paints (1.0 when neither paints       every frame
                anything)                                      (:func:`truthset.quality.masks.
                                                               dice`), passed at ``target_dice``
=============  ============================================  ===================================

Polygons are matched by their bounding boxes, as the consensus of polygon reads fuses them
(:func:`truthset.workflow.geometric.box_consensus`); in a mask schema boxes and polygons are
rasterised. Which objects take part is :func:`truthset.workflow.geometric.read_shapes`'s
rule: boxes in a box schema, polygons and boxes in a polygon schema, everything in a mask
schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from truthset.domain.errors import InputError
from truthset.quality.boxes import matched_f1
from truthset.quality.masks import dice
from truthset.quality.shapes import ImageBounds, Shape, rasterise
from truthset.workflow.engine import named_classes
from truthset.workflow.geometric import read_shapes

#: Schema shapes :func:`score_read` scores (those of :func:`truthset.workflow.engine.
#: schema_shape`).
SHAPES = ("single", "multi", "box", "polygon", "mask")


@dataclass(frozen=True)
class ClassScore:
    """One class of one read against the reference.

    Attributes
    ----------
    class_name:
        The class.
    truth, said:
        Whether the reference / the read has the class (a label, a marked class, at least one
        object, any painted pixel).
    matched, n_truth, n_said:
        Boxes and polygons: matched pairs, reference objects and read objects of the class.
    dice:
        Masks: Dice of the read's and the reference's masks of the class over every frame
        (``None`` when neither paints it).
    """

    class_name: str
    truth: bool
    said: bool
    matched: int = 0
    n_truth: int = 0
    n_said: int = 0
    dice: float | None = None


@dataclass(frozen=True)
class ReadScore:
    """A read against its reference: ``score`` in [0, 1] and one :class:`ClassScore` per
    class of the schema (schema order)."""

    score: float
    classes: tuple[ClassScore, ...]


def score_read(shape: str, read: Mapping[str, Any], truth: Mapping[str, Any], *,
               classes: Sequence[str], iou_threshold: float = 0.5,
               bounds: ImageBounds | None = None) -> ReadScore:
    """Score one read against the reference answer of its item.

    Parameters
    ----------
    shape:
        ``single``, ``multi``, ``box``, ``polygon`` or ``mask``
        (:func:`truthset.workflow.engine.schema_shape`).
    read, truth:
        The reader's payload and the reference payload.
    classes:
        The schema's classes, in order.
    iou_threshold:
        Boxes and polygons: a read object matches a reference object at IoU >= this.
    bounds:
        The item's image size (masks: needed when no mask object gives it).

    Raises
    ------
    InputError
        An unknown shape, or masks of different sizes / a box to rasterise on an image of
        unknown size.
    """
    if shape in ("single", "multi"):
        said_set = set(named_classes(read))
        true_set = set(named_classes(truth))
        rows = tuple(ClassScore(c, c in true_set, c in said_set) for c in classes)
        if shape == "single":
            hit = float(bool(true_set) and said_set == true_set)
            return ReadScore(hit, rows)
        right = [r.truth == r.said for r in rows]
        return ReadScore(float(np.mean(right)) if right else 1.0, rows)
    if shape in ("box", "polygon"):
        return _score_boxes(shape, read, truth, classes, iou_threshold, bounds)
    if shape == "mask":
        return _score_masks(read, truth, classes, bounds)
    raise InputError(f"no scoring against a known answer for a {shape} schema", field="schema")


def _groups(shapes: Sequence[Shape], cls: str) -> dict[tuple[int, int], list[Shape]]:
    out: dict[tuple[int, int], list[Shape]] = {}
    for s in shapes:
        if s.label == cls:
            out.setdefault((s.frame, len(s.box)), []).append(s)
    return out


def _score_boxes(shape: str, read: Mapping[str, Any], truth: Mapping[str, Any],
                 classes: Sequence[str], iou_threshold: float,
                 bounds: ImageBounds | None) -> ReadScore:
    said = read_shapes(shape, read, bounds=bounds)
    true = read_shapes(shape, truth, bounds=bounds)
    rows = []
    for cls in classes:
        mine, ref = _groups(said, cls), _groups(true, cls)
        matched = 0
        for key in set(mine) | set(ref):
            width = key[1]
            a = np.asarray([s.box for s in mine.get(key, [])], dtype=float).reshape(-1, width)
            b = np.asarray([s.box for s in ref.get(key, [])], dtype=float).reshape(-1, width)
            matched += matched_f1(a, b, iou_threshold).tp
        n_said = sum(len(v) for v in mine.values())
        n_truth = sum(len(v) for v in ref.values())
        rows.append(ClassScore(cls, n_truth > 0, n_said > 0, matched, n_truth, n_said))
    tp = sum(r.matched for r in rows)
    total = sum(r.n_truth + r.n_said for r in rows)
    return ReadScore(2 * tp / total if total else 1.0, tuple(rows))


def _size(shapes: Sequence[Shape], bounds: ImageBounds | None) -> tuple[int, int] | None:
    size = (bounds.height, bounds.width) if bounds is not None else None
    for s in shapes:
        if s.mask is not None:
            if size is None:
                size = (int(s.mask.shape[0]), int(s.mask.shape[1]))
            elif tuple(s.mask.shape) != size:
                raise InputError(f"mask size {list(s.mask.shape)} differs from the item's "
                                 f"{list(size)}", field=f"objects.{s.index}")
    return size


def _class_planes(shapes: Sequence[Shape], size: tuple[int, int] | None
                  ) -> dict[str, dict[int, np.ndarray]]:
    """Class -> frame -> the union of the class's pixels on that frame."""
    out: dict[str, dict[int, np.ndarray]] = {}
    for s in shapes:
        if s.frame < 0:
            continue  # a 3D box has no place in a per-image mask
        if size is None:
            raise InputError("the image size of this item is unknown, so its boxes and "
                             "polygons cannot be compared as masks", field="objects")
        pixels = rasterise(s, size[0], size[1])
        held = out.setdefault(s.label, {})
        held[s.frame] = held[s.frame] | pixels if s.frame in held else pixels
    return out


def _score_masks(read: Mapping[str, Any], truth: Mapping[str, Any], classes: Sequence[str],
                 bounds: ImageBounds | None) -> ReadScore:
    said = read_shapes("mask", read, bounds=bounds)
    true = read_shapes("mask", truth, bounds=bounds)
    size = _size([*said, *true], bounds)
    mine, ref = _class_planes(said, size), _class_planes(true, size)
    rows = []
    for cls in classes:
        a, b = mine.get(cls, {}), ref.get(cls, {})
        has_a = any(bool(m.any()) for m in a.values())
        has_b = any(bool(m.any()) for m in b.values())
        value = None
        if has_a or has_b:
            assert size is not None
            frames = sorted(set(a) | set(b))
            empty = np.zeros(size, dtype=bool)
            value = dice(np.stack([a.get(f, empty) for f in frames]),
                         np.stack([b.get(f, empty) for f in frames]))
        rows.append(ClassScore(cls, has_b, has_a, dice=value))
    values = [r.dice for r in rows if r.dice is not None]
    return ReadScore(float(np.mean(values)) if values else 1.0, tuple(rows))
