"""The consensus of one item's geometric reads (boxes, polygons, masks): pure, shared by the
queue and :func:`truthset.workflow.engine.decide`.

Nothing is re-implemented here: the quality engine does the work.

- **Boxes** (box schemas: the ``box`` objects of each read; polygon schemas: each polygon's
  bounding box, and any box): per image of the item, the readers' boxes are clustered into
  *findings* and fused by weighted box fusion (:func:`truthset.quality.boxes.fuse_boxes`; a
  reader gives at most one box to a finding, boxes of different classes never join), so each
  finding knows how many readers saw it. A polygon finding keeps the member polygon whose
  bounding box overlaps the fused box most. Agreement is the matched F1 of each pair of
  readers at the IoU threshold (:func:`truthset.quality.boxes.matched_f1`, per image, classes
  must match), averaged over the pairs.
- **Masks** (mask schemas: every object of a read, boxes and polygons rasterised): per image
  and class, each reader's union mask; the readers' masks of a region anybody painted are
  combined by STAPLE (:class:`truthset.quality.staple.STAPLE`) or a voxelwise majority vote
  (:func:`truthset.quality.staple.majority_vote_mask`); a reader who painted nothing of the
  region counts as saying "background" there. Agreement is the mean pairwise Dice
  (:func:`truthset.quality.masks.dice`) of the readers' masks per region, averaged over the
  regions.

A finding seen by fewer than ``min_support`` of the readers is kept apart (``minority``): it is
shown with its support but is not part of the consensus label.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from truthset.domain.errors import InputError
from truthset.quality.boxes import fuse_boxes, matched_f1
from truthset.quality.masks import dice
from truthset.quality.shapes import (
    ImageBounds,
    Shape,
    box_object,
    mask_object,
    parse_objects,
    polygon_object,
    rasterise,
)
from truthset.quality.staple import STAPLE, majority_vote_mask

_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def in_words(n: int) -> str:
    """``n`` as a word up to ten, else digits."""
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


@dataclass(frozen=True)
class Finding:
    """One fused object of an item: what the readers saw together.

    ``number`` counts from 1 in the order of the consensus; ``support`` readers (``readers``)
    of ``n_readers`` saw it; ``overlap`` is the mean IoU (boxes) or Dice (masks) of their
    objects with the fused one.
    """

    number: int
    label: str
    frame: int
    kind: str
    box: tuple[float, ...]
    readers: tuple[str, ...]
    n_readers: int
    overlap: float
    points: tuple[tuple[float, float], ...] | None = None
    mask: np.ndarray | None = None

    @property
    def support(self) -> int:
        """How many readers saw it."""
        return len(self.readers)

    @property
    def share(self) -> float:
        """The share of the item's readers who saw it."""
        return self.support / self.n_readers if self.n_readers else 0.0

    def to_object(self) -> dict[str, Any]:
        """The finding as a payload object (web form) with ``finding`` (its number),
        ``support``, ``readers`` and ``score`` (the share of readers who saw it) and the
        overlap (``iou`` for boxes and polygons, ``dice`` for masks)."""
        extra: dict[str, Any] = {"finding": self.number, "support": self.support,
                                 "readers": list(self.readers), "score": round(self.share, 6)}
        if self.kind == "mask":
            assert self.mask is not None
            return mask_object(self.label, self.mask, self.frame, **extra,
                               dice=round(self.overlap, 6))
        if self.kind == "polygon":
            assert self.points is not None
            x0, y0, x1, y1 = self.box[:4]
            return polygon_object(self.label, self.points, self.frame, **extra,
                                  bbox=[x0, y0, x1 - x0, y1 - y0], iou=round(self.overlap, 6))
        if len(self.box) == 6:
            return {"type": "box", "label": self.label, "box": list(self.box), **extra,
                    "iou": round(self.overlap, 6)}
        return box_object(self.label, self.box, self.frame, **extra, iou=round(self.overlap, 6))

    def words(self, multi_frame: bool) -> str:
        """"two of three readers saw finding 2 (nodule)"."""
        where = f" on frame {self.frame}" if multi_frame and self.frame >= 0 else ""
        verb = "painted" if self.kind == "mask" else "saw"
        return (f"{in_words(self.support)} of {in_words(self.n_readers)} readers {verb} "
                f"finding {self.number} ({self.label}{where})")


@dataclass(frozen=True)
class GeometricConsensus:
    """The consensus of one item's geometric reads.

    Attributes
    ----------
    method:
        ``wbf`` (weighted box fusion), ``staple`` or ``vote``.
    metric:
        The agreement figure: ``f1`` (mean pairwise matched F1) or ``dice`` (mean pairwise
        Dice).
    findings:
        Every finding, numbered.
    n_readers:
        Readers of the item.
    agreement:
        The mean pairwise figure (1.0 with fewer than two readers).
    pairs:
        ``(reader, reader, figure)`` of each pair.
    min_support:
        Share of readers a finding needs to be part of the label.
    """

    method: str
    metric: str
    findings: tuple[Finding, ...]
    n_readers: int
    agreement: float
    pairs: tuple[tuple[str, str, float], ...]
    min_support: float
    iou_threshold: float

    @property
    def kept(self) -> tuple[Finding, ...]:
        """Findings seen by at least ``min_support`` of the readers (the label)."""
        return tuple(f for f in self.findings if f.share >= self.min_support - 1e-12
                     and (f.mask is None or bool(f.mask.any())))

    @property
    def minority(self) -> tuple[Finding, ...]:
        """Findings left out of the label: too few readers (or an empty fused mask)."""
        kept = {f.number for f in self.kept}
        return tuple(f for f in self.findings if f.number not in kept)

    def payload(self) -> dict[str, Any]:
        """The consensus label: ``{"objects": [kept findings], "minority": [the others]}``."""
        return {"objects": [f.to_object() for f in self.kept],
                "minority": [f.to_object() for f in self.minority]}

    def parameters(self) -> dict[str, Any]:
        """What the consensus was computed with (stored with the consensus row)."""
        out: dict[str, Any] = {"geometry": self.method, "metric": self.metric,
                               "min_support": self.min_support, "n_readers": self.n_readers,
                               "pairs": [[a, b, round(v, 6)] for a, b, v in self.pairs]}
        if self.metric == "f1":
            out["iou_threshold"] = self.iou_threshold
        return out

    def partial(self) -> tuple[Finding, ...]:
        """Findings some but not all readers saw."""
        return tuple(f for f in self.findings if f.support < self.n_readers)

    def summary(self, target: float) -> str:
        """Why the item is or is not agreed, in words: "mean matched F1 0.33 under target 0.80
        (IoU >= 0.50); two of three readers saw finding 2 (nodule)"."""
        name = ("mean matched F1" if self.metric == "f1" else "mean Dice")
        rel = "under" if self.agreement < target else "reached"
        head = f"{name} {self.agreement:.2f} {rel} target {target:.2f}"
        if self.metric == "f1":
            head += f" (IoU >= {self.iou_threshold:.2f})"
        multi = len({f.frame for f in self.findings}) > 1
        parts = [f.words(multi) for f in self.partial()]
        return "; ".join([head, *parts])


def _by_frame(shapes_by_reader: Mapping[str, Sequence[Shape]]) -> dict[tuple[int, int],
                                                                          dict[str, list[Shape]]]:
    out: dict[tuple[int, int], dict[str, list[Shape]]] = {}
    for reader, shapes in shapes_by_reader.items():
        for shape in shapes:
            out.setdefault((shape.frame, len(shape.box)), {}).setdefault(reader, []).append(shape)
    return out


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    d = len(a) // 2
    inter = float(np.prod([max(0.0, min(a[d + i], b[d + i]) - max(a[i], b[i]))
                           for i in range(d)]))
    va = float(np.prod([a[d + i] - a[i] for i in range(d)]))
    vb = float(np.prod([b[d + i] - b[i] for i in range(d)]))
    union = va + vb - inter
    return inter / union if union > 0 else 0.0


def box_consensus(shapes_by_reader: Mapping[str, Sequence[Shape]], *, iou_threshold: float,
                  min_support: float) -> GeometricConsensus:
    """Cluster and fuse the readers' boxes (and polygons, by their bounding boxes).

    Parameters
    ----------
    shapes_by_reader:
        Reader -> their box / polygon shapes (a reader with none still counts).
    iou_threshold:
        Boxes of two readers are one finding, and match for F1, at IoU >= this.
    min_support:
        Share of readers a finding needs to be part of the label.
    """
    readers = sorted(shapes_by_reader)
    n = len(readers)
    # fuse_boxes joins at IoU > threshold; the policy's threshold is inclusive.
    join = float(np.nextafter(iou_threshold, 0.0))
    found: list[tuple[int, Any, list[Shape]]] = []
    for (frame, width), by_reader in sorted(_by_frame(shapes_by_reader).items()):
        boxes = {r: np.asarray([s.box for s in by_reader.get(r, [])], dtype=float)
                 .reshape(-1, width) for r in readers}
        labels = {r: [s.label for s in by_reader.get(r, [])] for r in readers}
        for f in fuse_boxes(boxes, join, labels_by_reader=labels, n_readers_total=n):
            members = [by_reader[r][i] for r, i in f.members]
            found.append((frame, f, members))
    findings = []
    for number, (frame, f, members) in enumerate(found, start=1):
        fused = tuple(float(v) for v in f.box)
        ious = [_iou(m.box, fused) for m in members]
        polygons = [m for m in members if m.points is not None]
        points = None
        kind = "box"
        if polygons:
            kind = "polygon"
            points = max(polygons, key=lambda m: _iou(m.box, fused)).points
        findings.append(Finding(number, str(f.label), frame, kind, fused, tuple(f.readers), n,
                                float(np.mean(ious)), points=points))
    pairs = []
    groups = _by_frame(shapes_by_reader)
    for a, b in itertools.combinations(readers, 2):
        tp = fp = fn = 0
        for by_reader in groups.values():
            sa, sb = by_reader.get(a, []), by_reader.get(b, [])
            if not sa and not sb:
                continue
            width = len((sa or sb)[0].box)
            m = matched_f1(np.asarray([s.box for s in sa], dtype=float).reshape(-1, width),
                           np.asarray([s.box for s in sb], dtype=float).reshape(-1, width),
                           iou_threshold, pred_labels=[s.label for s in sa],
                           ref_labels=[s.label for s in sb])
            tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
        pairs.append((a, b, 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0))
    agreement = float(np.mean([v for *_ab, v in pairs])) if pairs else 1.0
    return GeometricConsensus("wbf", "f1", tuple(findings), n, agreement, tuple(pairs),
                              min_support, iou_threshold)


def mask_consensus(shapes_by_reader: Mapping[str, Sequence[Shape]], *, method: str,
                   min_support: float, bounds: ImageBounds | None = None) -> GeometricConsensus:
    """Combine the readers' masks per image and class (STAPLE or majority vote).

    Parameters
    ----------
    shapes_by_reader:
        Reader -> their shapes (boxes and polygons are rasterised).
    method:
        ``staple`` or ``vote``.
    min_support:
        Share of readers a region needs to be part of the label.
    bounds:
        The image size (needed when a region holds no mask object to take it from).

    Raises
    ------
    InputError
        Masks of different sizes, or a box / polygon on an item whose size is unknown.
    """
    if method not in ("staple", "vote"):
        raise InputError(f"unknown mask method {method!r}; use staple or vote", field="mask_method")
    readers = sorted(shapes_by_reader)
    n = len(readers)
    size = (bounds.height, bounds.width) if bounds is not None else None
    for shapes in shapes_by_reader.values():
        for s in shapes:
            if s.mask is not None:
                if size is None:
                    size = s.mask.shape
                elif s.mask.shape != size:
                    raise InputError(f"mask size {list(s.mask.shape)} differs from the item's "
                                     f"other masks {list(size)}", field=f"objects.{s.index}")
    regions: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for reader in readers:
        for s in shapes_by_reader[reader]:
            if s.frame < 0:
                continue  # a 3D box has no place in a per-image mask
            if size is None:
                raise InputError("the image size of this item is unknown, so its boxes and "
                                 "polygons cannot be compared as masks", field="objects")
            pixels = rasterise(s, int(size[0]), int(size[1]))
            if not pixels.any():
                continue
            held = regions.setdefault((s.frame, s.label), {})
            held[reader] = held[reader] | pixels if reader in held else pixels
    findings: list[Finding] = []
    region_agreement: list[float] = []
    pair_values: dict[tuple[str, str], list[float]] = {}
    # Numbered as box findings are: per image, the most readers first, then by class.
    ordered = sorted(regions.items(), key=lambda kv: (kv[0][0], -len(kv[1]), kv[0][1]))
    for number, ((frame, label), held) in enumerate(ordered, start=1):
        assert size is not None
        empty = np.zeros(size, dtype=bool)
        masks = [held.get(r, empty) for r in readers]
        if method == "staple":
            fused = STAPLE().fit(masks, readers).consensus
        else:
            fused = majority_vote_mask(masks, readers)
        saw = tuple(r for r in readers if r in held)
        overlap = float(np.mean([dice(held[r], fused) for r in saw]))
        values = []
        for (i, a), (j, b) in itertools.combinations(enumerate(readers), 2):
            v = dice(masks[i], masks[j])
            values.append(v)
            pair_values.setdefault((a, b), []).append(v)
        region_agreement.append(float(np.mean(values)) if values else 1.0)
        x0y0 = np.argwhere(fused)
        box: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
        if x0y0.size:
            lo, hi = x0y0.min(axis=0), x0y0.max(axis=0) + 1
            box = (float(lo[1]), float(lo[0]), float(hi[1]), float(hi[0]))
        findings.append(Finding(number, label, frame, "mask", box, saw, n, overlap,
                                mask=np.asarray(fused, dtype=bool)))
    pairs = tuple((a, b, float(np.mean(pair_values.get((a, b), [1.0]))))
                  for a, b in itertools.combinations(readers, 2))
    agreement = float(np.mean(region_agreement)) if region_agreement else 1.0
    return GeometricConsensus(method, "dice", tuple(findings), n, agreement, pairs, min_support,
                              0.0)


def read_shapes(kind: str, payload: Mapping[str, Any], *,
                bounds: ImageBounds | None = None) -> list[Shape]:
    """The shapes of one read that take part in the consensus of a ``kind`` schema: boxes in a
    box schema, polygons and boxes in a polygon schema, everything in a mask schema."""
    shapes = parse_objects(payload, bounds=bounds)
    if kind == "box":
        return [s for s in shapes if s.kind == "box"]
    if kind == "polygon":
        return [s for s in shapes if s.kind in ("box", "polygon")]
    return shapes


def geometric_consensus(kind: str, reads: Sequence[tuple[str, Mapping[str, Any]]], *,
                        iou_threshold: float, min_support: float, mask_method: str,
                        bounds: ImageBounds | None = None) -> GeometricConsensus:
    """The consensus of one item's reads ``(reader, payload)`` on a ``kind`` schema (``box``,
    ``polygon`` or ``mask``); a reader with several reads counts with their last.

    Raises
    ------
    InputError
        A malformed payload (the object and field are named) or an unknown kind.
    """
    if kind not in ("box", "polygon", "mask"):
        raise InputError(f"no geometric consensus for a {kind} schema", field="schema")
    by_reader: dict[str, list[Shape]] = {}
    for reader, payload in reads:
        by_reader[reader] = read_shapes(kind, payload, bounds=bounds)
    if kind == "mask":
        return mask_consensus(by_reader, method=mask_method, min_support=min_support,
                              bounds=bounds)
    return box_consensus(by_reader, iou_threshold=iou_threshold, min_support=min_support)
