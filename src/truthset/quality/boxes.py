"""Bounding-box agreement: IoU, optimally matched F1, and multi-reader box fusion.

Boxes are ``[x0, y0, x1, y1]`` (2D) or ``[x0, y0, z0, x1, y1, z1]`` (3D) in continuous
coordinates: a box's extent along an axis is ``x1 - x0`` (no "+1 pixel" convention), so touching
boxes have IoU 0.

- :func:`box_iou_matrix` — every pairwise IoU.
- :func:`matched_f1` — one-to-one matching of predictions to references that maximises first
  the number of pairs with IoU >= threshold, then their total IoU (Hungarian algorithm,
  ``scipy.optimize.linear_sum_assignment``). Greedy matching by highest IoU can miss pairs;
  this cannot.
- :func:`fuse_boxes` / :func:`fuse_box_table` — several readers' boxes of one image clustered
  into *findings* (per class; a reader contributes at most one box to a finding), each fused
  by weighted box fusion (Solovyev, Wang & Gabruseva, "Weighted boxes fusion", Image and
  Vision Computing 107, 2021): boxes are visited by decreasing confidence x reader weight and
  join the finding whose current fused box overlaps them most (IoU > threshold); the fused
  box is the confidence-weighted mean of its members' coordinates. With one box per reader
  and finding, the coordinates equal those of ``ensemble_boxes.weighted_boxes_fusion``.
- :class:`BoxFusion` — :func:`fuse_box_table` in the estimator shape of the other aggregators
  (``fit`` / ``fit_predict``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment

from truthset.domain.errors import InputError
from truthset.quality.table import as_pandas

__all__ = [
    "BoxMatch",
    "Finding",
    "box_iou_matrix",
    "fuse_box_table",
    "fuse_boxes",
    "matched_f1",
]


def _boxes(x: ArrayLike, name: str, ndim: int | None = None) -> NDArray[np.float64]:
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        if ndim is not None:
            width = 2 * ndim
        elif arr.ndim == 2 and arr.shape[1] in (4, 6):
            width = arr.shape[1]
        else:
            width = 4
        return np.zeros((0, width))
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] not in (4, 6):
        raise InputError(
            f"{name} must be an (n, 4) or (n, 6) array of boxes, got shape {arr.shape}"
        )
    if ndim is not None and arr.shape[1] != 2 * ndim:
        raise InputError(f"{name} has {arr.shape[1] // 2}D boxes, expected {ndim}D")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} has non-finite coordinates")
    d = arr.shape[1] // 2
    bad = np.flatnonzero(np.any(arr[:, d:] < arr[:, :d], axis=1))
    if bad.size:
        raise InputError(
            f"{name}: max corner below min corner: {arr[bad[0]].tolist()}",
            location=f"box {int(bad[0])}",
        )
    return arr


def _iou(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    d = a.shape[1] // 2
    lo = np.maximum(a[:, None, :d], b[None, :, :d])
    hi = np.minimum(a[:, None, d:], b[None, :, d:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    vol_a = np.prod(a[:, d:] - a[:, :d], axis=1)
    vol_b = np.prod(b[:, d:] - b[:, :d], axis=1)
    union = vol_a[:, None] + vol_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def box_iou_matrix(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Intersection over union of every box in ``a`` with every box in ``b``.

    Parameters
    ----------
    a, b:
        ``(n, 4)`` / ``(m, 4)`` arrays of ``[x0, y0, x1, y1]`` (or ``(n, 6)`` 3D boxes).

    Returns
    -------
    numpy.ndarray
        ``(n, m)`` IoUs in [0, 1]; 0 where the union has no area (degenerate boxes).

    Raises
    ------
    InputError
        When a box is malformed (wrong width, non-finite, max corner below min corner) or
        the two sets have different dimensions.
    """
    ba = _boxes(a, "a")
    bb = _boxes(b, "b", ndim=ba.shape[1] // 2)
    if ba.shape[1] != bb.shape[1]:
        raise InputError(f"a has {ba.shape[1] // 2}D boxes, b has {bb.shape[1] // 2}D boxes")
    return _iou(ba, bb)


@dataclass(frozen=True)
class BoxMatch:
    """Result of :func:`matched_f1`.

    Attributes
    ----------
    precision, recall, f1:
        Detection scores. With nothing predicted and nothing to find all three are 1.0; a
        score whose denominator is 0 is 1.0 when the other kind of error is also absent,
        else 0.0.
    tp, fp, fn:
        Matched pairs, unmatched predictions, unmatched references.
    matches:
        ``(pred_index, ref_index, iou)`` for each matched pair, sorted by ``pred_index``.
    """

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    matches: tuple[tuple[int, int, float], ...]


def matched_f1(
    pred: ArrayLike,
    ref: ArrayLike,
    iou_threshold: float = 0.5,
    *,
    pred_labels: Sequence[object] | None = None,
    ref_labels: Sequence[object] | None = None,
) -> BoxMatch:
    """Precision, recall and F1 of predicted boxes under an optimal one-to-one matching.

    A pair may match when its IoU is at least ``iou_threshold`` (and, when labels are given,
    both boxes have the same label). Among all one-to-one matchings the one with the most
    pairs is chosen, ties broken by the largest total IoU (Hungarian algorithm).

    Parameters
    ----------
    pred, ref:
        Predicted and reference boxes, ``(n, 4)`` / ``(m, 4)`` (or 3D ``(n, 6)``).
    iou_threshold:
        Smallest IoU of a match, in (0, 1].
    pred_labels, ref_labels:
        Optional class of each box; boxes of different classes never match.

    Returns
    -------
    BoxMatch
        Scores, counts and the matched pairs.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
    p = _boxes(pred, "pred")
    r = _boxes(ref, "ref", ndim=p.shape[1] // 2 if p.size else None)
    if p.size and r.size and p.shape[1] != r.shape[1]:
        raise InputError("pred and ref boxes have different dimensions")
    iou = _iou(p, r) if p.size and r.size else np.zeros((len(p), len(r)))
    ok = iou >= iou_threshold
    if (pred_labels is None) != (ref_labels is None):
        raise InputError("give labels for both pred and ref, or for neither")
    if pred_labels is not None and ref_labels is not None:
        pl = np.asarray(pred_labels, dtype=object)
        rl = np.asarray(ref_labels, dtype=object)
        if pl.shape != (len(p),) or rl.shape != (len(r),):
            raise InputError("one label per box is needed", field="labels")
        ok &= pl[:, None] == rl[None, :]
    matches: list[tuple[int, int, float]] = []
    if ok.any():
        # Lexicographic objective: each eligible pair is worth 1 + iou / K with K larger than
        # the number of pairs, so more pairs always win and total IoU breaks ties.
        k = min(ok.shape) + 1
        gain = np.where(ok, 1.0 + iou / k, 0.0)
        rows, cols = linear_sum_assignment(gain, maximize=True)
        matches = [
            (int(i), int(j), float(iou[i, j])) for i, j in zip(rows, cols, strict=True) if ok[i, j]
        ]
    tp = len(matches)
    fp = len(p) - tp
    fn = len(r) - tp
    precision = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    recall = tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else 0.0)
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    return BoxMatch(precision, recall, f1, tp, fp, fn, tuple(sorted(matches)))


# --------------------------------------------------------------------------- fusion


@dataclass(frozen=True)
class Finding:
    """One finding: the fused box of a cluster of readers' boxes.

    Attributes
    ----------
    box:
        Fused coordinates (confidence x reader-weight weighted mean of the members).
    label:
        Class of the finding.
    readers:
        Readers who marked it, sorted.
    members:
        ``(reader, index of the box in that reader's list)`` for each member box.
    n_readers, n_readers_total:
        Readers who marked it, and readers who read the image.
    support:
        ``n_readers / n_readers_total``.
    mean_confidence:
        Mean score of the member boxes; ``None`` when no scores were given.
    """

    box: tuple[float, ...]
    label: object
    readers: tuple[str, ...]
    members: tuple[tuple[str, int], ...]
    n_readers: int
    n_readers_total: int
    support: float
    mean_confidence: float | None


def _sort_key(value: object) -> tuple[str, str]:
    return (type(value).__name__, str(value))


def fuse_boxes(
    boxes_by_reader: Mapping[str, ArrayLike],
    iou_threshold: float = 0.55,
    *,
    labels_by_reader: Mapping[str, Sequence[object]] | None = None,
    scores_by_reader: Mapping[str, ArrayLike] | None = None,
    reader_weights: Mapping[str, float] | None = None,
    n_readers_total: int | None = None,
) -> list[Finding]:
    """Cluster several readers' boxes of one image into findings and fuse each cluster.

    Boxes are visited in decreasing order of ``score x reader weight`` (ties broken by
    coordinates, then reader name, so the result does not depend on input order). Each box
    joins the existing finding of its class whose fused box has the highest IoU with it, if
    that IoU exceeds ``iou_threshold`` and the finding has no box of the same reader yet;
    otherwise it starts a new finding. The fused box is recomputed after every join as the
    ``score x weight``-weighted mean of its members (the plain mean when all weights are 0).

    Parameters
    ----------
    boxes_by_reader:
        Reader -> ``(n, 4)`` boxes (``(n, 6)`` in 3D). A reader with no boxes (an empty array)
        still counts in ``n_readers_total``.
    iou_threshold:
        A box joins a finding when IoU > this (``ensemble-boxes`` convention).
    labels_by_reader:
        Reader -> class of each box; default one class (``None``).
    scores_by_reader:
        Reader -> confidence of each box; default 1 for every box.
    reader_weights:
        Reader -> weight (default 1); multiplies the scores.
    n_readers_total:
        Readers who read the image; default ``len(boxes_by_reader)``.

    Returns
    -------
    list[Finding]
        Findings sorted by decreasing support, then class, then coordinates.
    """
    if not 0.0 <= iou_threshold < 1.0:
        raise InputError(f"iou_threshold must lie in [0, 1), got {iou_threshold}")
    total = len(boxes_by_reader) if n_readers_total is None else int(n_readers_total)
    entries: list[tuple[float, tuple[float, ...], str, int, object, float]] = []
    width: int | None = None
    has_scores = scores_by_reader is not None
    for reader, raw in boxes_by_reader.items():
        reader = str(reader)
        arr = _boxes(raw, f"boxes of {reader}", ndim=None if width is None else width // 2)
        if len(arr) == 0:
            continue
        width = arr.shape[1]
        labels: Sequence[object] = (
            labels_by_reader.get(reader, [None] * len(arr))
            if labels_by_reader is not None
            else [None] * len(arr)
        )
        scores = (
            np.asarray(scores_by_reader.get(reader, np.ones(len(arr))), dtype=np.float64)
            if scores_by_reader is not None
            else np.ones(len(arr))
        )
        if len(labels) != len(arr) or scores.shape != (len(arr),):
            raise InputError(f"reader {reader}: one label and one score per box are needed")
        if np.any(~np.isfinite(scores)) or np.any(scores < 0):
            raise InputError(f"reader {reader}: scores must be finite and >= 0")
        w = 1.0 if reader_weights is None else float(reader_weights.get(reader, 1.0))
        if not (math.isfinite(w) and w >= 0):
            raise InputError(f"reader {reader}: weight must be finite and >= 0, got {w}")
        for i in range(len(arr)):
            entries.append(
                (
                    float(scores[i]) * w,
                    tuple(arr[i].tolist()),
                    reader,
                    i,
                    labels[i],
                    float(scores[i]),
                )
            )
    if total < len({e[2] for e in entries}):
        raise InputError(
            f"n_readers_total={total} is below the number of readers with boxes",
            field="n_readers_total",
        )
    entries.sort(key=lambda e: (-e[0], e[1], e[2], e[3]))

    findings: list[Finding] = []
    by_label: dict[tuple[str, str], list[int]] = {}
    groups: list[list[tuple[float, tuple[float, ...], str, int, object, float]]] = []
    fused: list[NDArray[np.float64]] = []
    for entry in entries:
        key = _sort_key(entry[4])
        candidates = by_label.setdefault(key, [])
        box = np.asarray(entry[1])[None, :]
        best, best_iou = -1, iou_threshold
        if candidates:
            ious = _iou(box, np.stack([fused[c] for c in candidates]))[0]
            for pos, c in enumerate(candidates):
                taken = any(m[2] == entry[2] for m in groups[c])
                if not taken and ious[pos] > best_iou:
                    best, best_iou = c, float(ious[pos])
        if best < 0:
            groups.append([entry])
            fused.append(np.asarray(entry[1], dtype=np.float64))
            candidates.append(len(groups) - 1)
        else:
            groups[best].append(entry)
            fused[best] = _weighted_box(groups[best])

    for members, fbox in zip(groups, fused, strict=True):
        readers = tuple(sorted(m[2] for m in members))
        findings.append(
            Finding(
                box=tuple(float(v) for v in fbox),
                label=members[0][4],
                readers=readers,
                members=tuple(sorted((m[2], m[3]) for m in members)),
                n_readers=len(readers),
                n_readers_total=total,
                support=len(readers) / total if total else 0.0,
                mean_confidence=float(np.mean([m[5] for m in members])) if has_scores else None,
            )
        )
    findings.sort(key=lambda f: (-f.support, _sort_key(f.label), f.box))
    return findings


def _weighted_box(
    members: list[tuple[float, tuple[float, ...], str, int, object, float]],
) -> NDArray[np.float64]:
    conf = np.array([m[0] for m in members])
    coords = np.array([m[1] for m in members])
    if conf.sum() <= 0:
        return np.asarray(coords.mean(axis=0), dtype=np.float64)
    return np.asarray((conf[:, None] * coords).sum(axis=0) / conf.sum(), dtype=np.float64)


_COORDS_2D = ("x0", "y0", "x1", "y1")
_COORDS_3D = ("x0", "y0", "z0", "x1", "y1", "z1")


def fuse_box_table(
    table: pd.DataFrame,
    iou_threshold: float = 0.55,
    *,
    reader_weights: Mapping[str, float] | None = None,
    annotators: Sequence[str] | None = None,
    source: str | None = None,
) -> pd.DataFrame:
    """Fuse a long table of readers' boxes into findings, item by item.

    Parameters
    ----------
    table:
        Columns ``item, annotator, label, x0, y0, x1, y1`` (3D: ``x0, y0, z0, x1, y1, z1``)
        and optionally ``score``. Values may be strings (as :func:`truthset.io.tables.
        read_table` gives them). A row whose coordinates are all empty records a reader who
        read the item and found nothing.
    iou_threshold:
        As in :func:`fuse_boxes`.
    reader_weights:
        Annotator -> weight.
    annotators:
        Everyone who read every item; default: the annotators present for each item.
    source:
        Name of the table's file, for error messages.

    Returns
    -------
    pandas.DataFrame
        One row per finding: ``item, finding, label, <coords>, readers`` (``;``-joined),
        ``n_readers, n_readers_total, support, mean_score`` (NaN without scores).

    Raises
    ------
    InputError
        Naming the row and field of a missing column or a non-numeric or inverted box.
    """
    table = as_pandas(table)
    if not isinstance(table, pd.DataFrame):
        raise InputError("expected a table (pandas or polars DataFrame)", source=source)
    cols = _COORDS_3D if "z0" in table.columns else _COORDS_2D
    for name in ("item", "annotator", "label", *cols):
        if name not in table.columns:
            raise InputError(f"missing column '{name}'", source=source, field=name)
    has_score = "score" in table.columns
    coords = pd.DataFrame(index=table.index)
    for name in (*cols, *(("score",) if has_score else ())):
        raw = table[name]
        blank = raw.isna() | (raw.astype(str).str.strip() == "")
        num = pd.to_numeric(raw.where(~blank), errors="coerce")
        bad = ~blank & num.isna()
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"not a number: {raw.iloc[pos]!r}",
                source=source,
                location=f"row {pos + 1}",
                field=name,
            )
        coords[name] = num.astype(float)
    empty = coords[list(cols)].isna()
    partial = empty.any(axis=1) & ~empty.all(axis=1)
    if partial.any():
        pos = int(np.flatnonzero(partial.to_numpy())[0])
        raise InputError(
            "some box coordinates are empty, others are not",
            source=source,
            location=f"row {pos + 1}",
        )
    box_values = coords[list(cols)].to_numpy()
    d = len(cols) // 2
    inverted = np.any(box_values[:, d:] < box_values[:, :d], axis=1)
    if inverted.any():
        pos = int(np.flatnonzero(inverted)[0])
        raise InputError(
            "box max corner below its min corner", source=source, location=f"row {pos + 1}"
        )

    rows: list[dict[str, object]] = []
    work = table.assign(_row=np.arange(len(table)))
    for item, group in work.groupby("item", sort=True):
        idx = group["_row"].to_numpy()
        boxes_by: dict[str, list[list[float]]] = {}
        labels_by: dict[str, list[object]] = {}
        scores_by: dict[str, list[float]] = {}
        for pos in idx:
            reader = str(table["annotator"].iloc[pos])
            boxes_by.setdefault(reader, [])
            labels_by.setdefault(reader, [])
            scores_by.setdefault(reader, [])
            if empty.iloc[pos].all():
                continue
            boxes_by[reader].append(box_values[pos].tolist())
            labels_by[reader].append(table["label"].iloc[pos])
            score = coords["score"].iloc[pos] if has_score else 1.0
            scores_by[reader].append(1.0 if pd.isna(score) else float(score))
        total = len(boxes_by) if annotators is None else len(set(annotators) | set(boxes_by))
        found = fuse_boxes(
            {r: np.asarray(b, dtype=float).reshape(-1, len(cols)) for r, b in boxes_by.items()},
            iou_threshold,
            labels_by_reader=labels_by,
            scores_by_reader=scores_by if has_score else None,
            reader_weights=reader_weights,
            n_readers_total=total,
        )
        for k, f in enumerate(found):
            row: dict[str, object] = {"item": item, "finding": k, "label": f.label}
            row.update(dict(zip(cols, f.box, strict=True)))
            row.update(
                readers=";".join(f.readers),
                n_readers=f.n_readers,
                n_readers_total=f.n_readers_total,
                support=f.support,
                mean_score=np.nan if f.mean_confidence is None else f.mean_confidence,
            )
            rows.append(row)
    columns = [
        "item",
        "finding",
        "label",
        *cols,
        "readers",
        "n_readers",
        "n_readers_total",
        "support",
        "mean_score",
    ]
    return pd.DataFrame(rows, columns=columns)


class BoxFusion:
    """Box fusion in the estimator shape shared by the quality engine's aggregators.

    Parameters
    ----------
    iou_threshold, reader_weights, annotators:
        As in :func:`fuse_box_table`.

    Attributes
    ----------
    findings_ : pandas.DataFrame
        One row per finding (see :func:`fuse_box_table`), with ``n_readers`` and ``support``:
        how many of the readers saw it.
    """

    def __init__(
        self,
        iou_threshold: float = 0.55,
        *,
        reader_weights: Mapping[str, float] | None = None,
        annotators: Sequence[str] | None = None,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.reader_weights = reader_weights
        self.annotators = annotators

    def fit(self, table: pd.DataFrame, *, source: str | None = None) -> BoxFusion:
        """Fuse a long box table (``item, annotator, label, x0, y0, x1, y1[, score]``).

        Raises
        ------
        InputError
            As :func:`fuse_box_table`.
        """
        self.findings_ = fuse_box_table(
            table,
            self.iou_threshold,
            reader_weights=self.reader_weights,
            annotators=self.annotators,
            source=source,
        )
        return self

    def fit_predict(self, table: pd.DataFrame) -> pd.DataFrame:
        """Fit, then return the findings table."""
        return self.fit(table).findings_
