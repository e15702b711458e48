"""How each pair of readers of one item agree, class by class: pure, on the quality engine, the
figures the workflow's agreement uses.

:func:`pairwise_by_class` compares every pair of an item's reads (``(reader, payload)``) on
each class of the schema and gives one :class:`PairClass` per pair, class and image where at
least one of the two marks the class, and the classes one reader marked where the other
marked another (:attr:`Pairwise.confusions`):

- **boxes, polygons** (objects as :func:`truthset.workflow.geometric.read_shapes` takes them;
  polygons by their bounding boxes): the optimal one-to-one matching of the two readers'
  objects of the class on each image at the IoU threshold
  (:func:`truthset.quality.boxes.matched_f1`): matched pairs ``tp`` and the objects only the
  first (``fp``) or only the second (``fn``) drew, so the pair's figure is the matched F1.
  An unmatched object of one class that the other reader drew as another class (IoU >= the
  threshold, :func:`truthset.quality.boxes.box_iou_matrix`) is a confusion between them.
- **masks**: the Dice of the two readers' masks of the class on each image
  (:func:`truthset.quality.masks.dice`; boxes and polygons rasterised); the pixels one painted
  as a class and the other as another are the confusion's weight.
- **multi-label**: each marked class is one "object": both marked it (``tp``) or only one
  did, so the figure pooled over items is the positive specific agreement
  ``2·both / (marks of the first + marks of the second)``; a class one marked while the other
  marked another instead is a confusion.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from truthset.domain.errors import InputError
from truthset.quality.boxes import box_iou_matrix, matched_f1
from truthset.quality.masks import dice
from truthset.quality.shapes import ImageBounds, Shape, rasterise
from truthset.workflow.engine import named_classes
from truthset.workflow.geometric import read_shapes

#: The pair figure per schema shape: matched F1 (boxes, polygons; multi-label: positive
#: specific agreement, the same formula on marked classes) or Dice (masks).
METRICS = {"box": "f1", "polygon": "f1", "multi": "f1", "mask": "dice"}


@dataclass(frozen=True)
class PairClass:
    """Two readers of one item on one class on one image (``frame``; 0 for multi-label, -1
    for 3D boxes); at least one of them marks it.

    ``tp``, ``fp``, ``fn``: matched objects, objects only ``reader_a`` / only ``reader_b``
    drew (boxes, polygons, multi-label); ``dice``: masks.
    """

    reader_a: str
    reader_b: str
    class_name: str
    frame: int
    a_has: bool
    b_has: bool
    tp: int = 0
    fp: int = 0
    fn: int = 0
    dice: float | None = None

    @property
    def figure(self) -> float:
        """The pair's matched F1 (or Dice) on this class and image."""
        if self.dice is not None:
            return self.dice
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else 1.0


@dataclass(frozen=True)
class Pairwise:
    """Every pair of an item's readers, class by class.

    Attributes
    ----------
    metric:
        ``f1`` or ``dice``.
    readers:
        The item's readers (sorted).
    marked:
        Reader -> the classes they marked on the item.
    records:
        One :class:`PairClass` per pair, class and image where either marks the class.
    confusions:
        ``(class, other class, weight)``: a reader's mark of ``class`` met the other reader's
        ``other class`` (both directions of each pair; weight in objects, marked classes or
        pixels).
    """

    metric: str
    readers: tuple[str, ...]
    marked: dict[str, frozenset[str]]
    records: tuple[PairClass, ...]
    confusions: tuple[tuple[str, str, float], ...]

    def pair_figure(self, a: str, b: str) -> float:
        """The two readers' figure on the whole item: matched F1 pooled over classes and
        images (1.0 when neither marks anything), or the mean Dice over the class-images
        either paints."""
        mine = [r for r in self.records if {r.reader_a, r.reader_b} == {a, b}]
        if not mine:
            return 1.0
        if self.metric == "dice":
            return float(np.mean([r.figure for r in mine]))
        tp, fp, fn = (sum(getattr(r, k) for r in mine) for k in ("tp", "fp", "fn"))
        return 2 * tp / (2 * tp + fp + fn)


def _groups(shapes: Sequence[Shape], cls: str) -> dict[tuple[int, int], list[Shape]]:
    out: dict[tuple[int, int], list[Shape]] = {}
    for s in shapes:
        if s.label == cls:
            out.setdefault((s.frame, len(s.box)), []).append(s)
    return out


def _corners(shapes: Sequence[Shape], width: int) -> np.ndarray:
    return np.asarray([s.box for s in shapes], dtype=float).reshape(-1, width)


def _box_pair(a: str, b: str, sa: Sequence[Shape], sb: Sequence[Shape],
              classes: Sequence[str], iou_threshold: float
              ) -> tuple[list[PairClass], list[tuple[str, str, float]]]:
    records: list[PairClass] = []
    confusions: list[tuple[str, str, float]] = []
    unmatched: dict[str, list[Shape]] = {a: [], b: []}
    for cls in classes:
        ga, gb = _groups(sa, cls), _groups(sb, cls)
        for frame, width in sorted(set(ga) | set(gb)):
            xa, xb = ga.get((frame, width), []), gb.get((frame, width), [])
            m = matched_f1(_corners(xa, width), _corners(xb, width), iou_threshold)
            records.append(PairClass(a, b, cls, frame, bool(xa), bool(xb), m.tp, m.fp, m.fn))
            hit_a = {i for i, _j, _v in m.matches}
            hit_b = {j for _i, j, _v in m.matches}
            unmatched[a] += [s for k, s in enumerate(xa) if k not in hit_a]
            unmatched[b] += [s for k, s in enumerate(xb) if k not in hit_b]
    for mine, theirs in ((a, sb), (b, sa)):
        for s in unmatched[mine]:
            others = [o for o in theirs if o.label != s.label and o.frame == s.frame
                      and len(o.box) == len(s.box)]
            if not others:
                continue
            iou = box_iou_matrix(np.asarray([s.box], dtype=float), _corners(others, len(s.box)))
            best = int(np.argmax(iou[0]))
            if iou[0, best] >= iou_threshold:
                confusions.append((s.label, others[best].label, 1.0))
    return records, confusions


def _planes(shapes: Sequence[Shape], size: tuple[int, int] | None
            ) -> dict[tuple[int, str], np.ndarray]:
    out: dict[tuple[int, str], np.ndarray] = {}
    for s in shapes:
        if s.frame < 0:
            continue  # a 3D box has no place in a per-image mask
        if size is None:
            raise InputError("the image size of this item is unknown, so its boxes and "
                             "polygons cannot be compared as masks", field="objects")
        pixels = rasterise(s, size[0], size[1])
        if not pixels.any():
            continue
        key = (s.frame, s.label)
        out[key] = out[key] | pixels if key in out else pixels
    return out


def _mask_pair(a: str, b: str, pa: Mapping[tuple[int, str], np.ndarray],
               pb: Mapping[tuple[int, str], np.ndarray], classes: Sequence[str],
               size: tuple[int, int] | None
               ) -> tuple[list[PairClass], list[tuple[str, str, float]]]:
    records = []
    for frame, cls in sorted(set(pa) | set(pb), key=lambda k: (k[0], classes.index(k[1])
                                                             if k[1] in classes else -1)):
        assert size is not None
        empty = np.zeros(size, dtype=bool)
        ma, mb = pa.get((frame, cls), empty), pb.get((frame, cls), empty)
        records.append(PairClass(a, b, cls, frame, (frame, cls) in pa, (frame, cls) in pb,
                                 dice=dice(ma, mb)))
    confusions = []
    for mine, theirs in ((pa, pb), (pb, pa)):
        for (frame, cls), pixels in mine.items():
            for (f2, other), there in theirs.items():
                if f2 == frame and other != cls:
                    overlap = int(np.count_nonzero(pixels & there))
                    if overlap:
                        confusions.append((cls, other, float(overlap)))
    return records, confusions


def _multi_pair(a: str, b: str, ca: frozenset[str], cb: frozenset[str],
                classes: Sequence[str]) -> tuple[list[PairClass], list[tuple[str, str, float]]]:
    records = [PairClass(a, b, c, 0, c in ca, c in cb, int(c in ca and c in cb),
                         int(c in ca and c not in cb), int(c in cb and c not in ca))
               for c in classes if c in ca or c in cb]
    confusions = [(c, d, 1.0) for mine, theirs in ((ca, cb), (cb, ca))
                  for c in sorted(mine - theirs) for d in sorted(theirs - mine)]
    return records, confusions


def pairwise_by_class(shape: str, reads: Sequence[tuple[str, Mapping[str, Any]]], *,
                      classes: Sequence[str], iou_threshold: float = 0.5,
                      bounds: ImageBounds | None = None) -> Pairwise:
    """Compare every pair of an item's reads ``(reader, payload)`` class by class.

    Parameters
    ----------
    shape:
        ``box``, ``polygon``, ``mask`` or ``multi``.
    reads:
        The item's reads; a reader with several counts with their last.
    classes:
        The schema's classes, in order.
    iou_threshold:
        Boxes and polygons: two objects match at IoU >= this.
    bounds:
        The item's image size (masks: needed when no mask object gives it).

    Raises
    ------
    InputError
        An unknown shape, or a malformed payload (the object is named).
    """
    if shape not in METRICS:
        raise InputError(f"no pairwise class figures for a {shape} schema", field="schema")
    last = dict(reads)
    readers = tuple(sorted(last))
    records: list[PairClass] = []
    confusions: list[tuple[str, str, float]] = []
    if shape == "multi":
        sets = {r: frozenset(c for c in named_classes(last[r]) if c in classes)
                for r in readers}
        for a, b in itertools.combinations(readers, 2):
            rec, con = _multi_pair(a, b, sets[a], sets[b], classes)
            records += rec
            confusions += con
        return Pairwise("f1", readers, sets, tuple(records), tuple(confusions))
    shapes = {r: read_shapes(shape, last[r], bounds=bounds) for r in readers}
    marked = {r: frozenset(s.label for s in shapes[r]) for r in readers}
    if shape == "mask":
        size = (bounds.height, bounds.width) if bounds is not None else None
        for s in itertools.chain.from_iterable(shapes.values()):
            if s.mask is not None and size is None:
                size = (int(s.mask.shape[0]), int(s.mask.shape[1]))
        planes = {r: _planes(shapes[r], size) for r in readers}
        marked = {r: frozenset(c for _f, c in planes[r]) for r in readers}
        for a, b in itertools.combinations(readers, 2):
            rec, con = _mask_pair(a, b, planes[a], planes[b], classes, size)
            records += rec
            confusions += con
        return Pairwise("dice", readers, marked, tuple(records), tuple(confusions))
    for a, b in itertools.combinations(readers, 2):
        rec, con = _box_pair(a, b, shapes[a], shapes[b], classes, iou_threshold)
        records += rec
        confusions += con
    return Pairwise("f1", readers, marked, tuple(records), tuple(confusions))
