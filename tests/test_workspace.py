"""Workspace services and CLI: projects, users, item and label imports, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image
from typer.testing import CliRunner

from truthset import audit
from truthset.cli.main import app
from truthset.domain.errors import ConflictError, InputError, NotFoundError
from truthset.store.blobs import BlobStore
from truthset.store.models import Annotation, Item, LabelSchemaVersion, Project
from truthset.workspace import imports, projects, users
from truthset.workspace.workspace import Workspace

DATA = Path(__file__).parent / "data"
SCHEMA = (DATA / "chest_schema.yaml").read_text()
runner = CliRunner()


def _png(path: Path, seed: int = 0, size: tuple[int, int] = (16, 12)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, size[::-1], dtype=np.uint8)).save(path)
    return path


def _count(ws: Workspace, model: type) -> int:
    with ws.sessions() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


@pytest.fixture
def chest(workspace: Workspace, tmp_path: Path) -> Workspace:
    """A workspace with project 'chest', readers r1..r3 and three imported images."""
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(3):
        _png(folder / f"img{k}.png", seed=k)
    with workspace.unit("admin") as s:
        project = projects.create_project(s, key="chest", name="Chest", schema_text=SCHEMA)
        for k in range(1, 4):
            users.add_user(s, username=f"r{k}", role="annotator")
        imports.import_items(s, workspace.blobs, project, [folder])
    return workspace


# --- projects and schemas -------------------------------------------------------------------
def test_bad_schema_is_refused_with_its_line_and_nothing_is_stored(workspace: Workspace) -> None:
    bad = SCHEMA.replace("risk: high", "risk: severe")
    with pytest.raises(InputError) as err, workspace.unit("admin") as s:
        projects.create_project(s, key="chest", name="x", schema_text=bad, schema_source="s.yaml")
    message = str(err.value)
    assert "s.yaml" in message and "line 6" in message and "classes.1.risk" in message
    assert _count(workspace, Project) == 0
    assert _count(workspace, LabelSchemaVersion) == 0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: x\nkind: classification\nclasses: [{name: a}, {name: b}]\n", "mode"),
        ("name: x\nkind: classification\nmode: single\nclasses: [{name: a}, {name: a}]\n",
         "repeated: a"),
        ("name: x\nkind: blob\nclasses: [{name: a}]\n", "line 2"),
        ("name: x\nkind: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_schema_errors_are_named(text: str, needle: str) -> None:
    from truthset.domain.schema import parse_schema

    with pytest.raises(InputError, match=needle.replace("[", r"\[")):
        parse_schema(text)


def test_duplicate_project_and_user_are_conflicts(workspace: Workspace) -> None:
    with workspace.unit("admin") as s:
        projects.create_project(s, key="chest", name="Chest", schema_text=SCHEMA)
        users.add_user(s, username="ana", role="annotator")
    with pytest.raises(ConflictError, match="key"), workspace.unit("admin") as s:
        projects.create_project(s, key="chest", name="again", schema_text=SCHEMA)
    with pytest.raises(ConflictError, match="username"), workspace.unit("admin") as s:
        users.add_user(s, username="ana", role="reviewer")
    with pytest.raises(InputError, match="role"), workspace.unit("admin") as s:
        users.add_user(s, username="bo", role="wizard")
    with pytest.raises(NotFoundError), workspace.unit("admin") as s:
        projects.get_project(s, "nope")


# --- items ----------------------------------------------------------------------------------
def test_import_items_stores_content_addressed_blobs(chest: Workspace, tmp_path: Path) -> None:
    with chest.sessions() as s:
        items = s.scalars(sa.select(Item).order_by(Item.external_id)).all()
        assert [i.external_id for i in items] == ["img0.png", "img1.png", "img2.png"]
        media = items[0].media[0]
    data = (tmp_path / "images" / "img0.png").read_bytes()
    assert media["sha256"] == hashlib.sha256(data).hexdigest()
    assert (media["width"], media["height"]) == (16, 12)
    assert chest.blobs.get_bytes(media["sha256"]) == data
    # Importing the same folder again skips every file.
    with chest.unit("admin") as s:
        again = imports.import_items(s, chest.blobs, projects.get_project(s, "chest"),
                                     [tmp_path / "images"])
    assert again.ingested == [] and len(again.skipped) == 3


def test_a_bad_file_refuses_the_batch_unless_asked_to_continue(
    workspace: Workspace, tmp_path: Path
) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    _png(folder / "good.png")
    (folder / "notes.txt").write_text("not an image")
    truncated = _png(folder / "cut.png", size=(64, 64)).read_bytes()
    (folder / "cut.png").write_bytes(truncated[: len(truncated) // 2])
    with workspace.unit("admin") as s:
        projects.create_project(s, key="chest", name="Chest", schema_text=SCHEMA)
    with pytest.raises(InputError) as err, workspace.unit("admin") as s:
        imports.import_items(s, workspace.blobs, projects.get_project(s, "chest"), [folder])
    assert "notes.txt" in str(err.value) and "cut.png" in str(err.value)
    assert _count(workspace, Item) == 0
    with workspace.unit("admin") as s:
        summary = imports.import_items(s, workspace.blobs, projects.get_project(s, "chest"),
                                       [folder], continue_on_error=True)
    assert summary.ingested == ["good.png"]
    assert {Path(p).name for p, _why in summary.refused} == {"notes.txt", "cut.png"}


def test_absurd_dimensions_are_refused_before_decoding(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("1", (12_000, 12_000)).save(big)  # 144 MP declared, a few kB on disk
    with pytest.raises(InputError, match="big.png"):
        imports._probe_raster(big)


# --- labels ---------------------------------------------------------------------------------
def _labels(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("item,annotator,label\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    return path


def test_import_labels_records_versions_and_audits(chest: Workspace, tmp_path: Path) -> None:
    table = _labels(tmp_path / "l.csv", [("img0.png", "r1", "normal"), ("img0.png", "r2", "nodule"),
                                         ("img1.png", "r1", "effusion")])
    with chest.unit("loader") as s:
        n = imports.import_labels(s, projects.get_project(s, "chest"), table)
    assert n == 3
    with chest.sessions() as s:
        rows = s.scalars(sa.select(Annotation).order_by(Annotation.id)).all()
        assert [r.payload for r in rows] == [{"label": "normal"}, {"label": "nodule"},
                                             {"label": "effusion"}]
        assert {r.schema_version for r in rows} == {1}
        events = list(audit.iter_events(s))
        assert events[-1]["action"] == "import"
        assert json.loads(events[-1]["after"])["rows"] == 3
        assert audit.verify(s).ok


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([("img0.png", "r1", "normal"), ("img9.png", "r1", "normal")], "row 2.*'item'"),
        ([("img0.png", "r1", "normal"), ("img1.png", "zed", "normal")], "row 2.*'annotator'"),
        ([("img0.png", "r1", "normal"), ("img1.png", "r2", "tumour")], "row 2.*'label'"),
    ],
)
def test_bad_label_rows_refuse_the_file(
    chest: Workspace, tmp_path: Path, rows: list[tuple[str, str, str]], needle: str
) -> None:
    table = _labels(tmp_path / "bad.csv", rows)
    with pytest.raises(InputError, match=needle) as err, chest.unit("loader") as s:
        imports.import_labels(s, projects.get_project(s, "chest"), table)
    assert "bad.csv" in str(err.value)
    assert _count(chest, Annotation) == 0


def test_empty_label_is_named(chest: Workspace, tmp_path: Path) -> None:
    table = tmp_path / "gap.csv"
    table.write_text("item,annotator,label\nimg0.png,r1,normal\nimg1.png,r1,\n")
    with pytest.raises(InputError, match="row 2.*'label'"), chest.unit("loader") as s:
        imports.import_labels(s, projects.get_project(s, "chest"), table)


def test_jsonl_labels_and_broken_jsonl(chest: Workspace, tmp_path: Path) -> None:
    good = tmp_path / "l.jsonl"
    good.write_text('{"item": "img0.png", "annotator": "r1", "label": "normal"}\n')
    with chest.unit("loader") as s:
        assert imports.import_labels(s, projects.get_project(s, "chest"), good) == 1
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"item": "img0.png", "annotator": "r1", "label": "normal"}\n{oops\n')
    with pytest.raises(InputError, match="line 2"), chest.unit("loader") as s:
        imports.import_labels(s, projects.get_project(s, "chest"), bad)


# --- blob store -----------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["local", "memory://truthset-test"])
def test_blob_store_dedupes_and_verifies(tmp_path: Path, url: str) -> None:
    store = BlobStore(tmp_path / "blobs" if url == "local" else url)
    a = store.put_bytes(b"pixels")
    assert store.put_bytes(b"pixels") == a == hashlib.sha256(b"pixels").hexdigest()
    assert list(store) == [a]
    assert store.verify(a) and store.get_bytes(a) == b"pixels"
    with pytest.raises(NotFoundError):
        store.get_bytes("0" * 64)


def test_blob_store_detects_corruption(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put_bytes(b"original")
    Path(store.path(digest)).write_bytes(b"tampered")
    assert not store.verify(digest)
    with pytest.raises(Exception, match="does not match"):
        store.get_bytes(digest)


# --- CLI ------------------------------------------------------------------------------------
def test_cli_end_to_end_and_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUTHSET_DATABASE_URL", raising=False)
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", str(ws)]).exit_code == 0
    monkeypatch.setenv("TRUTHSET_WORKSPACE", str(ws))
    schema = tmp_path / "schema.yaml"
    schema.write_text(SCHEMA)
    result = runner.invoke(app, ["project", "create", "chest", "--schema", str(schema)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["user", "add", "r1"]).exit_code == 0
    dup = runner.invoke(app, ["user", "add", "r1"])
    assert dup.exit_code == 4 and "already exists" in dup.output
    image = _png(tmp_path / "a.png")
    result = runner.invoke(app, ["import", "items", str(image), "-p", "chest"])
    assert result.exit_code == 0, result.output
    (tmp_path / "x.bmp").write_bytes(b"BM")
    bad = runner.invoke(app, ["import", "items", str(tmp_path / "x.bmp"), "-p", "chest"])
    assert bad.exit_code == 2 and "x.bmp" in bad.output
    labels = _labels(tmp_path / "l.csv", [("a.png", "r1", "nodule")])
    assert runner.invoke(app, ["import", "labels", str(labels), "-p", "chest"]).exit_code == 0
    bad_labels = _labels(tmp_path / "m.csv", [("a.png", "r1", "tumour")])
    result = runner.invoke(app, ["import", "labels", str(bad_labels), "-p", "chest"])
    assert result.exit_code == 2 and "row 1" in result.output
    head = runner.invoke(app, ["audit", "head"])
    assert head.exit_code == 0
    (tmp_path / "head.json").write_text(head.stdout)
    verify = runner.invoke(app, ["audit", "verify", "--anchor", str(tmp_path / "head.json")])
    assert verify.exit_code == 0 and "intact" in verify.output
    missing = runner.invoke(app, ["project", "list", "-w", str(tmp_path / "nowhere")])
    assert missing.exit_code == 3 and "no Truthset workspace" in missing.output


def test_workspace_is_found_from_option_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRUTHSET_DATABASE_URL", raising=False)
    Workspace.init(tmp_path / "a").close()
    Workspace.init(tmp_path / "b").close()
    monkeypatch.chdir(tmp_path / "a")
    monkeypatch.delenv("TRUTHSET_WORKSPACE", raising=False)
    assert Workspace.open().root == (tmp_path / "a").resolve()
    monkeypatch.setenv("TRUTHSET_WORKSPACE", str(tmp_path / "b"))
    assert Workspace.open().root == (tmp_path / "b").resolve()
    assert Workspace.open(tmp_path / "a").root == (tmp_path / "a").resolve()
    with pytest.raises(InputError, match="already exists"):
        Workspace.init(tmp_path / "a")
