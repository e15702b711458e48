"""No PHI in logs: access lines carry route templates and ids only (no query strings, no bodies),
and exception messages never reach a log line, from the API or from uvicorn."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest

from test_api_support import Seeded, bearer, client, seed
from truthset.api import logs
from truthset.api.routes import items as item_routes
from truthset.workspace.workspace import Workspace

PHI = ("DOE^JOHN", "MRN-0012345", "1950-02-03")


@pytest.fixture
def seeded(workspace: Workspace, tmp_path: Path) -> Seeded:
    return seed(workspace, tmp_path)


def _assert_clean(text: str) -> None:
    for marker in PHI:
        assert marker not in text, f"{marker!r} reached the log:\n{text}"


def _server_text(caplog: pytest.LogCaptureFixture) -> str:
    """What the server side logged (the test client's own httpx lines left out)."""
    lines = []
    for record in caplog.records:
        if record.name.startswith(("httpx", "httpcore")):
            continue
        lines.append(logging.Formatter("%(name)s %(message)s").format(record))
    return "\n".join(lines)


def test_access_lines_carry_templates_not_queries_or_bodies(
    workspace: Workspace, seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    c = client(workspace)
    item = seeded.items["alpha"][0]
    with caplog.at_level(logging.DEBUG):
        c.get(f"/api/v1/projects/alpha/items/{item}",
              params={"patient": PHI[0], "mrn": PHI[1]}, headers=bearer(seeded.tokens["manager"]))
        c.post("/api/v1/projects", json={"key": "gamma", "schema_yaml": "kind: nope",
                                         "description": f"{PHI[0]} born {PHI[2]}"},
               headers=bearer(seeded.tokens["root"]))
        c.post(f"/api/v1/projects/alpha/items/{item}/annotations",
               json={"payload": {"label": PHI[1]}}, headers=bearer(seeded.tokens["annotator"]))
    text = _server_text(caplog)
    assert "GET /api/v1/projects/{key}/items/{item_id} 200" in text
    assert "POST /api/v1/projects/{key}/items/{item_id}/annotations 422" in text
    _assert_clean(text)


def test_an_unexpected_error_logs_its_type_and_place_not_its_message(
    workspace: Workspace, seeded: Seeded, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(*_args: object, **_kw: object) -> None:
        raise RuntimeError(f"cannot format patient {PHI[0]} {PHI[1]}")

    monkeypatch.setattr(item_routes, "item_out", explode)
    item = seeded.items["alpha"][0]
    with caplog.at_level(logging.INFO):
        r = client(workspace).get(f"/api/v1/projects/alpha/items/{item}",
                                  headers=bearer(seeded.tokens["manager"]))
    assert r.status_code == 500
    _assert_clean(r.text)
    text = _server_text(caplog)
    assert "RuntimeError" in text and "explode" in text
    _assert_clean(text)
    assert all(rec.exc_info is None for rec in caplog.records if rec.name == logs.API_LOGGER)


def test_the_serve_filter_scrubs_uvicorn_records() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.PhiSafeFilter())
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    try:
        raise ValueError(f"bad header for {PHI[0]}")
    except ValueError:
        failure = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1,
                                    "Exception in ASGI application", None, sys.exc_info())
    handler.handle(failure)
    handler.handle(logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1", "GET", f"/api/v1/projects/alpha/items?patient={PHI[0]}", "1.1", 200),
        None))
    text = stream.getvalue()
    assert "Exception in ASGI application [ValueError at" in text
    assert '"GET /api/v1/projects/alpha/items HTTP/1.1" 200' in text
    _assert_clean(text)


def test_serve_log_config_filters_every_handler() -> None:
    config = logs.LOG_CONFIG
    assert all("phi" in h.get("filters", []) for h in config["handlers"].values())
    assert config["loggers"]["uvicorn.access"]["handlers"] == []
    assert logs.describe_exception(KeyError(PHI[1])) == "KeyError"


def test_an_exhausted_connection_pool_is_503_with_retry_after(
    workspace: Workspace, seeded: Seeded, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError

    def busy(*_args: object, **_kw: object) -> None:
        raise PoolTimeoutError("QueuePool limit of size 5 overflow 10 reached")

    monkeypatch.setattr(item_routes, "item_out", busy)
    with caplog.at_level(logging.INFO):
        r = client(workspace).get(f"/api/v1/projects/alpha/items/{seeded.items['alpha'][0]}",
                                  headers=bearer(seeded.tokens["manager"]))
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"] == "overloaded"
    assert "pool exhausted" in _server_text(caplog)
