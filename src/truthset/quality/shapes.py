"""Geometric annotation objects (boxes, polygons, masks) read from payloads, as arrays.

A geometric payload is ``{"objects": [...]}``. Two spellings of an object are accepted, so the
reads the web application draws, model drafts and stored labels all read the same way:

- **box** — web application: ``{"type": "box", "label", "bbox": [x, y, w, h]}`` (COCO);
  stored / model draft: ``{"label", "box": [x0, y0, x1, y1]}`` (3D: six corners).
- **polygon** — web: ``{"type": "polygon", "label", "points": [x0, y0, x1, y1, ...]}``;
  stored: ``{"label", "points": [[x, y], ...]}`` or ``{"label", "polygon": [x0, y0, ...]}``.
- **mask** — web: ``{"type": "mask", "label", "rle": {"size": [h, w], "counts": [...]}}``
  (COCO uncompressed RLE: column-major runs, starting with background); stored / model
  draft: ``{"label", "mask": {"shape": [...], "runs": [start, length, ...]}}`` (C-order runs,
  see :mod:`truthset.quality.payloads`).

Coordinates are image pixels, ``x`` = column, ``y`` = row; the image of a multi-image item is
named by ``frame`` (web) or ``slice`` (stored), default 0; a 3D stored mask ``(slices, rows,
columns)`` covers every frame. Boxes follow :mod:`truthset.quality.boxes`: corners
``[x0, y0, x1, y1]``, ``x1 - x0`` wide.

- :func:`parse_objects` — every object of a payload as a :class:`Shape`, checked (known
  spelling, finite coordinates, a well-formed RLE, inside the image when its
  :class:`ImageBounds` are known); a bad object raises :class:`~truthset.domain.errors.
  InputError` naming ``objects.<k>.<field>``.
- :func:`encode_rle` / :func:`decode_rle` — COCO uncompressed RLE, the web application's mask
  form (the same runs as ``pycocotools.mask.frPyObjects``).
- :func:`rasterise` — a shape as a boolean mask (pixel centres inside the box or polygon).
- :func:`box_object` / :func:`mask_object` / :func:`polygon_object` — objects in the web form.

Pure: numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from truthset.domain.errors import InputError
from truthset.quality.payloads import decode_mask

__all__ = [
    "ImageBounds",
    "Shape",
    "box_object",
    "decode_rle",
    "encode_rle",
    "mask_object",
    "parse_objects",
    "polygon_object",
    "rasterise",
]

ShapeKind = Literal["box", "polygon", "mask"]
SHAPE_KINDS: tuple[ShapeKind, ...] = ("box", "polygon", "mask")


@dataclass(frozen=True)
class ImageBounds:
    """Size of an item's images: ``width`` x ``height`` pixels, ``frames`` images (``None``:
    not known, frames are not checked)."""

    width: int
    height: int
    frames: int | None = 1

    @classmethod
    def from_media(cls, media: Sequence[Any] | None) -> ImageBounds | None:
        """Bounds from an item's ``media`` list (raster ``width``/``height`` or DICOM
        ``columns``/``rows``; ``frames`` per entry, default 1); ``None`` when no size is
        known."""
        size: tuple[int, int] | None = None
        frames = 0
        for entry in media or []:
            if not isinstance(entry, Mapping):
                continue
            if size is None and entry.get("width") and entry.get("height"):
                size = int(entry["width"]), int(entry["height"])
            elif size is None and entry.get("columns") and entry.get("rows"):
                size = int(entry["columns"]), int(entry["rows"])
            frames += max(1, int(entry.get("frames") or 1))
        if size is None:
            return None
        return cls(size[0], size[1], max(1, frames))


@dataclass(frozen=True)
class Shape:
    """One geometric object of a payload.

    Attributes
    ----------
    label:
        Its class.
    kind:
        ``box``, ``polygon`` or ``mask``.
    frame:
        Index of the image of the item it lies on (``-1``: a 3D box over the volume).
    box:
        Bounding box ``(x0, y0, x1, y1)`` (3D: ``(x0, y0, z0, x1, y1, z1)``).
    index:
        Position of the object in the payload's ``objects``.
    points:
        Polygon vertices ``((x, y), ...)``.
    mask:
        Boolean ``(rows, columns)`` mask of a mask object.
    """

    label: str
    kind: ShapeKind
    frame: int
    box: tuple[float, ...]
    index: int
    points: tuple[tuple[float, float], ...] | None = None
    mask: NDArray[np.bool_] | None = None


# -- COCO uncompressed RLE ----------------------------------------------------------------------
def encode_rle(mask: NDArray[np.bool_]) -> dict[str, Any]:
    """COCO uncompressed RLE of a 2D boolean mask: ``{"size": [rows, columns], "counts":
    [...]}``, alternating background / foreground run lengths over the column-major pixels,
    starting with background (0 when the first pixel is foreground)."""
    arr = np.asarray(mask, dtype=bool)
    if arr.ndim != 2:
        raise InputError(f"an RLE mask is 2D, got shape {list(arr.shape)}", field="rle")
    flat = arr.T.ravel()
    if flat.size == 0:
        return {"size": [int(s) for s in arr.shape], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return {"size": [int(s) for s in arr.shape], "counts": [int(c) for c in counts]}


def decode_rle(rle: Any, *, field: str = "rle") -> NDArray[np.bool_]:
    """Inverse of :func:`encode_rle`: the ``(rows, columns)`` boolean mask.

    Raises
    ------
    InputError
        ``size`` is not two positive integers, ``counts`` not non-negative integers, or the
        runs do not cover exactly ``rows x columns`` pixels (``field`` names where).
    """
    if not isinstance(rle, Mapping):
        raise InputError("an RLE mask is {size: [rows, columns], counts: [...]}", field=field)
    size = rle.get("size")
    counts = rle.get("counts")
    if (not isinstance(size, list | tuple) or len(size) != 2
            or not all(_is_int(s) and s > 0 for s in size)):
        raise InputError("rle.size must be [rows, columns], two positive integers",
                         field=f"{field}.size")
    if isinstance(counts, str):
        raise InputError("rle.counts must be the uncompressed list of run lengths, not a "
                         "compressed string", field=f"{field}.counts")
    if not isinstance(counts, list | tuple) or not all(_is_int(c) and c >= 0 for c in counts):
        raise InputError("rle.counts must be a list of non-negative integers",
                         field=f"{field}.counts")
    rows, cols = int(size[0]), int(size[1])
    total = sum(int(c) for c in counts)
    if total != rows * cols:
        raise InputError(f"rle.counts cover {total} pixels, the mask has {rows} x {cols} = "
                         f"{rows * cols}", field=f"{field}.counts")
    values = np.repeat(np.arange(len(counts)) % 2 == 1, np.asarray(counts, dtype=np.int64))
    return np.ascontiguousarray(values.reshape(cols, rows).T)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- reading objects ----------------------------------------------------------------------------
def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{value!r} is not a finite number", field=field)
    return float(value)


def _numbers(value: Any, n: int | None, field: str, what: str) -> list[float]:
    if not isinstance(value, list | tuple) or (n is not None and len(value) != n):
        raise InputError(f"{what}", field=field)
    return [_number(v, f"{field}.{i}") for i, v in enumerate(value)]


def _frame(obj: Mapping[str, Any], where: str) -> int:
    key = "frame" if "frame" in obj else "slice" if "slice" in obj else None
    if key is None:
        return 0
    value = obj[key]
    if not _is_int(value) or value < 0:
        raise InputError(f"{key} must be a non-negative integer", field=f"{where}.{key}")
    return int(value)


def _kind(obj: Mapping[str, Any], where: str) -> ShapeKind:
    given = obj.get("type")
    if given is not None:
        if given not in SHAPE_KINDS:
            raise InputError(f"unknown object type {given!r}; use box, polygon or mask",
                             field=f"{where}.type")
        return given
    if "rle" in obj or "mask" in obj:
        return "mask"
    if "points" in obj or "polygon" in obj:
        return "polygon"
    if "bbox" in obj or "box" in obj:
        return "box"
    raise InputError("an object needs bbox or box (a box), points (a polygon) or rle / mask "
                     "(a mask)", field=where)


def _box(obj: Mapping[str, Any], where: str) -> tuple[float, ...]:
    if "bbox" in obj:
        x, y, w, h = _numbers(obj["bbox"], 4, f"{where}.bbox",
                              "bbox must be [x, y, width, height]")
        if w <= 0 or h <= 0:
            raise InputError("a box needs a positive width and height", field=f"{where}.bbox")
        return (x, y, x + w, y + h)
    if "box" in obj:
        raw = obj["box"]
        n = len(raw) if isinstance(raw, list | tuple) else 0
        corners = _numbers(raw, n if n in (4, 6) else 4, f"{where}.box",
                           "box must be corners [x0, y0, x1, y1] (3D: [x0, y0, z0, x1, y1, z1])")
        d = len(corners) // 2
        if any(corners[d + i] <= corners[i] for i in range(d)):
            raise InputError("a box's second corner must lie beyond its first",
                             field=f"{where}.box")
        return tuple(corners)
    raise InputError("a box needs bbox: [x, y, width, height]", field=f"{where}.bbox")


def _points(obj: Mapping[str, Any], where: str) -> tuple[tuple[float, float], ...]:
    raw = obj.get("points", obj.get("polygon"))
    key = "points" if "points" in obj else "polygon"
    if not isinstance(raw, list | tuple):
        raise InputError("a polygon needs points: [x0, y0, x1, y1, ...]", field=f"{where}.{key}")
    if raw and all(isinstance(p, list | tuple) for p in raw):
        pts = [tuple(_numbers(p, 2, f"{where}.{key}.{i}", "a point is [x, y]"))
               for i, p in enumerate(raw)]
    else:
        flat = _numbers(raw, None, f"{where}.{key}", "points must be numbers")
        if len(flat) % 2:
            raise InputError("a polygon has an odd number of coordinates", field=f"{where}.{key}")
        pts = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    if len(pts) < 3:
        raise InputError("a polygon needs at least three points", field=f"{where}.{key}")
    return tuple((float(p[0]), float(p[1])) for p in pts)


def _masks(obj: Mapping[str, Any], where: str) -> list[tuple[int | None, NDArray[np.bool_]]]:
    """``(frame or None, 2D mask)`` pairs of a mask object (a 3D stored mask: one per slice)."""
    if "rle" in obj:
        return [(None, decode_rle(obj["rle"], field=f"{where}.rle"))]
    if "mask" in obj:
        if not isinstance(obj["mask"], Mapping):
            raise InputError("mask must be {shape, runs}", field=f"{where}.mask")
        try:
            arr = decode_mask(obj["mask"])
        except ValueError as exc:
            raise InputError(str(exc), field=f"{where}.mask") from None
        if arr.ndim == 2:
            return [(None, arr)]
        if arr.ndim == 3:
            return [(k, arr[k]) for k in range(arr.shape[0])]
        raise InputError(f"a mask is 2D or 3D, got shape {list(arr.shape)}", field=f"{where}.mask")
    raise InputError("a mask needs rle: {size, counts}", field=f"{where}.rle")


def _mask_box(mask: NDArray[np.bool_]) -> tuple[float, ...]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def _inside(box: tuple[float, ...], bounds: ImageBounds) -> bool:
    d = len(box) // 2
    x0, y0, x1, y1 = box[0], box[1], box[d], box[d + 1]
    return min(x0, y0) >= 0 and x1 <= bounds.width and y1 <= bounds.height


def parse_objects(payload: Mapping[str, Any], *,
                  bounds: ImageBounds | None = None) -> list[Shape]:
    """Every object of a geometric payload as a :class:`Shape`, checked.

    Parameters
    ----------
    payload:
        ``{"objects": [...]}`` in either spelling (see the module notes).
    bounds:
        The item's image size; when given, every box, vertex and mask must lie inside it and
        every frame must exist.

    Returns
    -------
    list[Shape]
        In payload order; a 3D stored mask gives one shape per slice with foreground.

    Raises
    ------
    InputError
        A malformed object or one outside the image; ``field`` is ``objects.<k>.<key>``.
    """
    objects = payload.get("objects")
    if not isinstance(objects, list):
        raise InputError("a geometric payload needs objects: [...]", field="objects")
    out: list[Shape] = []
    for k, obj in enumerate(objects):
        where = f"objects.{k}"
        if not isinstance(obj, Mapping) or not isinstance(obj.get("label"), str):
            raise InputError("each object needs a label", field=f"{where}.label")
        label = str(obj["label"])
        kind = _kind(obj, where)
        frame = _frame(obj, where)
        if kind == "mask":
            for plane, mask in _masks(obj, where):
                if bounds is not None and list(mask.shape) != [bounds.height, bounds.width]:
                    key = "rle" if "rle" in obj else "mask"
                    raise InputError(
                        f"mask shape {list(mask.shape)} does not fit the image "
                        f"({bounds.height} rows x {bounds.width} columns)",
                        field=f"{where}.{key}")
                at = frame if plane is None else plane
                if bounds is not None and bounds.frames is not None and at >= bounds.frames:
                    raise InputError(f"frame {at} does not exist; the item has {bounds.frames} "
                                     "image(s)", field=f"{where}.frame")
                if plane is not None and not mask.any():
                    continue
                out.append(Shape(label, "mask", at, _mask_box(mask), k, mask=mask))
            continue
        if kind == "polygon":
            points = _points(obj, where)
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            box: tuple[float, ...] = (min(xs), min(ys), max(xs), max(ys))
            shape = Shape(label, "polygon", frame, box, k, points=points)
            field = f"{where}.{'points' if 'points' in obj else 'polygon'}"
        else:
            box = _box(obj, where)
            shape = Shape(label, "box", -1 if len(box) == 6 else frame, box, k)
            field = f"{where}.{'bbox' if 'bbox' in obj else 'box'}"
        if bounds is not None:
            if not _inside(shape.box, bounds):
                raise InputError(
                    f"{kind} {[round(v, 3) for v in shape.box]} (corners) lies outside the "
                    f"image ({bounds.width} x {bounds.height} pixels)", field=field)
            if bounds.frames is not None and shape.frame >= bounds.frames:
                raise InputError(f"frame {shape.frame} does not exist; the item has "
                                 f"{bounds.frames} image(s)", field=f"{where}.frame")
            if len(box) == 6 and bounds.frames is not None and box[5] > bounds.frames:
                raise InputError(f"the box reaches slice {box[5]:g}; the item has "
                                 f"{bounds.frames}", field=field)
        out.append(shape)
    return out


# -- rasterising ------------------------------------------------------------------------------
def rasterise(shape: Shape, rows: int, cols: int) -> NDArray[np.bool_]:
    """The pixels of a 2D shape as a ``(rows, cols)`` boolean mask: a mask as it is, a box or
    polygon as the pixels whose centres lie inside it (even-odd rule for polygons)."""
    if shape.mask is not None:
        if shape.mask.shape != (rows, cols):
            raise InputError(f"mask size {list(shape.mask.shape)} differs from the item's other "
                             f"masks ({rows} x {cols})", field=f"objects.{shape.index}")
        return shape.mask
    out = np.zeros((rows, cols), dtype=bool)
    cy = np.arange(rows) + 0.5
    cx = np.arange(cols) + 0.5
    if shape.points is None:
        x0, y0, x1, y1 = shape.box[:4]
        out[np.ix_((cy >= y0) & (cy < y1), (cx >= x0) & (cx < x1))] = True
        return out
    px = np.array([p[0] for p in shape.points])
    py = np.array([p[1] for p in shape.points])
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    yy, xx = np.meshgrid(cy, cx, indexing="ij")
    inside = np.zeros((rows, cols), dtype=bool)
    for ax, ay, bx, by in zip(px, py, qx, qy, strict=True):
        if ay == by:
            continue
        crosses = (ay > yy) != (by > yy)
        x_at = ax + (yy - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xx < x_at)
    return inside


# -- writing objects ------------------------------------------------------------------------------
def box_object(label: str, box: Sequence[float], frame: int, **extra: Any) -> dict[str, Any]:
    """A box in the web form: ``{"type": "box", "label", "frame", "bbox": [x, y, w, h]}``
    (coordinates rounded to 1e-6 pixel)."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    bbox = [round(v, 6) for v in (x0, y0, x1 - x0, y1 - y0)]
    return {"type": "box", "label": label, "frame": int(frame), "bbox": bbox, **extra}


def polygon_object(label: str, points: Sequence[tuple[float, float]], frame: int,
                   **extra: Any) -> dict[str, Any]:
    """A polygon in the web form: ``{"type": "polygon", "label", "frame", "points": [x0, y0,
    x1, y1, ...]}``."""
    return {"type": "polygon", "label": label, "frame": int(frame),
            "points": [float(c) for p in points for c in p], **extra}


def mask_object(label: str, mask: NDArray[np.bool_], frame: int, **extra: Any) -> dict[str, Any]:
    """A mask in the web form: ``{"type": "mask", "label", "frame", "rle": {...}}``."""
    return {"type": "mask", "label": label, "frame": int(frame), "rle": encode_rle(mask), **extra}
