"""The shipped web application: its build matches its source, and the server hosts it without
shadowing the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from truthset.api.app import create_app
from truthset.api.webapp import DIST, build_stamp, mount_webapp, source_hash
from truthset.workspace.workspace import Workspace

WEB = Path(__file__).resolve().parents[1] / "web"


def test_shipped_build_matches_the_frontend_source() -> None:
    """``src/truthset/web_dist`` was built from exactly the committed ``web/`` sources.

    After changing anything in ``web/``, run ``npm install && npm run build`` there and commit the
    new build with the change.
    """
    if not (WEB / "src").is_dir():
        pytest.skip("no frontend source here (installed package)")
    stamp = build_stamp()
    assert stamp is not None, "no build in src/truthset/web_dist: run `npm run build` in web/"
    digest, n_files = source_hash(WEB)
    assert stamp["files"] == n_files and stamp["source_sha256"] == digest, (
        "the shipped web build is stale: run `npm install && npm run build` in web/ and commit "
        "src/truthset/web_dist"
    )


def test_build_references_only_files_it_ships() -> None:
    index = (DIST / "index.html").read_text(encoding="utf-8")
    assets = {p.name for p in (DIST / "assets").iterdir()}
    referenced = [part.split('"')[0] for part in index.split("/assets/")[1:]]
    assert referenced and all(name in assets for name in referenced)


@pytest.fixture()
def client(tmp_path: Path) -> TestClient:
    workspace = Workspace.init(tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'db'}")
    return TestClient(create_app(workspace))


def test_application_paths_serve_the_page(client: TestClient) -> None:
    for path in ("/", "/login", "/annotate?project=x&item=3", "/adjudicate", "/audit"):
        reply = client.get(path)
        assert reply.status_code == 200, path
        assert reply.headers["content-type"].startswith("text/html")
        assert '<div id="app">' in reply.text
        assert "default-src 'self'" in reply.headers["content-security-policy"]
        assert reply.headers["cache-control"] == "no-cache"


def test_fallback_never_shadows_the_api(client: TestClient) -> None:
    assert client.get("/api/v1/no-such-thing").status_code == 404
    assert client.get("/api/v1/no-such-thing").headers["content-type"] == "application/json"
    assert client.post("/api/v1/auth/me").status_code == 405
    assert client.get("/api/v1/auth/me").status_code == 401
    assert client.get("/dicomweb/studies").status_code in (401, 404)
    assert client.get("/dicomweb/studies").headers["content-type"].startswith("application/")
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/assets/missing.js").status_code == 404
    assert "truthset_webpath" not in json.dumps(client.get("/openapi.json").json())


def test_assets_are_cached_for_good(client: TestClient) -> None:
    asset = next(p for p in (DIST / "assets").iterdir() if p.suffix == ".css")
    reply = client.get(f"/assets/{asset.name}")
    assert reply.status_code == 200
    assert "immutable" in reply.headers["cache-control"]


def test_no_file_outside_the_build_is_served(client: TestClient) -> None:
    for path in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/build-stamp.json"):
        reply = client.get(path)
        assert "[project]" not in reply.text
        assert "source_sha256" not in reply.text


def test_without_a_build_the_api_still_runs(tmp_path: Path) -> None:
    workspace = Workspace.init(tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'db'}")
    app = create_app(workspace)
    assert mount_webapp(app, tmp_path / "nothing") is False


def test_demo_logins_sign_in_for_every_role(tmp_path: Path) -> None:
    from truthset.demo_web import DEMO_ACCOUNTS, demo_logins
    from truthset.workspace import projects, users

    workspace = Workspace.init(tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'db'}")
    with workspace.unit("test") as s:
        projects.create_project(s, key="demo", name="Demo", schema_text=(
            "name: q\nkind: classification\nmode: single\nclasses:\n  - name: a\n  - name: b\n"))
        users.add_user(s, username="ana", role="annotator")
        users.add_user(s, username="eli", role="annotator")
    logins = demo_logins(workspace, "demo")
    assert [x.username for x in logins] == [a[0] for a in DEMO_ACCOUNTS]
    assert len({x.password for x in logins}) == len(logins)
    client = TestClient(create_app(workspace))
    for login in logins:
        reply = client.post("/api/v1/auth/login",
                            json={"username": login.username, "password": login.password})
        assert reply.status_code == 200, login
        me = client.get("/api/v1/auth/me").json()
        assert {"project": "demo", "role": login.role} in [
            {"project": m["project"], "role": m["role"]} for m in me["memberships"]]
    audit_text = client.get("/api/v1/audit/events?limit=500")
    assert all(x.password not in audit_text.text for x in logins)
    again = demo_logins(workspace, "demo")  # a second run: new passwords, same accounts
    assert [x.username for x in again] == [x.username for x in logins]


def test_demo_browser_projects_leave_work_to_do(tmp_path: Path) -> None:
    from truthset.demo_web import add_browser_projects
    from truthset.workflow import queue
    from truthset.workspace import projects, users

    workspace = Workspace.init(tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'db'}")
    assert add_browser_projects(workspace) == ["lesions", "findings"]
    client = TestClient(create_app(workspace))
    with workspace.unit("test") as s:
        project = projects.get_project(s, "findings")
        task = queue.next_task(s, project, users.get_user(s, "ana")).task
        assert task is not None and task.stage == "annotate"
    with workspace.unit("test") as s:
        from truthset.auth import tokens

        secret = tokens.create_token(s, users.get_user(s, "max"), name="t").secret
    headers = {"Authorization": f"Bearer {secret}"}
    for key in ("lesions", "findings"):
        items = client.get(f"/api/v1/projects/{key}/items", headers=headers).json()["items"]
        assert len(items) == 3
        assert all(m["media_type"] == "application/dicom" for i in items for m in i["media"])
