"""The model registry and the drafting run: models turn items into draft annotations.

A model is registered per project with a name, a version, an adapter kind (``onnx``, ``http``,
``classical``), what it outputs (``classification``, ``mask``, ``box``) and the classes it may
draft. :func:`run_prelabel` drafts items one by one, each in its own transaction: a bad answer
(timeout, malformed output, unregistered class, geometry out of bounds) is *refused* — written
to the draft log with its reason and logged — and the item simply goes to readers without a
draft; the run goes on with the next item. Drafts are annotations with ``source = "model"`` and
the model's name and version.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import ConflictError, InputError, NotFoundError
from truthset.domain.schema import ClassificationMode, SchemaKind
from truthset.prelabel.adapters import (
    ClassicalSegmenter,
    HttpInferAdapter,
    ModelAdapter,
    OnnxAdapter,
    Pixels,
    as_pixels,
    check_config,
)
from truthset.prelabel.output import DraftRefused, OutputKind, check_output
from truthset.store.blobs import BlobStore
from truthset.store.models import Annotation, Item, PrelabelDraft, PrelabelModel, Project
from truthset.workflow.annotations import record_annotation
from truthset.workspace.projects import get_project, rules
from truthset.workspace.workspace import Workspace

log = logging.getLogger("truthset.prelabel")

#: Schema kind -> the model output that drafts it.
OUTPUT_FOR_SCHEMA: dict[SchemaKind, OutputKind] = {
    SchemaKind.CLASSIFICATION: "classification",
    SchemaKind.MASK: "mask",
    SchemaKind.BOX: "box",
}


# -- registry -------------------------------------------------------------------------------------
def register_model(
    session: Session,
    project: Project,
    *,
    name: str,
    version: str,
    kind: str,
    classes: Sequence[str],
    config: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
    model_file: str | Path | None = None,
    blobs: BlobStore | None = None,
    actor: str = "",
) -> PrelabelModel:
    """Register a drafting model for ``project``.

    The output kind follows from the project's schema. An ONNX file (``model_file``) is stored
    in the blob store (its SHA-256 goes into ``config``), so workers on other machines load the
    very same bytes; it is loaded once here to refuse a broken file at registration.

    Raises
    ------
    InputError
        Empty name/version, a class not in the schema, a schema kind that cannot be drafted,
        a bad configuration, or an unreadable ONNX file.
    ConflictError
        This name and version are registered already.
    """
    if not name.strip() or not version.strip():
        raise InputError("a model needs a name and a version", field="name")
    current = rules(session, project)
    output = OUTPUT_FOR_SCHEMA.get(current.schema.kind)
    if output is None:
        raise InputError(f"drafting {current.schema.kind} schemas is not supported; "
                         "classification, mask and box are", field="schema")
    if current.schema.mode == ClassificationMode.MULTI:
        raise InputError("drafting multi-label classification is not supported; single and "
                         "ordinal are", field="schema")
    if not classes:
        raise InputError("name the classes the model may draft", field="classes")
    for cls in classes:
        current.schema.class_named(cls)
    cfg = dict(config or {})
    check_config(kind, output, cfg)
    if timeout_s <= 0:
        raise InputError("timeout_s must be positive", field="timeout_s")
    if kind == "onnx":
        if model_file is None or blobs is None:
            raise InputError("an ONNX model needs its .onnx file", field="model_file")
        path = Path(model_file)
        if not path.is_file():
            raise InputError("no such file", source=str(path), field="model_file")
        OnnxAdapter(path.read_bytes(), output, cfg)  # refuses a file ONNX Runtime cannot load
        cfg["sha256"] = blobs.put_file(path)
    exists = session.scalar(select(PrelabelModel.id).where(
        PrelabelModel.project_id == project.id, PrelabelModel.name == name,
        PrelabelModel.version == version))
    if exists is not None:
        raise ConflictError(f"model {name} {version} is already registered in {project.key!r}")
    row = PrelabelModel(project_id=project.id, name=name, version=version, kind=kind,
                        output=output, classes=sorted(set(classes)), config=cfg,
                        timeout_s=float(timeout_s), created_by=actor)
    session.add(row)
    session.flush()
    return row


def list_models(session: Session, project: Project) -> list[PrelabelModel]:
    """The project's registered models, oldest first."""
    return list(session.scalars(select(PrelabelModel).where(
        PrelabelModel.project_id == project.id).order_by(PrelabelModel.id)))


def get_model(session: Session, project: Project, name: str,
              version: str | None = None) -> PrelabelModel:
    """A registered model (the latest registered version when ``version`` is ``None``).

    Raises
    ------
    NotFoundError
        No such model.
    """
    stmt = select(PrelabelModel).where(PrelabelModel.project_id == project.id,
                                       PrelabelModel.name == name)
    if version is not None:
        stmt = stmt.where(PrelabelModel.version == version)
    row = session.scalars(stmt.order_by(PrelabelModel.id.desc()).limit(1)).first()
    if row is None:
        known = ", ".join(f"{m.name} {m.version}" for m in list_models(session, project))
        raise NotFoundError(f"no model {name!r}{' ' + version if version else ''} in "
                            f"{project.key!r}; registered: {known or 'none'}")
    return row


def retire_model(session: Session, project: Project, name: str, version: str) -> PrelabelModel:
    """Stop a model from drafting (its drafts and log stay; the change is audited).

    Raises
    ------
    NotFoundError
        No such model.
    """
    row = get_model(session, project, name, version)
    row.active = False
    session.flush()
    return row


def make_adapter(model: PrelabelModel, blobs: BlobStore) -> ModelAdapter:
    """Build the adapter of a registered model."""
    output: OutputKind = model.output  # type: ignore[assignment]
    if model.kind == "onnx":
        return OnnxAdapter(blobs.get_bytes(str(model.config["sha256"])), output, model.config)
    if model.kind == "http":
        return HttpInferAdapter(str(model.config["url"]), str(model.config["model"]), output,
                                model.config, timeout_s=model.timeout_s)
    return ClassicalSegmenter(output, model.config)


# -- pixels ---------------------------------------------------------------------------------------
#: Media types of stored item files (as :mod:`truthset.workspace.medical` writes them).
DICOM_MEDIA = "application/dicom"
NIFTI_MEDIA = "application/x-nifti"


def load_pixels(blobs: BlobStore, item: Item) -> Pixels:
    """What a model sees of an item: a 2D image, or a 3D volume with its voxel spacing.

    - a DICOM **series** item (several instances, or one multi-frame instance imported as a
      series): the volume ``(slices, rows, columns)`` in slice order with the modality LUT
      applied (:meth:`truthset.imaging.dicom.DicomSeries.volume`), spacing ``(slice, row,
      column)`` mm;
    - a **NIfTI** volume: the voxel array in the file's ``(i, j, k)`` order with the scaling
      applied, spacing from the header (a 4D file: its first volume);
    - anything else: the 2D image (raster, or a single DICOM image's first frame).

    Raises
    ------
    InputError
        The item has no media, or it cannot be decoded.
    """
    media = [m for m in (item.media or []) if isinstance(m, dict) and m.get("sha256")]
    if not media:
        raise InputError("the item has no image", field="media")
    first_type = str(media[0].get("media_type", ""))
    if first_type == NIFTI_MEDIA:
        from truthset.imaging.nifti import nifti_from_bytes

        nifti = nifti_from_bytes(blobs.get_bytes(str(media[0]["sha256"])),
                                 source=f"item {item.id}")
        voxels = np.asarray(nifti.data())
        while voxels.ndim > 3:
            voxels = voxels[..., 0]
        zooms = tuple(float(z) for z in nifti.info.spacing[:voxels.ndim])
        return Pixels(voxels, zooms, volume=voxels.ndim == 3)
    data = blobs.get_bytes(str(media[0]["sha256"]))
    is_dicom = first_type == DICOM_MEDIA or data[128:132] == b"DICM"
    if is_dicom:
        from truthset.imaging.dicom import group_series, read_dicom

        first = read_dicom(data, name=f"item {item.id}")
        if item.kind == "series" or len(media) > 1:
            images = [first] + [read_dicom(blobs.get_bytes(str(m["sha256"])),
                                           name=f"item {item.id}") for m in media[1:]]
            (series,) = group_series(images)
            row, column, between = series.info.spacing
            sizes = (float(between), float(row), float(column)) if between else None
            return Pixels(series.volume(), sizes, volume=True)
        pixels = np.asarray(first.pixels())
        return Pixels(pixels[0] if first.info.frames > 1 else pixels)
    from truthset.imaging.raster import read_raster

    return Pixels(read_raster(data, name=f"item {item.id}").pixels)


def load_image(blobs: BlobStore, item: Item) -> NDArray[Any]:
    """The pixel array of an item (:func:`load_pixels` without the spacing)."""
    return load_pixels(blobs, item).array


# -- drafting -------------------------------------------------------------------------------------
@dataclass
class PrelabelSummary:
    """What a drafting run did."""

    model: str
    drafted: int = 0
    refused: int = 0
    skipped: int = 0
    already: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (job results, API)."""
        return {"model": self.model, "drafted": self.drafted, "refused": self.refused,
                "skipped": self.skipped, "already": self.already,
                "reasons": dict(self.reasons), "device": self.device}


def _call(adapter: ModelAdapter, image: NDArray[Any] | Pixels, timeout_s: float
          ) -> Mapping[str, Any]:
    """Run ``adapter.predict`` with a deadline (a model stuck in native code is abandoned)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="prelabel")
    try:
        future = pool.submit(adapter.predict, image)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            raise DraftRefused(f"the model did not answer within {timeout_s:g} s",
                               kind="timeout") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def draft_item(
    session: Session,
    project: Project,
    model: PrelabelModel,
    adapter: ModelAdapter,
    item: Item,
    image: NDArray[Any] | Pixels | None,
    *,
    paused: set[str] | frozenset[str] = frozenset(),
    job_id: int | None = None,
) -> PrelabelDraft:
    """Ask the model for one item and store the draft, or the refusal with its reason.

    ``image`` is ``None`` when the pixels could not be read (the draft is refused). A volume's
    masks are 3D, with the voxel spacing stored beside each mask. Objects of
    ``paused`` classes are left out of the draft; a draft left with nothing is ``skipped``.
    Never raises for a bad answer: that is what the draft log is for.
    """
    status, reason, annotation, confidence, probs = "refused", "", None, None, {}
    try:
        if image is None:
            raise DraftRefused("the item's image cannot be read", kind="input")
        pixels = as_pixels(image)
        raw = _call(adapter, pixels, model.timeout_s)
        prediction = check_output(raw, kind=model.output,  # type: ignore[arg-type]
                                  registered=model.classes, image_shape=pixels.shape,
                                  min_object_size=int(model.config.get("min_size", 1)))
        prediction = replace(prediction, spacing=pixels.spacing)
        probs = dict(prediction.probabilities)
        kept = prediction.without(set(paused))
        if not kept.classes:
            status = "skipped"
            reason = ("drafting is paused for " + ", ".join(sorted(prediction.classes))
                      if prediction.classes else "the model found nothing to draft")
        else:
            annotation = record_annotation(session, project, item=item, author=None,
                                           payload=kept.payload(),
                                           model=(model.name, model.version))
            status, confidence = "drafted", kept.confidence
    except DraftRefused as refusal:
        reason = f"{refusal.kind}: {refusal.reason}"
    except InputError as exc:  # the payload does not fit the project's schema
        reason = f"schema: {exc.reason}"
    if status == "refused":
        # Ids only: no item metadata or patient data in log lines.
        log.warning("draft refused: project=%s item=%s model=%s %s reason=%s", project.id,
                    item.id, model.name, model.version, reason)
    row = PrelabelDraft(project_id=project.id, model_id=model.id, item_id=item.id, job_id=job_id,
                        status=status, reason=reason,
                        annotation_id=annotation.id if annotation else None,
                        confidence=confidence, probabilities=probs,
                        device=getattr(adapter, "device", ""))
    session.add(row)
    session.flush()
    return row


ProgressFn = Callable[[int, int, str], None]


def items_to_draft(session: Session, project: Project, model: PrelabelModel,
                   item_ids: Sequence[int] | None = None) -> tuple[list[int], int]:
    """Items the model should draft: active, without a draft of this model already, and not
    read by a human yet. Returns ``(item ids, number already drafted)``."""
    stmt = select(Item.id).where(Item.project_id == project.id, Item.status == "active")
    if item_ids is not None:
        stmt = stmt.where(Item.id.in_(list(item_ids)))
    candidates = list(session.scalars(stmt.order_by(Item.id)))
    done = set(session.scalars(select(PrelabelDraft.item_id).where(
        PrelabelDraft.model_id == model.id, PrelabelDraft.status == "drafted")))
    read = set(session.scalars(select(Annotation.item_id).where(
        Annotation.project_id == project.id, Annotation.source == "human")))
    todo = [i for i in candidates if i not in done and i not in read]
    return todo, sum(1 for i in candidates if i in done)


def run_prelabel(
    workspace: Workspace,
    project_key: str,
    model_name: str,
    *,
    version: str | None = None,
    item_ids: Sequence[int] | None = None,
    actor: str = "prelabel",
    job_id: int | None = None,
    progress: ProgressFn | None = None,
) -> PrelabelSummary:
    """Draft every item that needs it with one registered model; one transaction per item.

    Safe to run again (a retried job): items this model drafted already are skipped. Readers'
    answers to earlier drafts are recorded first, and classes whose drafting is paused
    (:mod:`truthset.prelabel.acceptance`) are not drafted.
    ``progress(done, total, message)`` is called after each item; it may raise to stop the run
    (job cancellation), which keeps what was drafted so far.
    """
    from truthset.prelabel.acceptance import paused_classes, track

    with workspace.unit(actor) as session:
        project = get_project(session, project_key)
        model = get_model(session, project, model_name, version)
        if not model.active:
            raise InputError(f"model {model.name} {model.version} is retired", field="model")
        todo, already = items_to_draft(session, project, model, item_ids)
        track(session, project)  # outcomes so far may pause a class before this run drafts it
        paused = paused_classes(session, project)
        project_id, model_id = project.id, model.id
    adapter = make_adapter(model, workspace.blobs)
    summary = PrelabelSummary(model=f"{model.name} {model.version}", already=already,
                              device=getattr(adapter, "device", ""))
    total = len(todo)
    if progress:
        progress(0, total, f"drafting {total} items with {summary.model}")
    for done, item_id in enumerate(todo, start=1):
        with workspace.unit(actor) as session:
            project = session.get_one(Project, project_id)
            model = session.get_one(PrelabelModel, model_id)
            item = session.get_one(Item, item_id)
            try:
                image: Pixels | None = load_pixels(workspace.blobs, item)
            except (InputError, OSError, FileNotFoundError):
                image = None
            row = draft_item(session, project, model, adapter, item, image, paused=paused,
                             job_id=job_id)
            if row.status == "drafted":
                summary.drafted += 1
            elif row.status == "skipped":
                summary.skipped += 1
            else:
                summary.refused += 1
                summary.reasons[row.reason.split(":", 1)[0]] += 1
        if progress:
            progress(done, total, f"{summary.drafted} drafted, {summary.refused} refused")
    with workspace.unit(actor) as session:
        audit.record(session, action="prelabel", entity_type="prelabel_models",
                     entity_id=model_id, project_id=project_id, after=summary.to_dict())
    return summary
