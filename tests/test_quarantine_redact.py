"""Redaction leaves no trace of the burned-in pixels: a new SOP Instance UID everywhere
(item, index, DICOMweb), the unredacted blob removed after commit unless another row still
refers to it, and nothing lost when the unit of work fails (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from phi_corpus import write_corpus
from truthset.domain.errors import NotFoundError
from truthset.domain.roles import Role
from truthset.store.models import AuditEvent, ImagingInstance, Item
from truthset.workspace import dicomweb, imports, projects, quarantine, users
from truthset.workspace.workspace import Workspace

SCHEMA = """
name: findings
kind: classification
mode: single
classes:
  - {name: normal, definition: "No finding."}
  - {name: abnormal, definition: "Any finding."}
"""
REGION = quarantine.Region(0, 0, 30, 12)
READER = [Role.ANNOTATOR]


def _held(ws: Workspace, tmp_path: Path) -> tuple[str, str, str]:
    """Import one CT and one ultrasound (quarantined) per instance; return the held item's
    external id, its SOP Instance UID and blob digest."""
    write_corpus(tmp_path / "corpus", ct=1, us=1, truncated=0)
    with ws.unit("admin") as s:
        project = projects.create_project(s, key="ct", name="ct", schema_text=SCHEMA,
                                          imaging={"dicom_item": "instance"})
        users.add_user(s, username="root", role="admin")
        imports.import_items(s, ws.blobs, project, [tmp_path / "corpus"], vault=ws.vault)
    with ws.unit("admin") as s:
        (item,) = quarantine.list_quarantined(s, projects.get_project(s, "ct"))
        return item.external_id, item.media[0]["sop_instance_uid"], item.media[0]["sha256"]


def _item_text(item: Item) -> str:
    return json.dumps([item.external_id, item.media, item.attributes], default=str)


def test_redaction_gives_a_new_uid_everywhere_and_removes_the_old_blob(
    workspace: Workspace, tmp_path: Path
) -> None:
    external_id, old_uid, old_blob = _held(workspace, tmp_path)
    before = pydicom.dcmread(io.BytesIO(workspace.blobs.get_bytes(old_blob)))
    assert before.pixel_array[0:12, 0:30].any()  # there is something to black out
    with workspace.unit("root") as s:
        item = quarantine.redact_item(s, workspace.blobs, projects.get_project(s, "ct"),
                                      external_id, actor="root", regions=[REGION])
        item_id = item.id
        study = item.attributes["study_instance_uid"]
        series = item.attributes["series_instance_uid"]
        assert workspace.blobs.exists(old_blob)  # not before the commit
    assert not workspace.blobs.exists(old_blob)
    assert old_blob not in set(workspace.blobs)
    with workspace.unit("reader") as s:
        project = projects.get_project(s, "ct")
        item = s.get_one(Item, item_id)
        new_uid = item.media[0]["sop_instance_uid"]
        assert new_uid != old_uid and new_uid.startswith("2.25.")
        assert old_uid not in _item_text(item)
        assert item.external_id == new_uid and item.attributes["sop_instance_uid"] == new_uid
        assert (item.attributes["study_instance_uid"], item.attributes["series_instance_uid"]
                ) == (study, series)
        row = s.scalar(select(ImagingInstance).where(ImagingInstance.item_id == item_id))
        assert row is not None and row.sop_instance_uid == new_uid
        assert old_uid not in json.dumps(row.qido)
        # DICOMweb: QIDO and WADO know the new UID only
        found = dicomweb.search_instances(s, project, READER, dicomweb.Query(),
                                          study=study, series=series)
        assert [f["00080018"]["Value"][0] for f in found] == [new_uid]
        assert dicomweb.search_instances(
            s, project, READER, dicomweb.Query.parse([("SOPInstanceUID", old_uid)])) == []
        with pytest.raises(NotFoundError):
            dicomweb.instances(s, project, READER, study, series, old_uid)
        rows = dicomweb.instances(s, project, READER, study, series, new_uid)
        (meta,) = dicomweb.instance_metadata(workspace.blobs, rows)
        assert meta["00080018"]["Value"] == [new_uid]
        assert meta["0020000D"]["Value"] == [study]
        (event,) = s.scalars(select(AuditEvent)
                             .where(AuditEvent.action == "quarantine.redact"))
        assert json.loads(event.after)["sop_instance_uids"] == {old_uid: new_uid}
        assert json.loads(event.after)["blobs_removed_after_commit"] == [old_blob]
        assert json.loads(event.after)["blobs_kept"] == {}
    # the stored file, read by pydicom: the new UID, the region zeroed, the rest kept
    ds = pydicom.dcmread(io.BytesIO(workspace.blobs.get_bytes(row.sha256)))
    assert ds.SOPInstanceUID == new_uid == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.StudyInstanceUID == study and ds.BurnedInAnnotation == "NO"
    assert not ds.pixel_array[0:12, 0:30].any()
    assert (ds.pixel_array[12:, :] == before.pixel_array[12:, :]).all()


def test_a_blob_another_row_refers_to_is_kept_and_the_audit_says_why(
    workspace: Workspace, tmp_path: Path
) -> None:
    external_id, _old_uid, old_blob = _held(workspace, tmp_path)
    with workspace.unit("admin") as s:
        project = projects.get_project(s, "ct")
        s.add(Item(project_id=project.id, external_id="copy", kind="image",
                   media=[{"sha256": old_blob, "media_type": "application/dicom"}]))
    with workspace.unit("root") as s:
        quarantine.redact_item(s, workspace.blobs, projects.get_project(s, "ct"),
                               external_id, actor="root", regions=[REGION])
    assert workspace.blobs.exists(old_blob)
    with workspace.unit("reader") as s:
        (event,) = s.scalars(select(AuditEvent)
                             .where(AuditEvent.action == "quarantine.redact"))
        assert json.loads(event.after)["blobs_removed_after_commit"] == []
        assert json.loads(event.after)["blobs_kept"] == {old_blob: ["items.media"]}


def test_a_failure_after_redaction_keeps_the_old_blob_and_state(
    workspace: Workspace, tmp_path: Path
) -> None:
    external_id, old_uid, old_blob = _held(workspace, tmp_path)
    with pytest.raises(RuntimeError, match="later step"), workspace.unit("root") as s:
        quarantine.redact_item(s, workspace.blobs, projects.get_project(s, "ct"),
                               external_id, actor="root", regions=[REGION])
        raise RuntimeError("a later step of the same unit of work failed")
    assert workspace.blobs.exists(old_blob)
    with workspace.unit("reader") as s:
        project = projects.get_project(s, "ct")
        item = s.scalar(select(Item).where(Item.external_id == external_id))
        assert item is not None and item.status == "quarantined"
        assert item.media[0]["sha256"] == old_blob
        assert item.media[0]["sop_instance_uid"] == old_uid
        row = s.scalar(select(ImagingInstance).where(ImagingInstance.item_id == item.id))
        assert row is not None and (row.sop_instance_uid, row.sha256) == (old_uid, old_blob)
        assert s.scalar(select(AuditEvent).where(
            AuditEvent.action == "quarantine.redact")) is None
        # managers still see the held original under its old UID
        (meta,) = dicomweb.instance_metadata(workspace.blobs, dicomweb.instances(
            s, project, [Role.MANAGER], row.study_instance_uid, sop=old_uid))
        assert meta["00080018"]["Value"] == [old_uid]
    # a later, successful unit of work on a fresh session deletes nothing else by mistake
    with workspace.unit("root") as s:
        quarantine.redact_item(s, workspace.blobs, projects.get_project(s, "ct"),
                               external_id, actor="root", regions=[REGION])
    assert not workspace.blobs.exists(old_blob)
