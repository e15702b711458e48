"""Items (uploads, media download), annotations, consensus and agreement of a project."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Query, UploadFile
from fastapi.responses import StreamingResponse

from truthset import audit
from truthset.api.deps import CtxDep
from truthset.api.models import (
    AnnotationIn,
    AnnotationOut,
    ConsensusIn,
    ConsensusOut,
    ConsensusRunOut,
    ImportOut,
    ItemOut,
    Page,
)
from truthset.api.routes.common import (
    KEY_PATTERN,
    PREFIX,
    Cursor,
    Limit,
    annotation_out,
    item_out,
    load_project,
)
from truthset.api.util import DEFAULT_LIMIT
from truthset.auth import policy
from truthset.auth.policy import Action
from truthset.domain.errors import InputError, NotFoundError, PermissionDeniedError
from truthset.quality.agreement import LEVELS, METRICS, agreement
from truthset.store.blobs import CHUNK
from truthset.store.models import Annotation, Consensus, User
from truthset.workflow.analysis import class_agreement
from truthset.workflow.annotations import current_labels, record_annotation
from truthset.workflow.consensus import compute_consensus
from truthset.workflow.lookups import annotations_page, current_consensus, current_consensus_page
from truthset.workflow.policies import usernames
from truthset.workspace.imports import import_items
from truthset.workspace.items import get_item, items_by_external_id, items_page
from truthset.workspace.quarantine import may_see_quarantined

router = APIRouter(prefix=PREFIX + "/projects/{key}", tags=["items"])

Key = Annotated[str, Path(pattern=KEY_PATTERN, description="Project key.")]
ItemId = Annotated[int, Path(ge=1, le=2**62)]
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


# -- items -------------------------------------------------------------------------------------
@router.get("/items", response_model=Page[ItemOut])
def list_items(key: Key, ctx: CtxDep, cursor: Cursor = None,
               limit: Limit = DEFAULT_LIMIT) -> Page[ItemOut]:
    """The project's items, in id order."""
    project, _ = load_project(ctx, key, Action.ITEM_READ)
    rows, nxt = items_page(ctx.session, project, cursor=cursor, limit=limit)
    return Page[ItemOut](items=[item_out(i) for i in rows], next_cursor=nxt)


@router.post("/items", response_model=ImportOut, status_code=201)
def upload_items(key: Key, ctx: CtxDep,
                 files: Annotated[list[UploadFile], File(description="Image files.")]) -> ImportOut:
    """Upload image files as items (the file name is the external id). Each upload is streamed
    to disk, checked, then stored in the blob store; one bad file refuses them all."""
    project, _ = load_project(ctx, key, Action.ITEM_CREATE)
    if not files:
        raise InputError("send at least one file", field="files")
    with tempfile.TemporaryDirectory(prefix="truthset-upload-") as tmp:
        folder = FsPath(tmp)
        for k, upload in enumerate(files):
            name = FsPath(upload.filename or "").name
            if not _SAFE_NAME.match(name):
                raise InputError("file names must be letters, digits, '.', '_' or '-'",
                                 field=f"files.{k}")
            target = folder / name
            if target.exists():
                raise InputError(f"two files are called {name!r}", field=f"files.{k}")
            with target.open("wb") as out:
                shutil.copyfileobj(upload.file, out, CHUNK)
        summary = import_items(ctx.session, ctx.workspace.blobs, project, [folder],
                               vault=ctx.workspace.vault)
    stored = items_by_external_id(ctx.session, project, summary.ingested)
    return ImportOut(ingested=summary.ingested, skipped=[e for e, _ in summary.skipped],
                     items=[item_out(i) for i in stored])


@router.get("/items/{item_id}", response_model=ItemOut)
def read_item(key: Key, item_id: ItemId, ctx: CtxDep) -> ItemOut:
    """One item of the project."""
    project, _ = load_project(ctx, key, Action.ITEM_READ)
    return item_out(get_item(ctx.session, project, item_id))


@router.get("/items/{item_id}/media/{index}", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def download_media(key: Key, item_id: ItemId, index: Annotated[int, Path(ge=0, le=10000)],
                   ctx: CtxDep) -> StreamingResponse:
    """The bytes of one media file of an item (the download is audited). Quarantined
    images (possible burned-in identity) go to managers and administrators only."""
    project, held = load_project(ctx, key, Action.ITEM_READ)
    item = get_item(ctx.session, project, item_id)
    if item.status == "quarantined" and not may_see_quarantined(held):
        raise PermissionDeniedError("the item is quarantined until a manager clears or "
                                    "redacts it")
    media = item.media or []
    if index >= len(media) or not isinstance(media[index], dict):
        raise NotFoundError(f"item {item_id} has no media file {index}")
    digest = str(media[index].get("sha256", ""))
    handle = ctx.workspace.blobs.open(digest)
    audit.record(ctx.session, action="download", entity_type="items", entity_id=item.id,
                 project_id=project.id, after={"media": index, "sha256": digest})

    def chunks() -> Iterator[bytes]:
        with handle:
            yield from iter(lambda: handle.read(1 << 16), b"")

    return StreamingResponse(chunks(), media_type=str(media[index].get(
        "media_type", "application/octet-stream")), headers={"ETag": f'"{digest}"'})


# -- annotations -------------------------------------------------------------------------------
def _annotations_page(ctx: CtxDep, key: str, item_id: int | None, cursor: str | None,
                      limit: int) -> Page[AnnotationOut]:
    project, held = load_project(ctx, key, Action.ANNOTATION_READ)
    item = get_item(ctx.session, project, item_id) if item_id is not None else None
    rows, nxt = annotations_page(
        ctx.session, project, item=item,
        visible=policy.annotation_filter(ctx.principal, held, project.id), cursor=cursor,
        limit=limit)
    names = usernames(ctx.session, {r.author_id for r in rows})
    return Page[AnnotationOut](items=[annotation_out(r, names) for r in rows], next_cursor=nxt)


@router.get("/annotations", response_model=Page[AnnotationOut], tags=["annotations"])
def list_annotations(key: Key, ctx: CtxDep, cursor: Cursor = None,
                     limit: Limit = DEFAULT_LIMIT) -> Page[AnnotationOut]:
    """Annotations you may see: readers see their own only; while an item is in the annotate
    stage nobody who annotates in the project sees others' labels on it."""
    return _annotations_page(ctx, key, None, cursor, limit)


@router.get("/items/{item_id}/annotations", response_model=Page[AnnotationOut],
            tags=["annotations"])
def item_annotations(key: Key, item_id: ItemId, ctx: CtxDep, cursor: Cursor = None,
                     limit: Limit = DEFAULT_LIMIT) -> Page[AnnotationOut]:
    """The annotations of one item you may see (same blinding as the project list)."""
    return _annotations_page(ctx, key, item_id, cursor, limit)


@router.post("/items/{item_id}/annotations", response_model=AnnotationOut, status_code=201,
             tags=["annotations"])
def annotate(key: Key, item_id: ItemId, body: AnnotationIn, ctx: CtxDep) -> AnnotationOut:
    """Label an item (checked against the current schema); ``parent_id`` revises a label."""
    project, held = load_project(ctx, key, Action.ANNOTATION_CREATE)
    item = get_item(ctx.session, project, item_id)
    parent = None
    if body.parent_id is not None:
        parent = ctx.session.get(Annotation, body.parent_id)
        if parent is None or parent.item_id != item.id:
            raise InputError(f"annotation {body.parent_id} is not on item {item_id}",
                             field="parent_id")
        policy.check_revise(ctx.principal, held, parent.author_id)
    author = ctx.session.get(User, ctx.principal.user_id)
    row = record_annotation(ctx.session, project, item=item, author=author,
                            payload=body.payload, time_spent_s=body.time_spent_s, parent=parent)
    return annotation_out(row, {ctx.principal.user_id: ctx.principal.username})


# -- consensus ---------------------------------------------------------------------------------
def _consensus_out(row: Consensus) -> ConsensusOut:
    return ConsensusOut(id=row.id, item_id=row.item_id, method=row.method, label=row.label,
                        parameters=row.parameters or {}, posterior=row.posterior,
                        confidence=row.confidence, agreement=row.agreement, status=row.status,
                        input_annotation_ids=row.input_annotation_ids, created_at=row.created_at)


@router.post("/consensus", response_model=ConsensusRunOut, status_code=201, tags=["consensus"])
def run_consensus(key: Key, body: ConsensusIn, ctx: CtxDep) -> ConsensusRunOut:
    """Aggregate every item's current reads with ``method`` (mv, wmv, ds, glad, mace, …)."""
    project, _ = load_project(ctx, key, Action.CONSENSUS_COMPUTE)
    try:
        run = compute_consensus(ctx.session, project, method=body.method,
                                min_reads=body.min_reads, params=body.params)
    except (TypeError, KeyError) as exc:
        raise InputError(f"bad consensus parameters: {exc}", field="params") from None
    return ConsensusRunOut(method=run.method, n_items=len(run.labels))


@router.get("/consensus", response_model=Page[ConsensusOut], tags=["consensus"])
def list_consensus(key: Key, ctx: CtxDep, cursor: Cursor = None,
                   limit: Limit = DEFAULT_LIMIT) -> Page[ConsensusOut]:
    """The current consensus of each item (blinded items left out)."""
    project, held = load_project(ctx, key, Action.CONSENSUS_READ)
    rows, nxt = current_consensus_page(ctx.session, project, cursor=cursor, limit=limit)
    hidden = policy.blinded_item_ids(ctx.session, held, project.id, {r.item_id for r in rows})
    return Page[ConsensusOut](items=[_consensus_out(r) for r in rows if r.item_id not in hidden],
                              next_cursor=nxt)


@router.get("/items/{item_id}/consensus", response_model=ConsensusOut, tags=["consensus"])
def item_consensus(key: Key, item_id: ItemId, ctx: CtxDep) -> ConsensusOut:
    """The current consensus of one item."""
    project, held = load_project(ctx, key, Action.CONSENSUS_READ)
    item = get_item(ctx.session, project, item_id)
    if policy.blinded_item_ids(ctx.session, held, project.id, {item.id}):
        raise PermissionDeniedError("blinded: the item is still in the annotate stage")
    return _consensus_out(current_consensus(ctx.session, item))


# -- agreement ---------------------------------------------------------------------------------
@router.get("/agreement", tags=["quality"])
def project_agreement(
    key: Key, ctx: CtxDep,
    metric: Annotated[str, Query(max_length=32)] = "krippendorff",
    level: Annotated[str, Query(max_length=16)] = "nominal",
    ci: Annotated[bool, Query(description="Bootstrap a 95% interval.")] = False,
) -> dict[str, Any]:
    """An agreement coefficient over the readers' current labels."""
    project, _ = load_project(ctx, key, Action.AGREEMENT_READ)
    if metric not in METRICS and metric != "alpha":
        raise InputError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}",
                         field="metric")
    if level not in LEVELS:
        raise InputError(f"unknown level {level!r}; use one of {', '.join(LEVELS)}",
                         field="level")
    table = current_labels(ctx.session, project)
    if table.empty:
        raise InputError(f"project {key!r} has no labels yet", field="project")
    result = agreement(table[["item", "annotator", "label"]], metric=metric, level=level,
                       ci=0.95 if ci else None, n_boot=500)
    return result.to_dict()


@router.get("/agreement/classes", tags=["quality"])
def project_class_agreement(
    key: Key, ctx: CtxDep,
    metric: Annotated[str, Query(max_length=32, description=(
        "krippendorff (nominal), fleiss, ac1, percent or cohen (two readers)."))
    ] = "krippendorff",
    ci: Annotated[bool, Query(description="Bootstrap a 95% interval.")] = True,
    n_boot: Annotated[int, Query(ge=100, le=5000, description="Bootstrap resamples.")] = 500,
) -> dict[str, Any]:
    """Agreement on each class against the rest (one-vs-rest) over the readers' current
    labels, with a 95% percentile bootstrap interval per class."""
    project, _ = load_project(ctx, key, Action.AGREEMENT_READ)
    per_class = class_agreement(ctx.session, project, metric=metric,
                                ci=0.95 if ci else None, n_boot=n_boot)
    return {"metric": metric,
            "classes": [{"class": name, **value.to_dict()} for name, value in per_class.items()]}
