"""DICOMweb (PS3.18) for one project under ``/dicomweb/projects/{key}``: QIDO-RS search,
WADO-RS retrieve (instances, metadata, frames, rendered) and STOW-RS store.

Authorised like the rest of the API (bearer token or session cookie; reading needs
``item.read`` in the project, storing ``item.create``). Parse, authorise, call
:mod:`truthset.workspace.dicomweb`, format; nothing else happens here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from truthset.api.deps import CtxDep
from truthset.api.routes.common import KEY_PATTERN, load_project
from truthset.auth.policy import Action
from truthset.domain.errors import InputError
from truthset.imaging import dicomweb as dw
from truthset.workspace import dicomweb as service

PREFIX = "/dicomweb/projects/{key}"
router = APIRouter(prefix=PREFIX, tags=["dicomweb"])

Key = Annotated[str, Path(pattern=KEY_PATTERN, description="Project key.")]
Uid = Annotated[str, Path(pattern=r"^[0-9][0-9.]{0,63}$", description="A DICOM UID.")]
Accept = Annotated[str | None, Header(include_in_schema=False)]


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status_code=status,
                    media_type=dw.DICOM_JSON)


def _multipart(parts: list[dw.Part], type_: str) -> Response:
    body, boundary = dw.encode_multipart(parts)
    return Response(body, media_type=f'multipart/related; type="{type_}"; boundary={boundary}')


def _not_acceptable(exc: service.NotAcceptableError) -> Response:
    return Response(json.dumps({"error": "not_acceptable", "field": "Accept",
                                "detail": exc.reason}),
                    status_code=406, media_type="application/json")


def _query(request: Request) -> service.Query:
    return service.Query.parse(request.query_params.multi_items())


# -- QIDO-RS -----------------------------------------------------------------------------------
@router.get("/studies", summary="QIDO-RS: search studies")
def search_studies(key: Key, ctx: CtxDep, request: Request) -> Response:
    """Studies matching the query (keywords or tags, ``*``/``?``, UID lists, date ranges;
    ``includefield``, ``limit``, ``offset``)."""
    project, held = load_project(ctx, key, Action.ITEM_READ)
    return _json(service.search_studies(ctx.session, project, held, _query(request)))


@router.get("/series", summary="QIDO-RS: search series")
def search_all_series(key: Key, ctx: CtxDep, request: Request) -> Response:
    """Series of every study matching the query."""
    project, held = load_project(ctx, key, Action.ITEM_READ)
    return _json(service.search_series(ctx.session, project, held, _query(request)))


@router.get("/studies/{study}/series", summary="QIDO-RS: search a study's series")
def search_study_series(key: Key, study: Uid, ctx: CtxDep, request: Request) -> Response:
    """Series of one study matching the query."""
    project, held = load_project(ctx, key, Action.ITEM_READ)
    return _json(service.search_series(ctx.session, project, held, _query(request), study))


@router.get("/instances", summary="QIDO-RS: search instances")
def search_all_instances(key: Key, ctx: CtxDep, request: Request) -> Response:
    """Instances matching the query."""
    project, held = load_project(ctx, key, Action.ITEM_READ)
    return _json(service.search_instances(ctx.session, project, held, _query(request)))


@router.get("/studies/{study}/instances", summary="QIDO-RS: search a study's instances")
def search_study_instances(key: Key, study: Uid, ctx: CtxDep, request: Request) -> Response:
    """Instances of one study matching the query."""
    project, held = load_project(ctx, key, Action.ITEM_READ)
    return _json(service.search_instances(ctx.session, project, held, _query(request), study))


@router.get("/studies/{study}/series/{series}/instances",
            summary="QIDO-RS: search a series' instances")
def search_series_instances(key: Key, study: Uid, series: Uid, ctx: CtxDep,
                            request: Request) -> Response:
    """Instances of one series matching the query."""
    project, held = load_project(ctx, key, Action.ITEM_READ)
    return _json(service.search_instances(ctx.session, project, held, _query(request), study,
                                          series))


# -- WADO-RS -----------------------------------------------------------------------------------
def _retrieve(ctx: CtxDep, key: str, accept: str | None, study: str,
              series: str | None = None, sop: str | None = None) -> Response:
    project, held = load_project(ctx, key, Action.ITEM_READ)
    rows = service.instances(ctx.session, project, held, study, series, sop)
    try:
        parts = service.retrieve(ctx.session, ctx.workspace.blobs, project, rows,
                                 dw.parse_accept(accept, dw.DICOM))
    except service.NotAcceptableError as exc:
        return _not_acceptable(exc)
    return _multipart(parts, dw.DICOM)


@router.get("/studies/{study}", summary="WADO-RS: retrieve a study")
def retrieve_study(key: Key, study: Uid, ctx: CtxDep, accept: Accept = None) -> Response:
    """Every instance of the study (multipart/related; type="application/dicom")."""
    return _retrieve(ctx, key, accept, study)


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
def retrieve_series(key: Key, study: Uid, series: Uid, ctx: CtxDep,
                    accept: Accept = None) -> Response:
    """Every instance of the series."""
    return _retrieve(ctx, key, accept, study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}",
            summary="WADO-RS: retrieve an instance")
def retrieve_instance(key: Key, study: Uid, series: Uid, sop: Uid, ctx: CtxDep,
                      accept: Accept = None) -> Response:
    """One instance."""
    return _retrieve(ctx, key, accept, study, series, sop)


def _metadata(ctx: CtxDep, key: str, study: str, series: str | None = None,
              sop: str | None = None) -> Response:
    project, held = load_project(ctx, key, Action.ITEM_READ)
    rows = service.instances(ctx.session, project, held, study, series, sop)
    return _json(service.instance_metadata(ctx.workspace.blobs, rows))


@router.get("/studies/{study}/metadata", summary="WADO-RS: study metadata")
def study_metadata(key: Key, study: Uid, ctx: CtxDep) -> Response:
    """DICOM JSON of every instance of the study, without bulk data."""
    return _metadata(ctx, key, study)


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: series metadata")
def series_metadata(key: Key, study: Uid, series: Uid, ctx: CtxDep) -> Response:
    """DICOM JSON of every instance of the series, without bulk data."""
    return _metadata(ctx, key, study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata",
            summary="WADO-RS: instance metadata")
def instance_metadata(key: Key, study: Uid, series: Uid, sop: Uid, ctx: CtxDep) -> Response:
    """DICOM JSON of one instance, without bulk data."""
    return _metadata(ctx, key, study, series, sop)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
            summary="WADO-RS: frames")
def instance_frames(key: Key, study: Uid, series: Uid, sop: Uid, ctx: CtxDep,
                    frames: Annotated[str, Path(pattern=r"^[0-9,]{1,2000}$")],
                    accept: Accept = None) -> Response:
    """Frames (1-based, comma-separated) as multipart/related: raw pixel bytes
    (application/octet-stream) or the stored compressed frames."""
    project, held = load_project(ctx, key, Action.ITEM_READ)
    (row,) = service.instances(ctx.session, project, held, study, series, sop)
    numbers = service.parse_frame_list(frames)
    try:
        parts = service.instance_frames(ctx.workspace.blobs, row, numbers,
                                        dw.parse_accept(accept, "*/*"))
    except service.NotAcceptableError as exc:
        return _not_acceptable(exc)
    type_ = dw.content_type_params(parts[0].content_type)[0]
    return _multipart(parts, type_)


def _rendered(ctx: CtxDep, key: str, study: str, series: str, sop: str, frame: int,
              window: str | None, accept: str | None) -> Response:
    project, held = load_project(ctx, key, Action.ITEM_READ)
    (row,) = service.instances(ctx.session, project, held, study, series, sop)
    wanted = [a.media_type for a in dw.parse_accept(accept, "image/png")]
    media = next((m for m in wanted if m in ("image/png", "image/jpeg")),
                 "image/png" if any(m in ("*/*", "image/*") for m in wanted) else None)
    if media is None:
        return _not_acceptable(service.NotAcceptableError(
            "rendered images are offered as image/png or image/jpeg"))
    data = service.rendered(ctx.workspace.blobs, row, frame=frame, window=window,
                            media_type=media)
    return Response(data, media_type=media)


Window = Annotated[str | None, Query(max_length=64, description="center,width[,linear] or a "
                                                                "CT preset name.")]


@router.get("/studies/{study}/series/{series}/instances/{sop}/rendered",
            summary="WADO-RS: rendered instance")
def rendered_instance(key: Key, study: Uid, series: Uid, sop: Uid, ctx: CtxDep,
                      window: Window = None, accept: Accept = None) -> Response:
    """The first frame as PNG (default) or JPEG."""
    return _rendered(ctx, key, study, series, sop, 1, window, accept)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered",
            summary="WADO-RS: rendered frame")
def rendered_frame(key: Key, study: Uid, series: Uid, sop: Uid, ctx: CtxDep,
                   frame: Annotated[int, Path(ge=1, le=100_000)], window: Window = None,
                   accept: Accept = None) -> Response:
    """One frame as PNG (default) or JPEG."""
    return _rendered(ctx, key, study, series, sop, frame, window, accept)


# -- STOW-RS -----------------------------------------------------------------------------------
async def _body(request: Request) -> bytes:
    return await request.body()


Body = Annotated[bytes, Depends(_body)]
ContentType = Annotated[str | None, Header(alias="Content-Type", include_in_schema=False)]


def _store(ctx: CtxDep, key: str, body: bytes, content_type: str | None,
           study: str | None, request: Request) -> Response:
    project, _ = load_project(ctx, key, Action.ITEM_CREATE)
    parts = dw.decode_multipart(body, content_type or "")
    if not parts:
        raise InputError("the request holds no instance", field="body")
    result = service.store(ctx.session, ctx.workspace.blobs, ctx.workspace.vault, project,
                           parts, study=study)
    base = str(request.base_url).rstrip("/") + PREFIX.replace("{key}", project.key)
    reply: dict[str, Any] = {}
    if len(result.study_instance_uids) == 1:
        (uid,) = result.study_instance_uids
        reply["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{uid}"]}
    if result.stored:
        reply["00081199"] = {"vr": "SQ", "Value": [
            {"00081150": {"vr": "UI", "Value": [cls]},
             "00081155": {"vr": "UI", "Value": [sop]},
             # Coercion of data elements: every stored instance was de-identified.
             "00081196": {"vr": "US", "Value": [0xB000]}}
            for cls, sop in result.stored]}
    if result.failed:
        reply["00081198"] = {"vr": "SQ", "Value": [
            {"00081197": {"vr": "US", "Value": [0xC000]},
             "0040A160": {"vr": "UT", "Value": [f"{name}: {why}"]}}
            for name, why in result.failed]}
    status = 409 if not result.stored else 202
    return _json(reply, status)


@router.post("/studies", summary="STOW-RS: store instances")
def store_instances(key: Key, ctx: CtxDep, body: Body, request: Request,
                    content_type: ContentType = None) -> Response:
    """Store DICOM instances (multipart/related; type="application/dicom"). They are
    de-identified on the way in exactly as `truthset import items` does; the reply names
    the new (de-identified) SOP Instance UIDs, with warning B000 (coercion)."""
    return _store(ctx, key, body, content_type, None, request)


@router.post("/studies/{study}", summary="STOW-RS: store instances of one study")
def store_study_instances(key: Key, study: Uid, ctx: CtxDep, body: Body, request: Request,
                          content_type: ContentType = None) -> Response:
    """Like ``POST /studies``; instances of another (original) study fail."""
    return _store(ctx, key, body, content_type, study, request)
