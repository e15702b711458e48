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
from truthset.quality.shapes import ImageBounds, parse_objects

#: Identifiers shorter than this are not searched for (they would match ordinary text).
MIN_IDENTIFIER_LENGTH = 4


def label_problem(schema: LabelSchema, payload: Any) -> str | None:
    """Why ``payload`` does not fit ``schema`` (``None`` when it fits)."""
    try:
        schema.validate_payload(payload)
    except InputError as exc:
        return f"final label outside the schema: {exc.reason}"
    return None


def geometry_problem(schema: LabelSchema, payload: Any, size: tuple[int, int] | None) -> str | None:
    """Why the geometry of ``payload`` is not inside an image of ``size`` = (width, height).

    Objects are read by :func:`truthset.quality.shapes.parse_objects` in either spelling:
    boxes ``bbox: [x, y, w, h]`` or corners ``box: [x0, y0, x1, y1]``, polygons ``points``
    (flat or ``[[x, y], ...]``) or a flat ``polygon``, masks as COCO ``rle`` or stored
    ``mask: {shape, runs}``, in pixels; a mask must have the image's rows and columns.
    """
    kinds = (SchemaKind.BOX, SchemaKind.POLYGON, SchemaKind.MASK)
    if schema.kind not in kinds or not isinstance(payload, dict):
        return None
    if size is None:
        return "geometry cannot be checked: the image size is unknown"
    width, height = size
    try:
        parse_objects(payload, bounds=ImageBounds(width, height, frames=None))
    except InputError as exc:
        where = (exc.field or "").split(".")
        lead = f"object {where[1]}: " if len(where) > 1 and where[0] == "objects" else ""
        return f"{lead}{exc.reason}"
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
