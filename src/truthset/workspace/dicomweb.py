"""DICOMweb services for one project: QIDO-RS search, WADO-RS retrieval, STOW-RS store.

Everything served comes from the de-identified instances in the blob store, found through
the ``imaging_instances`` index. Quarantined items (possible burned-in identity) are
invisible to everyone but the project's managers and administrators. STOW-RS goes through
the same path as ``truthset import items``: read, de-identify in memory, then store.
The routes (``truthset.api.routes.dicomweb``) authorise and format; the rules are here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError, NotFoundError
from truthset.domain.roles import Role
from truthset.imaging import dicomweb as dw
from truthset.imaging.dicom import read_dicom
from truthset.imaging.render import CT_PRESETS, Window, render_dicom
from truthset.store.blobs import BlobStore
from truthset.store.models import ImagingInstance, Item, Project
from truthset.store.pseudonyms import PseudonymVault
from truthset.workspace.medical import QIDO_SERIES, QIDO_STUDY, Source, ingest_medical
from truthset.workspace.quarantine import may_see_quarantined

_STUDY_KEYS = tuple(dw.query_tag(k) for k in QIDO_STUDY)
_SERIES_KEYS = tuple(dw.query_tag(k) for k in QIDO_SERIES)
_CONTROL = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Query:
    """A parsed QIDO-RS query string."""

    match: dict[str, str] = field(default_factory=dict)
    include: tuple[str, ...] = ()
    include_all: bool = False
    limit: int = 100
    offset: int = 0

    @classmethod
    def parse(cls, params: Iterable[tuple[str, str]]) -> Query:
        """Parse query parameters (keywords or tags; ``includefield``, ``limit``,
        ``offset``; ``fuzzymatching`` is accepted and ignored).

        Raises
        ------
        InputError
            Unknown attribute, or a limit/offset that is not a non-negative integer.
        """
        match: dict[str, str] = {}
        include: list[str] = []
        include_all = False
        limit, offset = 100, 0
        for key, value in params:
            if key == "includefield":
                for name in value.split(","):
                    if name.strip() == "all":
                        include_all = True
                    elif name.strip():
                        include.append(dw.query_tag(name.strip()))
            elif key in ("limit", "offset"):
                if not value.isdigit():
                    raise InputError(f"{key} must be a non-negative integer", field=key)
                if key == "limit":
                    limit = min(int(value), MAX_LIMIT)
                else:
                    offset = int(value)
            elif key not in _CONTROL:
                match[dw.query_tag(key)] = value
        return cls(match, tuple(include), include_all, limit, offset)


def _visible(project: Project, held: Iterable[Role]) -> Select[Any]:
    stmt = (select(ImagingInstance).join(Item, Item.id == ImagingInstance.item_id)
            .where(ImagingInstance.project_id == project.id)
            .order_by(ImagingInstance.study_instance_uid, ImagingInstance.series_instance_uid,
                      ImagingInstance.instance_number, ImagingInstance.id))
    if not may_see_quarantined(held):
        stmt = stmt.where(Item.status != "quarantined")
    return stmt


#: QIDO keys matched in SQL when their value is exact (no wildcard): the indexed columns.
_PUSHDOWN = {
    "0020000D": ImagingInstance.study_instance_uid,
    "0020000E": ImagingInstance.series_instance_uid,
    "00080018": ImagingInstance.sop_instance_uid,
    "00080060": ImagingInstance.modality,
}


def _rows(session: Session, project: Project, held: Iterable[Role], *, study: str | None = None,
          series: str | None = None, sop: str | None = None,
          query: Query | None = None, level: str = "instance") -> list[ImagingInstance]:
    stmt = _visible(project, held)
    # Only keys that do not change the related counts of the level searched.
    keys = {"study": ("0020000D",), "series": ("0020000D", "0020000E", "00080060")}.get(
        level, tuple(_PUSHDOWN))
    for key in keys:
        column = _PUSHDOWN[key]
        wanted = (query.match if query else {}).get(key, "")
        if wanted and not any(c in wanted for c in "*?"):
            stmt = stmt.where(column.in_([w.strip() for w in wanted.replace("\\", ",")
                                         .split(",") if w.strip()]))
    if study:
        stmt = stmt.where(ImagingInstance.study_instance_uid == study)
    if series:
        stmt = stmt.where(ImagingInstance.series_instance_uid == series)
    if sop:
        stmt = stmt.where(ImagingInstance.sop_instance_uid == sop)
    return list(session.scalars(stmt))


def _uid(key: str, value: str) -> dict[str, Any]:
    return {key: {"vr": "UI", "Value": [value]}}


def _count(key: str, n: int) -> dict[str, Any]:
    return {key: {"vr": "IS", "Value": [n]}}


def _page(results: list[dict[str, Any]], query: Query) -> list[dict[str, Any]]:
    return results[query.offset:query.offset + query.limit]


def search_studies(session: Session, project: Project, held: Iterable[Role],
                   query: Query) -> list[dict[str, Any]]:
    """QIDO-RS ``/studies``: one DICOM JSON object per matching study, with
    ModalitiesInStudy and the related series/instance counts."""
    studies: dict[str, list[ImagingInstance]] = {}
    for row in _rows(session, project, held, query=query, level="study"):
        studies.setdefault(row.study_instance_uid, []).append(row)
    out = []
    modalities_key = "00080061"
    for uid, rows in studies.items():
        modalities = sorted({r.modality for r in rows if r.modality})
        attrs = {**dw.select_fields(rows[0].qido, _STUDY_KEYS), **_uid("0020000D", uid),
                 modalities_key: {"vr": "CS", "Value": modalities},
                 **_count("00201206", len({r.series_instance_uid for r in rows})),
                 **_count("00201208", len(rows))}
        wanted = {k: v for k, v in query.match.items() if k != modalities_key}
        if modalities_key in query.match and query.match[modalities_key] not in modalities:
            continue
        if dw.matches({**rows[0].qido, **attrs}, wanted):
            out.append(_with_includes(attrs, rows[0].qido, query))
    return _page(out, query)


def search_series(session: Session, project: Project, held: Iterable[Role], query: Query,
                  study: str | None = None) -> list[dict[str, Any]]:
    """QIDO-RS ``/series`` (all studies, or one study's)."""
    groups: dict[str, list[ImagingInstance]] = {}
    for row in _rows(session, project, held, study=study, query=query, level="series"):
        groups.setdefault(row.series_instance_uid, []).append(row)
    out = []
    for uid, rows in groups.items():
        attrs = {**dw.select_fields(rows[0].qido, _STUDY_KEYS + _SERIES_KEYS),
                 **_uid("0020000E", uid), **_count("00201209", len(rows))}
        if dw.matches(rows[0].qido, query.match):
            out.append(_with_includes(attrs, rows[0].qido, query))
    return _page(out, query)


def search_instances(session: Session, project: Project, held: Iterable[Role], query: Query,
                     study: str | None = None,
                     series: str | None = None) -> list[dict[str, Any]]:
    """QIDO-RS ``/instances`` (all, a study's, or a series')."""
    out = []
    for row in _rows(session, project, held, study=study, series=series, query=query):
        if dw.matches(row.qido, query.match):
            out.append(_with_includes(dict(row.qido), row.qido, query))
    return _page(out, query)


def _with_includes(attrs: dict[str, Any], qido: Mapping[str, Any],
                   query: Query) -> dict[str, Any]:
    extra = qido if query.include_all else dw.select_fields(qido, query.include)
    return {**attrs, **{k: v for k, v in extra.items() if k not in attrs}}


def instances(session: Session, project: Project, held: Iterable[Role], study: str,
              series: str | None = None, sop: str | None = None) -> list[ImagingInstance]:
    """The visible instances of a study, series or one instance.

    Raises
    ------
    NotFoundError
        Nothing there (or only quarantined images the caller may not see).
    """
    rows = _rows(session, project, held, study=study, series=series, sop=sop)
    if not rows:
        what = "instance" if sop else "series" if series else "study"
        raise NotFoundError(f"no such {what} in project {project.key!r}")
    return rows


def retrieve(session: Session, blobs: BlobStore, project: Project, rows: Sequence[ImagingInstance],
             accept: list[dw.Acceptable]) -> list[dw.Part]:
    """WADO-RS instances (application/dicom parts), each in the negotiated transfer
    syntax. The retrieval is audited (instances leave the system).

    Raises
    ------
    InputError
        The client accepts no representation offered (HTTP 406 in the route).
    """
    parts = []
    for row in rows:
        ts = dw.negotiate_instance(accept, row.transfer_syntax_uid)
        if ts is None:
            raise NotAcceptableError(
                "only application/dicom is offered, in its stored transfer syntax or Explicit "
                "VR Little Endian")
        data = dw.as_transfer_syntax(blobs.get_bytes(row.sha256), ts)
        parts.append(dw.Part(f"{dw.DICOM}; transfer-syntax={ts}", data))
    audit.record(session, action="download", entity_type="imaging_instances",
                 project_id=project.id,
                 after={"dicomweb": "retrieve", "instances": [r.id for r in rows]})
    return parts


class NotAcceptableError(InputError):
    """No representation the client accepts can be offered."""


def instance_metadata(blobs: BlobStore, rows: Sequence[ImagingInstance]) -> list[dict[str, Any]]:
    """WADO-RS metadata: DICOM JSON of each instance without its bulk data."""
    return [dw.metadata(dw.read_instance(blobs.get_bytes(r.sha256))) for r in rows]


def instance_frames(blobs: BlobStore, row: ImagingInstance, numbers: Sequence[int],
                    accept: list[dw.Acceptable]) -> list[dw.Part]:
    """WADO-RS frames of one instance.

    Raises
    ------
    NotAcceptableError
        Nothing acceptable can be offered.
    InputError
        A frame number that does not exist.
    """
    mode = dw.negotiate_frames(accept, row.transfer_syntax_uid)
    if mode is None:
        raise NotAcceptableError(
            "frames are offered as application/octet-stream (native) or in their stored "
            f"compressed media type ({dw.FRAME_MEDIA_TYPES.get(row.transfer_syntax_uid, '-')})")
    return dw.frames(dw.read_instance(blobs.get_bytes(row.sha256)), numbers, mode)


def parse_frame_list(text: str) -> list[int]:
    """``"1,2,5"`` as frame numbers.

    Raises
    ------
    InputError
        Not a comma-separated list of positive integers.
    """
    try:
        numbers = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"frame list {text!r} is not numbers separated by commas",
                         field="frames") from None
    if not numbers or min(numbers) < 1:
        raise InputError("frame numbers start at 1", field="frames")
    return numbers


def rendered(blobs: BlobStore, row: ImagingInstance, *, frame: int = 1,
             window: str | None = None, media_type: str = "image/png") -> bytes:
    """WADO-RS rendered: one frame as PNG or JPEG, windowed by ``window``
    (``center,width[,linear]`` or a CT preset name), else by the file's VOI LUT.

    Raises
    ------
    InputError
        Bad window, frame or media type.
    """
    if media_type not in ("image/png", "image/jpeg"):
        raise NotAcceptableError("rendered images are offered as image/png or image/jpeg")
    fmt: Literal["png", "jpeg"] = "png" if media_type == "image/png" else "jpeg"
    chosen: Window | None = None
    preset: str | None = None
    if window:
        if window in CT_PRESETS:
            preset = window
        else:
            parts = window.split(",")
            try:
                chosen = Window(float(parts[0]), float(parts[1]))
            except (ValueError, IndexError):
                raise InputError("window is 'center,width[,linear]' or a preset: "
                                 f"{', '.join(CT_PRESETS)}", field="window") from None
            if len(parts) > 2 and parts[2].strip().lower() not in ("linear", ""):
                raise InputError("only the linear VOI function is offered", field="window")
    image = read_dicom(blobs.get_bytes(row.sha256), name=row.sop_instance_uid)
    if not 1 <= frame <= image.info.frames:
        raise InputError(f"frame {frame} does not exist; the instance has "
                         f"{image.info.frames} frame(s)", field="frames")
    return render_dicom(image, frame=frame - 1, window=chosen, preset=preset, fmt=fmt)


@dataclass
class StoreResult:
    """What STOW-RS did, as PS3.18 reports it."""

    stored: list[tuple[str, str]] = field(default_factory=list)  # (SOP class, new SOP UID)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (part, reason)
    study_instance_uids: set[str] = field(default_factory=set)


def store(session: Session, blobs: BlobStore, vault: PseudonymVault, project: Project,
          parts: Sequence[dw.Part], *, study: str | None = None) -> StoreResult:
    """STOW-RS: de-identify and store the application/dicom parts (the same path as
    ``truthset import items``); other parts and unreadable files fail one by one.

    ``study`` (the URL's study) is the original StudyInstanceUID the client expects every
    instance to belong to; instances of another study fail.
    """
    result = StoreResult()
    sources = []
    for k, part in enumerate(parts, start=1):
        media, _params = dw.content_type_params(part.content_type)
        name = f"part {k}"
        if media != dw.DICOM:
            result.failed.append((name, f"unsupported media type {media}; send "
                                        "application/dicom"))
            continue
        if study is not None:
            try:
                header = read_dicom(part.data, name=name).dataset
            except InputError as exc:
                result.failed.append((name, exc.reason))
                continue
            if str(header.get("StudyInstanceUID", "")) != study:
                result.failed.append((name, "the instance belongs to another study than "
                                            "the URL names"))
                continue
        sources.append(Source(name=name, data=part.data, kind="dicom"))
    report = ingest_medical(session, blobs, vault, project, sources)
    result.failed.extend(report.refused)
    stored = session.scalars(select(ImagingInstance).where(
        ImagingInstance.project_id == project.id,
        ImagingInstance.sop_instance_uid.in_([*report.instances, *report.duplicates] or [""])))
    for row in stored:
        result.stored.append((row.sop_class_uid, row.sop_instance_uid))
        result.study_instance_uids.add(row.study_instance_uid)
    audit.record(session, action="import", entity_type="items", project_id=project.id,
                 after={"via": "stow-rs", "stored": len(result.stored),
                        "skipped": len(report.skipped), "quarantined": len(report.quarantined),
                        "failed": [why for _p, why in result.failed]})
    return result
