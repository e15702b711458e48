"""Quarantine: images that may show identity in their pixels, held until a person decides.

Import puts an item in status ``quarantined`` when one of its images may carry burned-in
text or a recognisable face (see :func:`truthset.imaging.deid.burned_in_reasons`). Readers,
DICOMweb and exports never get it. A project manager or an administrator then either

- **clears** it (they looked; nothing identifying is visible) with a note, or
- **redacts** it: rectangles are blacked out in every frame of every instance, the
  redacted pixels are written uncompressed as new blobs with BurnedInAnnotation ``NO``
  and a new SOP Instance UID (the pixel content changed; study and series stay), the item
  and the DICOMweb index point to them, and each unredacted blob that no other row refers
  to is removed from the store once the transaction commits.

Both are audited (the row changes automatically, plus an explicit ``quarantine.clear`` /
``quarantine.redact`` event with who, why, the regions, old -> new instance UIDs and
blobs, and which old blobs were removed or kept because another row refers to them).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.auth.memberships import roles_in
from truthset.domain.errors import InputError, NotFoundError, PermissionDeniedError
from truthset.domain.roles import Role
from truthset.store.blob_refs import delete_after_commit, references
from truthset.store.blobs import BlobStore
from truthset.store.models import ImagingInstance, Item, Project, User
from truthset.workspace.medical import DICOM_MEDIA_TYPE, dicom_bytes, qido_attributes

QUARANTINED = "quarantined"


def may_see_quarantined(held: Iterable[Role]) -> bool:
    """Whether these roles see quarantined images (administrators and managers, who decide
    on them); readers never do."""
    return bool({Role.ADMIN, Role.MANAGER} & set(held))


@dataclass(frozen=True)
class Region:
    """A rectangle to black out, in pixels: ``x``/``y`` of the top-left corner (column,
    row), ``width`` and ``height``."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Region:
        """Parse ``"x,y,width,height"``.

        Raises
        ------
        InputError
            Not four non-negative integers with a positive width and height.
        """
        try:
            x, y, w, h = (int(v) for v in text.split(","))
        except ValueError:
            raise InputError(f"region {text!r} is not 'x,y,width,height'",
                             field="region") from None
        if min(x, y) < 0 or w <= 0 or h <= 0:
            raise InputError(f"region {text!r}: x, y >= 0 and width, height > 0",
                             field="region")
        return cls(x, y, w, h)


def _manager(session: Session, project: Project, username: str) -> User:
    """The acting user, who must be an administrator or a manager of ``project``."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        raise PermissionDeniedError(
            f"{username!r} is not an active user; quarantine decisions need a named manager "
            "or administrator (pass --actor USERNAME)"
        )
    held = roles_in(session, user.id, project.id)
    if user.role != Role.ADMIN.value and Role.MANAGER not in held and Role.ADMIN not in held:
        raise PermissionDeniedError(
            f"{username!r} may not decide on quarantined images in project {project.key!r} "
            "(manager or admin only)"
        )
    return user


def list_quarantined(session: Session, project: Project) -> list[Item]:
    """The project's items held in quarantine, oldest first."""
    return list(session.scalars(
        select(Item).where(Item.project_id == project.id, Item.status == QUARANTINED)
        .order_by(Item.id)
    ))


def _quarantined_item(session: Session, project: Project, external_id: str) -> Item:
    item = session.scalar(select(Item).where(Item.project_id == project.id,
                                             Item.external_id == external_id))
    if item is None:
        raise NotFoundError(f"no item {external_id!r} in project {project.key!r}")
    if item.status != QUARANTINED:
        raise InputError(f"item {external_id!r} is not quarantined (status {item.status})",
                         field="item")
    return item


def _decided(item: Item, user: User, decision: str, note: str, **extra: object) -> None:
    attributes = dict(item.attributes or {})
    attributes["quarantine_decision"] = {
        "decision": decision, "by": user.username, "note": note,
        "at": datetime.now(UTC).isoformat(timespec="seconds"), **extra,
    }
    item.attributes = attributes
    item.status = "active"


def clear_item(
    session: Session, project: Project, external_id: str, *, actor: str, note: str
) -> Item:
    """Release a quarantined item unchanged: a manager or admin looked at its pixels and
    found nothing identifying.

    Raises
    ------
    PermissionDeniedError
        ``actor`` is not an administrator or a manager of the project.
    InputError
        No note, or the item is not quarantined.
    NotFoundError
        No such item.
    """
    user = _manager(session, project, actor)
    if not note.strip():
        raise InputError("say what you checked: a note is required to clear an image",
                         field="note")
    item = _quarantined_item(session, project, external_id)
    _decided(item, user, "cleared", note.strip())
    session.flush()
    audit.record(session, action="quarantine.clear", entity_type="items", entity_id=item.id,
                 project_id=project.id, after={"by": user.username, "note": note.strip()})
    return item


def redact_pixels(data: bytes, regions: Sequence[Region], *,
                  sop_instance_uid: str | None = None) -> bytes:
    """Black out ``regions`` in every frame of a DICOM instance; return the new file's bytes
    (uncompressed, BurnedInAnnotation ``NO``).

    With ``sop_instance_uid`` the instance (and its file meta) gets that UID: changed pixel
    content is a new instance (PS3.3 C.12.1.1.1).

    Raises
    ------
    InputError
        A region lies outside the image, or the pixels cannot be decoded.
    """
    ds = pydicom.dcmread(io.BytesIO(data))
    rows, columns = int(ds.Rows), int(ds.Columns)
    for r in regions:
        if r.x + r.width > columns or r.y + r.height > rows:
            raise InputError(
                f"region {r.x},{r.y},{r.width},{r.height} lies outside the "
                f"{columns}x{rows} image", field="region",
            )
    try:
        pixels = np.array(ds.pixel_array)
    except Exception as exc:  # pydicom raises many kinds; all mean "cannot decode"
        raise InputError(f"cannot decode the pixels to redact them: {exc}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    colour = int(ds.get("SamplesPerPixel", 1) or 1) > 1
    stack = pixels if frames > 1 else pixels[np.newaxis]
    for r in regions:
        stack[:, r.y:r.y + r.height, r.x:r.x + r.width, ...] = 0
    photometric = "RGB" if colour else str(ds.PhotometricInterpretation)
    if photometric == "MONOCHROME1":  # zero is white there; use the darkest value instead
        top = (1 << int(ds.BitsStored)) - 1
        for r in regions:
            stack[:, r.y:r.y + r.height, r.x:r.x + r.width, ...] = top
    ds.set_pixel_data(stack if frames > 1 else stack[0], photometric,
                      int(ds.BitsStored) if not colour else 8)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.BurnedInAnnotation = "NO"
    if sop_instance_uid is not None:
        ds.SOPInstanceUID = sop_instance_uid
        ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    return dicom_bytes(ds)


def redact_item(
    session: Session, blobs: BlobStore, project: Project, external_id: str, *, actor: str,
    regions: Sequence[Region], note: str = "",
) -> Item:
    """Black out ``regions`` (the same rectangles in every frame of every instance) of a
    quarantined DICOM item and release it.

    Each redacted instance is a new blob with a new SOP Instance UID (``2.25`` root; study
    and series UIDs stay); the item's media, its ``sop_instance_uid`` attribute, its external
    id where that was the instance UID, and the DICOMweb index take the new UID, so the old
    one is no longer served. An unredacted blob that no other row refers to is removed from
    the store after the transaction commits (never on rollback); one still referenced is
    kept and the audit event names the references.

    Raises
    ------
    PermissionDeniedError
        ``actor`` is not an administrator or a manager of the project.
    InputError
        No region, a region outside the image, an item that is not quarantined or not DICOM.
    NotFoundError
        No such item.
    """
    user = _manager(session, project, actor)
    if not regions:
        raise InputError("give at least one region to black out", field="region")
    item = _quarantined_item(session, project, external_id)
    media = [dict(m) for m in item.media or []]
    if not media or any(m.get("media_type") != DICOM_MEDIA_TYPE for m in media):
        raise InputError(f"item {external_id!r} is not DICOM; clear it or remove it",
                         field="item")
    rows = {r.sha256: r for r in session.scalars(
        select(ImagingInstance).where(ImagingInstance.item_id == item.id))}
    replaced: dict[str, str] = {}
    uids: dict[str, str] = {}
    for entry in media:
        old = str(entry["sha256"])
        original = blobs.get_bytes(old)
        row = rows.get(old)
        old_uid = str(entry.get("sop_instance_uid") or (row.sop_instance_uid if row else ""))
        new_uid = generate_uid(prefix=None)
        data = redact_pixels(original, regions, sop_instance_uid=new_uid)
        new = blobs.put_bytes(data)
        replaced[old] = new
        uids[old_uid] = new_uid
        entry["sha256"] = new
        entry["sop_instance_uid"] = new_uid
        if row is not None:
            row.sha256 = new
            row.sop_instance_uid = new_uid
            row.transfer_syntax_uid = str(ExplicitVRLittleEndian)
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            row.qido = qido_attributes(header)
    item.media = media
    attributes = dict(item.attributes or {})
    if str(attributes.get("sop_instance_uid", "")) in uids:
        attributes["sop_instance_uid"] = uids[str(attributes["sop_instance_uid"])]
    item.attributes = attributes
    if item.external_id in uids:  # instance-mode items are named by their instance UID
        item.external_id = uids[item.external_id]
    boxes = [[r.x, r.y, r.width, r.height] for r in regions]
    _decided(item, user, "redacted", note.strip(), regions=boxes)
    session.flush()
    removed: list[str] = []
    kept: dict[str, list[str]] = {}
    for old in replaced:
        held_by = references(session, old)
        if held_by:
            kept[old] = held_by
        else:
            removed.append(old)
    audit.record(session, action="quarantine.redact", entity_type="items", entity_id=item.id,
                 project_id=project.id,
                 after={"by": user.username, "regions": boxes, "blobs": replaced,
                        "sop_instance_uids": uids, "blobs_removed_after_commit": removed,
                        "blobs_kept": kept})
    delete_after_commit(session, blobs, removed)
    return item
