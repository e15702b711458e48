"""DICOMweb under /dicomweb/projects/{key}: the `dicomweb-client` package, as a real client
over a real uvicorn server, stores a PHI-laden study (de-identified on the way in), finds it,
and retrieves metadata, instances, frames and rendered images equal to what was stored.
Authorisation is the API's; quarantined images are hidden from readers."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import uvicorn
from dicomweb_client import DICOMwebClient
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from phi_corpus import phi_instance, survivors
from test_imaging_helpers import bundled
from truthset.api.app import create_app
from truthset.auth import memberships, tokens
from truthset.imaging.dicomweb import Part, encode_multipart
from truthset.store.models import ImagingInstance
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

SCHEMA = """
name: findings
kind: classification
mode: single
classes:
  - {name: normal, definition: "No finding."}
  - {name: abnormal, definition: "Any finding."}
"""
ROLES = {"svc": "service", "reader": "annotator", "mgr": "manager"}


@dataclass
class Site:
    tokens: dict[str, str] = field(default_factory=dict)


def _site(ws: Workspace) -> Site:
    site = Site()
    with ws.unit("seed") as s:
        project = projects.create_project(s, key="ct", name="CT", schema_text=SCHEMA)
        projects.create_project(s, key="other", name="Other", schema_text=SCHEMA)
        for name, role in {**ROLES, "outsider": None}.items():
            user = users.add_user(s, username=name, role="annotator")
            if role:
                memberships.add_member(s, project, user, role)
            site.tokens[name] = tokens.create_token(s, user, name="t").secret
    return site


class _Server:
    """uvicorn serving the app on a free local port, in a thread."""

    def __init__(self, ws: Workspace) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(create_app(ws), host="127.0.0.1", port=self.port,
                                log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _client(base: str, token: str, project: str = "ct") -> DICOMwebClient:
    return DICOMwebClient(url=f"{base}/dicomweb/projects/{project}",
                          headers={"Authorization": f"Bearer {token}"})


def _stored(ws: Workspace, sop: str) -> pydicom.Dataset:
    with ws.unit("check") as s:
        row = s.scalar(select(ImagingInstance).where(ImagingInstance.sop_instance_uid == sop))
        assert row is not None
        return pydicom.dcmread(io.BytesIO(ws.blobs.get_bytes(row.sha256)))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_dicomweb_client_stores_finds_and_retrieves(workspace: Workspace) -> None:
    site = _site(workspace)
    originals = [phi_instance(k) for k in range(3)]
    compressed = pydicom.dcmread(bundled("MR_small_jp2klossless.dcm"))
    us = phi_instance(0, modality="US", series=2)
    seen: list[str] = []  # every response body, checked for PHI at the end
    with _Server(workspace) as base:
        svc, reader = _client(base, site.tokens["svc"]), _client(base, site.tokens["reader"])
        result = svc.store_instances(originals)
        refs = result.ReferencedSOPSequence
        assert len(refs) == 3 and all(r.WarningReason == 0xB000 for r in refs)
        new_uids = {r.ReferencedSOPInstanceUID for r in refs}
        assert not new_uids & {o.SOPInstanceUID for o in originals}
        svc.store_instances([compressed, us])

        studies = reader.search_for_studies()
        seen.append(json.dumps(studies))
        assert len(studies) == 2
        ct = next(s for s in studies if "CT" in s["00080061"]["Value"])
        assert ct["00080061"]["Value"] == ["CT"]  # the quarantined ultrasound is hidden
        study = ct["0020000D"]["Value"][0]
        pseudonym = ct["00100020"]["Value"][0]
        assert pseudonym.startswith("P-") and ct["00201208"]["Value"] == [3]
        assert reader.search_for_studies(search_filters={"PatientID": pseudonym},
                                         fields=["StudyDate"])[0]["0020000D"] == ct["0020000D"]
        assert reader.search_for_studies(search_filters={"PatientID": "P-NOPE*"}) == []
        assert reader.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})[0][
            "0020000D"] != ct["0020000D"]
        (series,) = reader.search_for_series(study)
        series_uid = series["0020000E"]["Value"][0]
        found = reader.search_for_instances(study, series_uid)
        assert {i["00080018"]["Value"][0] for i in found} == new_uids
        manager = _client(base, site.tokens["mgr"])
        held = manager.search_for_studies(search_filters={"StudyInstanceUID": study})
        assert held[0]["00080061"]["Value"] == ["CT", "US"]  # managers see quarantined ones
        assert held[0]["00201208"]["Value"] == [4]

        metadata = reader.retrieve_study_metadata(study)
        seen.append(json.dumps(metadata))
        assert len(metadata) == 3
        for meta in metadata:
            sop = meta["00080018"]["Value"][0]
            stored = _stored(workspace, sop)
            served = pydicom.Dataset.from_json(meta)
            for elem in stored:
                if elem.VR in ("OB", "OW", "SQ") or elem.tag == 0x7FE00010:
                    continue
                assert served[elem.tag].value == elem.value, elem.keyword
            assert "PixelData" not in served
            frame = reader.retrieve_instance_frames(study, series_uid, sop, [1])[0]
            assert np.array_equal(np.frombuffer(frame, dtype="<i2").reshape(128, 128),
                                  stored.pixel_array)
            instance = reader.retrieve_instance(study, series_uid, sop)
            assert instance.PixelData == stored.PixelData
            assert instance.SOPInstanceUID == sop and instance.PatientIdentityRemoved == "YES"
            seen.append(frame.hex())
            buffer = io.BytesIO()
            instance.save_as(buffer, enforce_file_format=True)
            seen.append(buffer.getvalue().decode("latin-1"))
        png = reader.retrieve_instance_rendered(study, series_uid, sop,
                                                media_types=("image/png",))
        assert Image.open(io.BytesIO(png)).size == (128, 128)

        mr = next(s for s in studies if "MR" in s["00080061"]["Value"])
        mr_study = mr["0020000D"]["Value"][0]
        (mr_instance,) = reader.search_for_instances(mr_study)
        mr_series = mr_instance["0020000E"]["Value"][0]
        mr_sop = mr_instance["00080018"]["Value"][0]
        as_stored = reader.retrieve_instance_frames(mr_study, mr_series, mr_sop, [1],
                                                    media_types=("image/jp2",))[0]
        assert as_stored[:4] in (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0c")  # J2K codestream
        native = reader.retrieve_instance_frames(
            mr_study, mr_series, mr_sop, [1], media_types=("application/octet-stream",))[0]
        assert np.array_equal(np.frombuffer(native, dtype="<i2").reshape(64, 64),
                              compressed.pixel_array)
        as_is = reader.retrieve_instance(mr_study, mr_series, mr_sop)  # transfer-syntax=*
        assert as_is.file_meta.TransferSyntaxUID == compressed.file_meta.TransferSyntaxUID
        decompressed = reader.retrieve_instance(
            mr_study, mr_series, mr_sop,
            media_types=(("application/dicom", "1.2.840.10008.1.2.1"),))
        assert not decompressed.file_meta.TransferSyntaxUID.is_compressed
        assert np.array_equal(decompressed.pixel_array, compressed.pixel_array)

        with pytest.raises(requests.HTTPError) as denied:
            _client(base, site.tokens["outsider"]).search_for_studies()
        assert denied.value.response.status_code == 403
        with pytest.raises(requests.HTTPError) as denied:
            reader.store_instances([phi_instance(9)])
        assert denied.value.response.status_code == 403
        with pytest.raises(requests.HTTPError) as missing:
            _client(base, site.tokens["reader"]).retrieve_study_metadata(
                "1.2.826.0.1.3680043.2.1125.4242")  # the original study UID is not there
        assert missing.value.response.status_code == 404
    assert survivors(seen) == []


def test_dicomweb_errors_and_matching(workspace: Workspace) -> None:
    site = _site(workspace)
    http = TestClient(create_app(workspace))
    auth = {"Authorization": f"Bearer {site.tokens['svc']}"}
    base = "/dicomweb/projects/ct"
    body, boundary = encode_multipart([
        Part("application/dicom", _bytes(phi_instance(0))),
        Part("application/dicom", b"not dicom at all"),
        Part("text/plain", b"hello"),
    ])
    r = http.post(base + "/studies", content=body, headers={
        **auth, "Content-Type": f'multipart/related; type="application/dicom"; '
                                f'boundary={boundary}'})
    assert r.status_code == 202 and r.headers["content-type"] == "application/dicom+json"
    reply = r.json()
    assert len(reply["00081199"]["Value"]) == 1 and len(reply["00081198"]["Value"]) == 2
    reasons = " ".join(v["0040A160"]["Value"][0] for v in reply["00081198"]["Value"])
    assert "not a DICOM file" in reasons and "text/plain" in reasons
    r = http.post(base + "/studies/1.2.3", content=body, headers={
        **auth, "Content-Type": f"multipart/related; boundary={boundary}"})
    assert r.status_code == 409  # nothing belongs to study 1.2.3
    r = http.post(base + "/studies", content=b"x", headers={**auth,
                                                            "Content-Type": "application/dicom"})
    assert r.status_code == 422 and r.json()["field"] == "Content-Type"

    studies = http.get(base + "/studies", headers=auth).json()
    study = studies[0]["0020000D"]["Value"][0]
    instances = http.get(f"{base}/studies/{study}/instances", headers=auth).json()
    series = instances[0]["0020000E"]["Value"][0]
    sop = instances[0]["00080018"]["Value"][0]
    pseudonym = studies[0]["00100010"]["Value"][0]["Alphabetic"]
    for query, hits in ((f"PatientName={pseudonym[:4]}*", 1), ("PatientName=p-*", 1),
                        ("PatientName=Quincy*", 0), (f"StudyInstanceUID={study},1.2.3", 1),
                        ("Modality=MR", 0), ("Modality=CT", 1), (f"SOPInstanceUID={sop}", 1),
                        ("limit=0", 0), ("offset=1", 0)):
        got = http.get(f"{base}/instances?{query}", headers=auth).json()
        assert len(got) == hits, query
    (found,) = http.get(f"{base}/studies?StudyInstanceUID={study}", headers=auth).json()
    assert found["00201208"]["Value"] == [1]
    assert http.get(f"{base}/series?Modality=MR", headers=auth).json() == []
    assert http.get(f"{base}/studies?NoSuchThing=1", headers=auth).status_code == 422
    url = f"{base}/studies/{study}/series/{series}/instances/{sop}"
    assert http.get(url + "/frames/2", headers=auth).status_code == 422
    r = http.get(url + "/frames/1", headers={**auth, "Accept": 'multipart/related; '
                                                              'type="image/jp2"'})
    assert r.status_code == 406 and r.json()["field"] == "Accept"
    r = http.get(url + "/rendered?window=40,400", headers={**auth, "Accept": "image/jpeg"})
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    assert http.get(url + "/rendered?window=wide", headers=auth).status_code == 422
    assert http.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    again = http.post(base + "/studies", content=body, headers={
        **auth, "Content-Type": f"multipart/related; boundary={boundary}"})
    assert again.status_code == 202  # storing an instance twice is not a failure
    assert again.json()["00081199"]["Value"][0]["00081155"]["Value"] == [sop]
    other = f"/dicomweb/projects/other/studies/{study}/metadata"
    assert http.get(other, headers=auth).status_code == 403  # svc has no role there


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_stow_bodies_over_the_json_limit_are_accepted(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    try:
        site = _site(ws)
        http = TestClient(create_app(ws))
        big = pydicom.dcmread(bundled("693_UNCR.dcm"))  # a 512 x 512 CT, > 1 MiB with framing
        parts = [Part("application/dicom", _bytes(big)) for _ in range(3)]
        body, boundary = encode_multipart(parts)
        assert len(body) > 1 << 20
        r = http.post("/dicomweb/projects/ct/studies", content=body, headers={
            "Authorization": f"Bearer {site.tokens['svc']}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
        assert r.status_code == 202, r.text
    finally:
        ws.close()


def test_quarantined_media_reach_managers_only(workspace: Workspace) -> None:
    site = _site(workspace)
    http = TestClient(create_app(workspace))
    body, boundary = encode_multipart([Part("application/dicom",
                                            _bytes(phi_instance(0, modality="US")))])
    r = http.post("/dicomweb/projects/ct/studies", content=body, headers={
        "Authorization": f"Bearer {site.tokens['svc']}",
        "Content-Type": f"multipart/related; boundary={boundary}"})
    assert r.status_code == 202
    with workspace.unit("check") as s:
        row = s.scalar(select(ImagingInstance))
        assert row is not None and row.item.status == "quarantined"
        item_id = row.item_id
    url = f"/api/v1/projects/ct/items/{item_id}/media/0"
    reader = http.get(url, headers={"Authorization": f"Bearer {site.tokens['reader']}"})
    assert reader.status_code == 403
    manager = http.get(url, headers={"Authorization": f"Bearer {site.tokens['mgr']}"})
    assert manager.status_code == 200 and manager.content[128:132] == b"DICM"
    search = http.get("/dicomweb/projects/ct/instances",
                      headers={"Authorization": f"Bearer {site.tokens['reader']}"})
    assert search.json() == []


def test_rest_upload_of_dicom_goes_through_the_same_deidentifying_import(
    tmp_path: Path,
) -> None:
    ws = Workspace.init(tmp_path / "ws")
    try:
        site = _site(ws)
        http = TestClient(create_app(ws))
        files = [("files", (f"ct{k}.dcm", _bytes(phi_instance(k)), "application/dicom"))
                 for k in range(2)]
        r = http.post("/api/v1/projects/ct/items", files=files,
                      headers={"Authorization": f"Bearer {site.tokens['svc']}"})
        assert r.status_code == 201, r.text
        (item,) = r.json()["items"]
        assert item["kind"] == "series" and item["modality"] == "CT"
        assert survivors([r.text]) == []
        with ws.unit("check") as s:
            rows = s.scalars(select(ImagingInstance)).all()
        assert len(rows) == 2
        assert survivors(ws.blobs.get_bytes(row.sha256) for row in rows) == []
    finally:
        ws.close()
