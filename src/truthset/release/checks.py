"""Export checks run before a release is stored and again before it is signed.

- every included item's final label fits the release's schema;
- every box / polygon / point lies inside its image;
- no file of the release contains a known identifier (the pseudonym vault's original values:
  patient ids, original UIDs, and any further identifiers the caller knows).

Pure functions: the caller hands in the schema, the labels, the image sizes, the file bytes and
the identifiers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from truthset.domain.errors import InputError
from truthset.domain.schema import LabelSchema, SchemaKind

#: Identifiers shorter than this are not searched for (they would match ordinary text).
MIN_IDENTIFIER_LENGTH = 4


def label_problem(schema: LabelSchema, payload: Any) -> str | None:
    """Why ``payload`` does not fit ``schema`` (``None`` when it fits)."""
    try:
        schema.validate_payload(payload)
    except InputError as exc:
        return f"final label outside the schema: {exc.reason}"
    return None


def _points(obj: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The corner / vertex points of one geometric object, in pixels."""
    out: list[tuple[float, float]] = []
    box = obj.get("box")
    if isinstance(box, list | tuple) and len(box) == 4:  # corners [x0, y0, x1, y1]
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 < x0 or y1 < y0:
            raise ValueError("a box's second corner lies before its first")
        out += [(x0, y0), (x1, y1)]
    points = obj.get("points")
    if isinstance(points, list):
        out += [(float(p[0]), float(p[1])) for p in points]
    flat = obj.get("polygon")
    if isinstance(flat, list):
        if len(flat) % 2:
            raise ValueError("a polygon has an odd number of coordinates")
        out += [(float(flat[k]), float(flat[k + 1])) for k in range(0, len(flat), 2)]
    if "x" in obj and "y" in obj:
        out.append((float(obj["x"]), float(obj["y"])))
    return out


def geometry_problem(schema: LabelSchema, payload: Any, size: tuple[int, int] | None) -> str | None:
    """Why the geometry of ``payload`` is not inside an image of ``size`` = (width, height).

    Boxes are corners ``[x0, y0, x1, y1]``, polygons ``points: [[x, y], ...]`` (or a flat
    ``polygon``), in pixels; a mask's stored ``shape`` must end in (height, width).
    """
    kinds = (SchemaKind.BOX, SchemaKind.POLYGON, SchemaKind.MASK)
    if schema.kind not in kinds or not isinstance(payload, dict):
        return None
    if size is None:
        return "geometry cannot be checked: the image size is unknown"
    width, height = size
    if schema.kind == SchemaKind.MASK:
        for k, obj in enumerate(payload.get("objects") or []):
            shape = (obj.get("mask") or {}).get("shape") if isinstance(obj, dict) else None
            if not isinstance(shape, list) or len(shape) < 2 or [int(v) for v in shape[-2:]] \
                    != [height, width]:
                return (f"object {k}: mask shape {shape} does not fit the image "
                        f"({height} rows x {width} columns)")
        return None
    for k, obj in enumerate(payload.get("objects") or []):
        try:
            pts = _points(obj)
        except (TypeError, ValueError, IndexError) as exc:
            return f"object {k}: malformed geometry ({exc})"
        if not pts:
            return f"object {k}: no coordinates"
        for x, y in pts:
            if not (0 <= x <= width and 0 <= y <= height):
                return (f"object {k}: point ({x:g}, {y:g}) outside the image "
                        f"({width} x {height})")
    return None


@dataclass(frozen=True)
class PhiFinding:
    """A known identifier found in a release file (the value itself is never reported)."""

    file: str
    kind: str
    offset: int


def scan_for_identifiers(
    files: Mapping[str, bytes], identifiers: Iterable[tuple[str, str]]
) -> list[PhiFinding]:
    """Search every file for every ``(kind, value)`` identifier (case-insensitive, UTF-8).

    Values shorter than :data:`MIN_IDENTIFIER_LENGTH` are skipped. Returns one finding per
    (file, kind), at the first offset found.
    """
    needles: dict[bytes, str] = {}
    for kind, value in identifiers:
        text = str(value).strip()
        if len(text) >= MIN_IDENTIFIER_LENGTH:
            needles.setdefault(text.lower().encode("utf-8"), kind)
    findings: list[PhiFinding] = []
    for name in sorted(files):
        hay = files[name].lower()
        seen: set[str] = set()
        for needle, kind in needles.items():
            if kind in seen:
                continue
            at = hay.find(needle)
            if at >= 0:
                findings.append(PhiFinding(name, kind, at))
                seen.add(kind)
    return findings
