"""Bad input over HTTP: malformed and wrongly typed bodies on every JSON route, ids of another
project, expired credentials and replayed CSRF tokens on writes — each answered with the right
4xx naming the field, and nothing written. Uploads stream to disk through a real server."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from test_api_support import PASSWORD, Seeded, bearer, client, seed
from truthset import audit
from truthset.api.app import create_app
from truthset.api.deps import CSRF_HEADER, ApiSettings
from truthset.auth.passwords import hash_password
from truthset.store.models import Annotation, ApiToken, Item, WebSession
from truthset.workflow.annotations import record_annotation
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace


@pytest.fixture
def seeded(workspace: Workspace, tmp_path: Path) -> Seeded:
    return seed(workspace, tmp_path)


def _head(ws: Workspace) -> int:
    with ws.sessions() as s:
        return audit.stored_head(s).seq


def _annotations(ws: Workspace) -> int:
    with ws.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Annotation)) or 0)


def _json_operations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            content = (op.get("requestBody") or {}).get("content", {})
            if "application/json" in content:
                found.append((method.upper(), path))
    return found


def test_every_json_route_names_the_field_of_a_bad_body_and_writes_nothing(
    workspace: Workspace, seeded: Seeded
) -> None:
    c = client(workspace)
    ops = _json_operations(c.get("/openapi.json").json())
    assert len(ops) >= 10
    values = {"key": "alpha", "item_id": seeded.items["alpha"][0], "username": "annotator",
              "token_id": 1, "version": 1, "index": 0, "role": "reviewer",
              "class_name": "effusion"}
    h = {**bearer(seeded.tokens["root"]), "Content-Type": "application/json",
         "If-Match": "*"}
    before = _head(workspace)
    for method, template in ops:
        path = re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), "1")), template)
        for body, field in ((b'{"name": "x",', "body"), (b"[1, 2, 3]", "body"),
                            (b'"text"', "body"), (b"\xff\xfe", "body")):
            r = c.request(method, path, content=body, headers=h)
            assert r.status_code == 422, (method, template, body, r.status_code, r.text)
            assert r.json()["error"] == "invalid_input" and r.json()["field"] == field, r.text
            assert r.json()["detail"]
    assert _head(workspace) == before


#: (path, query, the field the 422 must name)
WRONG_PARAMETERS: list[tuple[str, dict[str, Any], str]] = [
    ("/api/v1/projects/alpha/items", {"limit": "many"}, "limit"),
    ("/api/v1/projects/alpha/items", {"limit": 10_000}, "limit"),
    ("/api/v1/projects/alpha/items/notanumber", {}, "item_id"),
    ("/api/v1/projects/alpha/items/-4", {}, "item_id"),
    ("/api/v1/projects/alpha/agreement", {"ci": "perhaps"}, "ci"),
    ("/api/v1/projects/alpha/agreement", {"level": "cosmic"}, "level"),
    ("/api/v1/projects/Not A Key/items", {}, "key"),
    ("/api/v1/audit/events", {"project": "../etc"}, "project"),
    ("/api/v1/projects/alpha/schemas/0", {}, "version"),
]


def test_wrong_types_in_paths_and_queries_name_the_parameter(
    workspace: Workspace, seeded: Seeded
) -> None:
    c = client(workspace)
    for path, params, field in WRONG_PARAMETERS:
        r = c.get(path, params=params, headers=bearer(seeded.tokens["root"]))
        assert r.status_code == 422, (path, params, r.text)
        assert r.json()["field"] == field, (path, params, r.text)


def test_ids_of_another_project_are_refused_and_nothing_is_written(
    workspace: Workspace, seeded: Seeded
) -> None:
    with workspace.unit("seed") as s:
        beta = projects.get_project(s, "beta")
        item = s.get(Item, seeded.items["beta"][0])
        assert item is not None
        foreign = record_annotation(s, beta, item=item, author=users.get_user(s, "outsider"),
                                    payload={"label": "nodule"}).id
    c = client(workspace)
    h = bearer(seeded.tokens["annotator"])
    a0 = seeded.items["alpha"][0]
    before, count = _head(workspace), _annotations(workspace)
    # An annotation of project beta as the parent of a revision in alpha.
    r = c.post(f"/api/v1/projects/alpha/items/{a0}/annotations",
               json={"payload": {"label": "normal"}, "parent_id": foreign}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "parent_id", r.text
    # An item of beta under alpha's path, and an unknown item.
    for item_id in (seeded.items["beta"][0], 987654):
        r = c.post(f"/api/v1/projects/alpha/items/{item_id}/annotations",
                   json={"payload": {"label": "normal"}}, headers=h)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    # Unknown user and unknown role in a membership change.
    m = bearer(seeded.tokens["manager"])
    assert c.put("/api/v1/projects/alpha/members/ghost/reviewer", headers=m).status_code == 404
    r = c.put("/api/v1/projects/alpha/members/annotator/wizard", headers=m)
    assert r.status_code == 422 and r.json()["field"] == "role"
    assert _head(workspace) == before and _annotations(workspace) == count


def test_expired_and_revoked_credentials_write_nothing(workspace: Workspace,
                                                      seeded: Seeded) -> None:
    c = client(workspace)
    a0 = seeded.items["alpha"][0]
    secret = seeded.tokens["annotator"]
    with workspace.unit("test") as s:
        row = s.scalar(select(ApiToken).where(ApiToken.user_id == users.get_user(
            s, "annotator").id))
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    before, count = _head(workspace), _annotations(workspace)
    r = c.post(f"/api/v1/projects/alpha/items/{a0}/annotations",
               json={"payload": {"label": "normal"}}, headers=bearer(secret))
    assert r.status_code == 401 and r.json()["field"] == "Authorization"
    assert "expired" in r.json()["detail"]
    # An expired browser session: the cookie no longer signs anybody in.
    with workspace.unit("seed") as s:
        users.get_user(s, "reviewer").password_hash = hash_password(PASSWORD)
    browser = client(workspace)
    login = browser.post("/api/v1/auth/login",
                         json={"username": "reviewer", "password": PASSWORD})
    assert login.status_code == 200, login.text
    csrf = login.json()["csrf_token"]
    with workspace.unit("test") as s:
        for session_row in s.scalars(select(WebSession)):
            session_row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    before, count = _head(workspace), _annotations(workspace)
    r = browser.post(f"/api/v1/projects/alpha/items/{a0}/annotations",
                     json={"payload": {"label": "normal"}}, headers={CSRF_HEADER: csrf})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert _head(workspace) == before and _annotations(workspace) == count


def test_a_replayed_csrf_token_is_refused_and_only_the_refusal_is_recorded(
    workspace: Workspace, seeded: Seeded
) -> None:
    with workspace.unit("seed") as s:
        users.get_user(s, "annotator").password_hash = hash_password(PASSWORD)
    c = client(workspace)
    csrf = c.post("/api/v1/auth/login",
                  json={"username": "annotator", "password": PASSWORD}).json()["csrf_token"]
    a0 = seeded.items["alpha"][0]
    url = f"/api/v1/projects/alpha/items/{a0}/annotations"
    first = c.post(url, json={"payload": {"label": "normal"}}, headers={CSRF_HEADER: csrf})
    assert first.status_code == 201
    before, count = _head(workspace), _annotations(workspace)
    replay = c.post(url, json={"payload": {"label": "nodule"}}, headers={CSRF_HEADER: csrf})
    assert replay.status_code == 403 and replay.json()["field"] == CSRF_HEADER
    assert _annotations(workspace) == count
    with workspace.sessions() as s:
        events = list(audit.iter_events(s))[before:]
    assert [e["action"] for e in events] == ["denied"]
    # The rotated token from the first reply still works, once.
    nxt = first.headers[CSRF_HEADER]
    assert c.post(url, json={"payload": {"label": "nodule"}},
                  headers={CSRF_HEADER: nxt}).status_code == 201


# --- uploads through a real server ------------------------------------------------------------
class _Server:
    """uvicorn serving the app on a free local port, in a thread."""

    def __init__(self, ws: Workspace, settings: ApiSettings | None = None) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(create_app(ws, settings), host="127.0.0.1", port=self.port,
                                log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _multipart(boundary: str, name: str, size: int, chunk: int = 1 << 16) -> Iterator[bytes]:
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
           f"filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").encode()
    block = b"\x89PNG\r\n\x1a\n" + b"\x00" * (chunk - 8)
    sent = 0
    while sent < size:
        part = block[: min(chunk, size - sent)]
        sent += len(part)
        yield part
    yield f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database is not
def test_uploads_stream_to_disk_not_memory(workspace: Workspace, seeded: Seeded) -> None:
    """A 48 MiB upload (chunked, no Content-Length) passes through a real server while the
    process's Python heap grows by a small fraction of it: the body is spooled to disk."""
    size = 48 << 20
    boundary = "truthsetboundary"
    before = _head(workspace)
    with _Server(workspace) as base, httpx.Client(base_url=base, timeout=60) as http:
        tracemalloc.start()
        try:
            r = http.post("/api/v1/projects/alpha/items",
                          content=_multipart(boundary, "big.png", size),
                          headers={**bearer(seeded.tokens["service"]),
                                   "Content-Type": f"multipart/form-data; boundary={boundary}"})
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # Not an image: refused naming the file, after the whole body was read and stored on disk.
    assert r.status_code == 422, r.text
    assert r.json()["field"] in ("files", "files.0") or "big.png" in r.json()["detail"]
    assert peak < size // 8, f"peak Python heap {peak} bytes for a {size}-byte upload"
    assert _head(workspace) == before


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # under test here
def test_upload_limit_holds_for_chunked_bodies_on_a_real_server(workspace: Workspace,
                                                                seeded: Seeded) -> None:
    settings = ApiSettings(max_upload_bytes=1 << 20)
    before = _head(workspace)
    with _Server(workspace, settings) as base, httpx.Client(base_url=base, timeout=60) as http:
        r = http.post("/api/v1/projects/alpha/items",
                      content=_multipart("b0undary", "big.png", 4 << 20),
                      headers={**bearer(seeded.tokens["service"]),
                               "Content-Type": "multipart/form-data; boundary=b0undary"})
        assert r.status_code == 413 and r.json()["field"] == "body"
        # The server still answers after refusing.
        assert http.get("/healthz").status_code == 200
    assert _head(workspace) == before


# --- concurrency cap ----------------------------------------------------------------------------
def test_requests_over_the_concurrency_cap_queue_then_get_503() -> None:
    """With one slot, a second request waits (holding no thread) and is answered 503 with
    Retry-After once its wait passes; the health check is never held; the slot frees again."""
    from truthset.api.limits import ConcurrencyLimitMiddleware

    release = asyncio.Event()
    inside = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal inside
        inside += 1
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    gate = ConcurrencyLimitMiddleware(app, limit=1, queue_timeout=0.2)

    async def call(path: str) -> int:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await gate({"type": "http", "path": path}, None, send)
        return int(sent[0]["status"])

    async def scenario() -> tuple[int, int, int, int]:
        slow = asyncio.create_task(call("/slow"))
        await asyncio.sleep(0.01)
        queued = await call("/api/v1/projects")  # waits 0.2 s, then 503
        health = await call("/healthz")          # exempt
        release.set()
        first = await slow
        after = await call("/api/v1/projects")   # the slot is free again
        return first, queued, health, after

    assert asyncio.run(scenario()) == (200, 503, 200, 200)
    assert inside == 3
