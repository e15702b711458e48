"""``truthset release``: the command line over the release service, with its exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from release_support import KEY, PASSWORD, adjudicate, build_project
from truthset.cli.main import app
from truthset.workspace.workspace import Workspace


@pytest.fixture
def wsdir(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    with Workspace.init(folder, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}") as ws:
        build_project(ws, tmp_path)
    return folder


def _run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.output


def test_release_commands(wsdir: Path, tmp_path: Path) -> None:
    w = ("-w", str(wsdir))
    code, out = _run("release", "create", KEY, "v1", *w)
    assert code == 2 and "h.png" in out and "exclude" in out
    code, out = _run("release", "create", KEY, "v1", "--exclude", "h.png=not read yet",
                     "--out", str(tmp_path / "v1"), *w)
    assert code == 0, out
    assert "manifest sha256" in out and (tmp_path / "v1" / "manifest.json").is_file()
    code, out = _run("release", "verify", str(tmp_path / "v1"))
    assert code == 0 and "verified" in out and "not final" in out
    code, out = _run("release", "sign", KEY, "v1", "--as", "quinn", "--meaning", "reviewed",
                     "--password-stdin", *w, stdin="wrong password\n")
    assert code == 5 and "password" in out
    code, out = _run("release", "sign", KEY, "v1", "--as", "quinn", "--meaning",
                     "approved for training", "--password-stdin", *w, stdin=PASSWORD + "\n")
    assert code == 0 and "Quinn Approver" in out, out
    code, out = _run("release", "sign", KEY, "v1", "--as", "quinn", "--meaning", "reviewed",
                     "--password-stdin", *w, stdin=PASSWORD + "\n")
    assert code == 4 and "already signed" in out
    code, out = _run("release", "write", KEY, "v1", str(tmp_path / "v1-signed"), *w)
    assert code == 0
    code, out = _run("release", "verify", str(tmp_path / "v1-signed"), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["signatures"][0]["signer"] == "quinn"
    key_id = report["signatures"][0]["key"].removeprefix("ed25519 ")
    assert len(key_id) == 64
    code, out = _run("release", "verify", str(tmp_path / "v1-signed"))
    assert code == 0 and f"(ed25519 {key_id}): ok" in out.replace("\n", "")
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps({"quinn": [key_id]}))
    code, out = _run("release", "verify", str(tmp_path / "v1-signed"), "--trusted-keys",
                     str(trusted))
    assert code == 0, out
    trusted.write_text(json.dumps({"quinn": ["0" * 64]}))  # a key pinned out of band differs
    code, out = _run("release", "verify", str(tmp_path / "v1-signed"), "--trusted-keys",
                     str(trusted))
    assert code == 1 and "not a trusted key of 'quinn'" in out.replace("\n", "")
    trusted.write_text("[1, 2]")
    code, out = _run("release", "verify", str(tmp_path / "v1-signed"), "--trusted-keys",
                     str(trusted))
    assert code == 2 and "signer -> key ids" in out
    (tmp_path / "v1-signed" / "labels.csv").write_text("tampered\n")
    code, out = _run("release", "verify", str(tmp_path / "v1-signed"))
    assert code == 1 and "changed" in out and "labels.csv" in out
    code, out = _run("release", "rebuild", KEY, "v1", *w)
    assert code == 0 and "byte-identical" in out
    with Workspace.open(wsdir) as ws:
        adjudicate(ws, "d.png", "nodule", reason="subtle nodule on review")
    code, out = _run("release", "create", KEY, "v2", "--exclude-unresolved", "waiting", *w)
    assert code == 0, out
    code, out = _run("release", "diff", KEY, "v1", "v2", "--json", *w)
    diff = json.loads(out)
    assert code == 0 and diff["label_changed"][0]["to"] == "nodule"
    code, out = _run("release", "diff", KEY, "v1", "v2", *w)
    assert "d.png: normal -> nodule" in out and "subtle nodule on review" in out
    code, out = _run("release", "list", KEY, *w)
    assert code == 0 and "v1" in out and "v2" in out
    code, out = _run("release", "export", KEY, "v2", str(tmp_path / "exp"), "--format", "csv",
                     *w)
    assert code == 0 and (tmp_path / "exp" / "labels.csv").is_file()
    code, out = _run("release", "export", KEY, "v2", str(tmp_path / "exp2"), "--format", "xml",
                     *w)
    assert code == 2 and "unknown export format" in out
    code, out = _run("release", "diff", KEY, "v1", "v9", *w)
    assert code == 3
