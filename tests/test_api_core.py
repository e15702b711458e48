"""The API's plumbing: error bodies naming the field, nothing written on refusal, cursor pages,
ETag / If-Match, body limits (declared and streamed), uploads into the blob store, OpenAPI,
and PHI-free log lines."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_api_support import SCHEMA, Seeded, bearer, client, png, seed
from truthset import audit
from truthset.api.deps import ApiSettings
from truthset.domain.errors import InputError
from truthset.store.pages import decode_cursor, encode_cursor
from truthset.workspace.workspace import Workspace


@pytest.fixture
def seeded(workspace: Workspace, tmp_path: Path) -> Seeded:
    return seed(workspace, tmp_path)


def _head(ws: Workspace) -> int:
    with ws.sessions() as s:
        return audit.stored_head(s).seq


# --- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field", "content_type"),
    [
        (b'{"payload": {"label": "nodule"', "body", "application/json"),  # malformed JSON
        (b'{"payload": "nodule"}', "payload", "application/json"),  # wrong type
        (b'{"payload": {"label": "nodule"}, "time_spent_s": "slow"}', "time_spent_s",
         "application/json"),
        (b'{"payload": {"label": "nodule"}, "extra": 1}', "extra", "application/json"),
        (b'{"payload": {"label": "pneumothorax"}}', "label", "application/json"),  # schema
        (b'{"payload": {}}', "label", "application/json"),
        (b"[1, 2]", "body", "application/json"),
    ],
)
def test_bad_bodies_get_422_naming_the_field_and_write_nothing(
    workspace: Workspace, seeded: Seeded, body: bytes, field: str, content_type: str
) -> None:
    before = _head(workspace)
    item = seeded.items["alpha"][0]
    r = client(workspace).post(
        f"/api/v1/projects/alpha/items/{item}/annotations", content=body,
        headers={**bearer(seeded.tokens["annotator"]), "Content-Type": content_type})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input" and r.json()["field"] == field
    assert r.json()["detail"]
    assert _head(workspace) == before


def test_unknown_ids_and_duplicates(workspace: Workspace, seeded: Seeded) -> None:
    c = client(workspace)
    h = bearer(seeded.tokens["root"])
    assert c.get("/api/v1/projects/nope", headers=h).json()["error"] == "not_found"
    assert c.get("/api/v1/projects/alpha/items/999999", headers=h).status_code == 404
    assert c.get("/api/v1/projects/alpha/items/0", headers=h).json()["field"] == "item_id"
    assert c.get("/api/v1/projects/alpha/schemas/9", headers=h).status_code == 404
    r = c.post("/api/v1/projects", json={"key": "alpha", "schema_yaml": SCHEMA}, headers=h)
    assert r.status_code == 409 and r.json()["field"] == "key"
    r = c.post("/api/v1/projects", json={"key": "Bad Key", "schema_yaml": SCHEMA}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "key"
    r = c.post("/api/v1/projects", json={"key": "gamma", "schema_yaml": "kind: nope"}, headers=h)
    assert r.status_code == 422 and "schema_yaml" in r.json()["detail"]
    r = c.post("/api/v1/users", json={"username": "x", "role": "wizard"}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "role"
    r = c.post("/api/v1/users", json={"username": "y", "role": "annotator",
                                      "password": "short"}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "password"


def test_unauthenticated_requests_are_401(workspace: Workspace) -> None:
    r = client(workspace).get("/api/v1/projects")
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"


# --- pagination -------------------------------------------------------------------------------
def test_cursor_pages_walk_every_row_once(workspace: Workspace, seeded: Seeded) -> None:
    c = client(workspace)
    h = bearer(seeded.tokens["root"])
    expected = [e["seq"] for e in c.get("/api/v1/audit/events?limit=500",
                                        headers=h).json()["items"]]
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = c.get("/api/v1/audit/events", params=params, headers=h).json()
        seen += [e["seq"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(set(seen)) and seen[: len(expected)] == expected
    r = c.get("/api/v1/audit/events", params={"cursor": "garbage!"}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "cursor"
    r = c.get("/api/v1/audit/events", params={"limit": 0}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "limit"


def test_cursor_round_trip() -> None:
    for value in (0, 1, 12345, 2**40):
        assert decode_cursor(encode_cursor(value)) == value
    for bad in ("x", "djI6MQ", "=="):
        with pytest.raises(InputError):
            decode_cursor(bad)


# --- ETag / If-Match --------------------------------------------------------------------------
def test_if_match_stops_silent_overwrites(workspace: Workspace, seeded: Seeded) -> None:
    c = client(workspace)
    h = bearer(seeded.tokens["manager"])
    tag = c.get("/api/v1/projects/alpha", headers=h).headers["etag"]
    r = c.patch("/api/v1/projects/alpha", json={"name": "A"}, headers=h)
    assert r.status_code == 428 and r.json()["field"] == "If-Match"
    r = c.patch("/api/v1/projects/alpha", json={"name": "A"}, headers={**h, "If-Match": tag})
    assert r.status_code == 200 and r.json()["name"] == "A"
    # A second writer still holding the old ETag is refused.
    r = c.patch("/api/v1/projects/alpha", json={"name": "B"}, headers={**h, "If-Match": tag})
    assert r.status_code == 412
    assert c.get("/api/v1/projects/alpha", headers=h).json()["name"] == "A"
    # Guideline versions: the same rule for publishing on top of a version you have read.
    tag = c.get("/api/v1/projects/alpha/guidelines", headers=h).headers["etag"]
    body = {"body": "v2", "change_note": "clearer"}
    r = c.post("/api/v1/projects/alpha/guidelines", json=body, headers={**h, "If-Match": tag})
    assert r.status_code == 201 and r.json()["version"] == 2
    r = c.post("/api/v1/projects/alpha/guidelines", json=body, headers={**h, "If-Match": tag})
    assert r.status_code == 412
    admin = bearer(seeded.tokens["root"])
    tag = c.get("/api/v1/users/annotator", headers=admin).headers["etag"]
    r = c.patch("/api/v1/users/annotator", json={"tier": 2}, headers={**admin, "If-Match": tag})
    assert r.status_code == 200 and r.json()["tier"] == 2


# --- size limits and uploads ------------------------------------------------------------------
def test_oversized_bodies_are_413_declared_or_streamed(workspace: Workspace,
                                                       seeded: Seeded) -> None:
    c = client(workspace, ApiSettings(max_body_bytes=2000, max_upload_bytes=5000))
    before = _head(workspace)
    h = bearer(seeded.tokens["root"])
    big = {"key": "big", "schema_yaml": SCHEMA, "description": "x" * 5000}
    r = c.post("/api/v1/projects", json=big, headers=h)
    assert r.status_code == 413 and r.json()["field"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"key": "big", "description": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    r = c.post("/api/v1/projects", content=chunks(),
               headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413
    files = [("files", ("huge.png", io.BytesIO(b"\x89PNG" + b"0" * 6000), "image/png"))]
    r = c.post("/api/v1/projects/alpha/items", files=files, headers=h)
    assert r.status_code == 413
    assert _head(workspace) == before


def test_upload_streams_into_the_blob_store_and_downloads_back(
    workspace: Workspace, seeded: Seeded, tmp_path: Path
) -> None:
    c = client(workspace)
    h = bearer(seeded.tokens["service"])
    data = png(tmp_path / "new.png", seed=5, size=(700, 600)).read_bytes()  # > 1 MiB? no: spool
    files = [("files", ("scan-1.png", io.BytesIO(data), "image/png")),
             ("files", ("scan-2.png", io.BytesIO(png(tmp_path / "b.png", 6).read_bytes()),
                        "image/png"))]
    r = c.post("/api/v1/projects/alpha/items", files=files, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["ingested"] == ["scan-1.png", "scan-2.png"]
    item = r.json()["items"][0]
    assert item["media"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert workspace.blobs.exists(item["media"][0]["sha256"])
    got = c.get(f"/api/v1/projects/alpha/items/{item['id']}/media/0",
                headers=bearer(seeded.tokens["annotator"]))
    assert got.status_code == 200 and got.content == data
    with workspace.sessions() as s:
        downloads = [e for e in audit.iter_events(s) if e["action"] == "download"]
    assert downloads and downloads[-1]["actor"] == "annotator"
    # A file that is not an image refuses the whole upload; nothing is stored.
    before = _head(workspace)
    bad = [("files", ("ok.png", io.BytesIO(data), "image/png")),
           ("files", ("notes.png", io.BytesIO(b"not an image"), "image/png"))]
    r = c.post("/api/v1/projects/alpha/items", files=bad, headers=h)
    assert r.status_code == 422 and _head(workspace) == before
    r = c.post("/api/v1/projects/alpha/items",
               files=[("files", ("../evil.png", io.BytesIO(data), "image/png"))], headers=h)
    assert r.status_code in (201, 422)  # the path part is dropped, never followed
    assert not (workspace.root.parent / "evil.png").exists()


# --- consensus and agreement through the API --------------------------------------------------
def test_consensus_and_agreement_match_the_services(workspace: Workspace,
                                                    seeded: Seeded) -> None:
    c = client(workspace)
    a0, a1 = seeded.items["alpha"]
    votes = {"annotator": ("nodule", "normal"), "reviewer": ("nodule", "effusion"),
             "adjudicator": ("normal", "effusion")}
    for reader, labels in votes.items():
        for item, label in zip((a0, a1), labels, strict=True):
            r = c.post(f"/api/v1/projects/alpha/items/{item}/annotations",
                       json={"payload": {"label": label}}, headers=bearer(seeded.tokens[reader]))
            assert r.status_code == 201
    h = bearer(seeded.tokens["manager"])
    r = c.post("/api/v1/projects/alpha/consensus", json={"method": "mv"}, headers=h)
    assert r.status_code == 201 and r.json()["n_items"] == 2
    got = {x["item_id"]: x for x in c.get("/api/v1/projects/alpha/consensus",
                                           headers=h).json()["items"]}
    assert got[a0]["label"] == {"label": "nodule"} and got[a1]["label"] == {"label": "effusion"}
    assert got[a0]["agreement"] == pytest.approx(2 / 3)
    # Percent agreement by hand: each item has 3 readers, one agreeing pair of 3 pairs.
    r = c.get("/api/v1/projects/alpha/agreement", params={"metric": "percent"}, headers=h)
    assert r.status_code == 200 and r.json()["value"] == pytest.approx(1 / 3)
    r = c.get("/api/v1/projects/alpha/agreement", params={"metric": "nope"}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "metric"
    r = c.post("/api/v1/projects/alpha/consensus", json={"method": "nope"}, headers=h)
    assert r.status_code == 422


# --- OpenAPI and logs -------------------------------------------------------------------------
def test_openapi_document_is_served(workspace: Workspace) -> None:
    doc = client(workspace).get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/projects/{key}/items/{item_id}/annotations" in doc["paths"]
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_log_lines_carry_route_templates_and_ids_only(
    workspace: Workspace, seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    c = client(workspace)
    item = seeded.items["alpha"][0]
    with caplog.at_level(logging.INFO, logger="truthset.api"):
        c.get(f"/api/v1/projects/alpha/items/{item}?secret=PATIENT-123",
              headers=bearer(seeded.tokens["manager"]))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/api/v1/projects/{key}/items/{item_id}" in text
    assert "PATIENT-123" not in text and "alpha0.png" not in text
