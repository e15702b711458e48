"""What the web viewer needs from DICOMweb: an item tells its de-identified study, series and
SOP Instance UIDs; QIDO-RS, WADO-RS metadata and frames answer the browser's session cookie
(GETs need no CSRF token); quarantined instances stay hidden from readers.
"""

from __future__ import annotations

import io

import pydicom
import pytest
from fastapi.testclient import TestClient

from phi_corpus import phi_instance
from truthset.api.app import create_app
from truthset.auth import memberships
from truthset.workspace import projects, users
from truthset.workspace.medical import Source, ingest_medical
from truthset.workspace.workspace import Workspace

PASSWORD = "correct horse battery staple"
SCHEMA = """
name: findings
kind: classification
mode: single
classes:
  - {name: normal, definition: "No finding."}
  - {name: abnormal, definition: "Any finding."}
"""


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _browser(http: TestClient, user: str) -> TestClient:
    r = http.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert "authorization" not in {k.lower() for k in http.headers}
    return http


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_viewer_loads_an_item_through_dicomweb_with_the_session_cookie(
    workspace: Workspace,
) -> None:
    originals = [phi_instance(k) for k in range(3)]
    us = phi_instance(0, modality="US", series=2)  # no BurnedInAnnotation: quarantined
    with workspace.unit("seed") as s:
        project = projects.create_project(s, key="ct", name="CT", schema_text=SCHEMA)
        for name, role in (("reader", "annotator"), ("mgr", "manager")):
            user = users.add_user(s, username=name, role="annotator", password=PASSWORD)
            memberships.add_member(s, project, user, role)
        report = ingest_medical(s, workspace.blobs, workspace.vault, project, [
            Source(f"{k}.dcm", _bytes(ds)) for k, ds in enumerate([*originals, us])])
        assert report.ingested, report.refused

    http = _browser(TestClient(create_app(workspace)), "reader")
    page = http.get("/api/v1/projects/ct/items")
    assert page.status_code == 200, page.text
    items = page.json()["items"]
    (ct,) = [i for i in items if i["modality"] == "CT"]  # the series item
    study, series = ct["study_instance_uid"], ct["series_instance_uid"]
    sops = [m["sop_instance_uid"] for m in ct["media"]]
    assert study and series and len(sops) == 3 and all(m["frames"] == 1 for m in ct["media"])
    assert study not in {o.StudyInstanceUID for o in originals}  # de-identified UIDs

    root = f"/dicomweb/projects/ct/studies/{study}/series/{series}"
    found = http.get(f"{root}/instances")  # cookie only, no CSRF header: a GET needs none
    assert found.status_code == 200, found.text
    assert sorted(a["00080018"]["Value"][0] for a in found.json()) == sorted(sops)
    metadata = http.get(f"{root}/metadata")
    assert metadata.status_code == 200
    assert {m["00080018"]["Value"][0] for m in metadata.json()} == set(sops)
    frame = http.get(f"{root}/instances/{sops[0]}/frames/1", headers={
        "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
    assert frame.status_code == 200, frame.text
    assert frame.headers["content-type"].startswith("multipart/related")
    stored = pydicom.dcmread(io.BytesIO(_bytes(originals[0])))
    assert len(frame.content) > stored.Rows * stored.Columns  # the pixel bytes came back

    # The quarantined ultrasound: the manager sees its UIDs; the reader's cookie finds nothing.
    manager = _browser(TestClient(create_app(workspace)), "mgr")
    (held,) = [i for i in manager.get("/api/v1/projects/ct/items").json()["items"]
               if i["status"] == "quarantined"]
    q_root = (f"/dicomweb/projects/ct/studies/{held['study_instance_uid']}"
              f"/series/{held['series_instance_uid']}")
    q_sop = held["media"][0]["sop_instance_uid"]
    assert manager.get(f"{q_root}/metadata").status_code == 200
    reader = _browser(TestClient(create_app(workspace)), "reader")
    assert reader.get(f"{q_root}/instances").json() == []
    assert reader.get(f"{q_root}/metadata").status_code == 404
    assert reader.get(f"{q_root}/instances/{q_sop}/frames/1").status_code == 404

    # Without a session nothing is served.
    assert TestClient(create_app(workspace)).get(f"{root}/metadata").status_code == 401
