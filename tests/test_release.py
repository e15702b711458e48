"""Releases: freezing final labels with provenance, refusing unresolved items, immutability,
offline verification, byte-identical rebuilds, signatures, splits, export checks and diffs."""

from __future__ import annotations

import base64
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from release_support import KEY, PASSWORD, PLAN, adjudicate, build_project, create, sign, write
from truthset import audit
from truthset.domain.errors import ConflictError, InputError, PermissionDeniedError
from truthset.release import diff as release_diff
from truthset.release import service
from truthset.release.manifest import (
    canonical_bytes,
    merkle_root,
    sha256_hex,
    signature_document,
    verify_folder,
)
from truthset.release.splits import make_splits, patients_in_several_splits
from truthset.store.models import AuditEvent, Release, ReleaseItem, SigningKey
from truthset.workspace import projects
from truthset.workspace.workspace import Workspace


@pytest.fixture
def ws(workspace: Workspace, tmp_path: Path) -> Workspace:
    build_project(workspace, tmp_path)
    return workspace


def _head(ws: Workspace) -> int:
    with ws.sessions() as s:
        return audit.stored_head(s).seq


def test_release_freezes_final_labels_with_provenance(ws: Workspace, tmp_path: Path) -> None:
    release = create(ws, "v1")
    assert release.status == "created" and len(release.manifest_sha256) == 64
    folder = write(ws, "v1", tmp_path / "v1")
    labels = pd.read_csv(folder / "labels.csv")
    assert list(labels["item"]) == sorted(n for n, p in PLAN.items() if p[2] is not None)
    row = labels.set_index("item").loc["b.png"]
    assert row["final_label"] == "nodule" and row["label_source"] == "consensus"
    assert row["consensus_method"] == "mv" and row["readers"] == "ann;bob;cat"
    assert row["agreement"] == pytest.approx(2 / 3, abs=1e-6)
    assert row["split"] in ("train", "validation", "test")
    provenance = pd.read_csv(folder / "provenance.csv")
    assert (provenance.groupby("item")["annotator"].nunique() == 3).all()
    assert provenance["created_at"].str.endswith("+00:00").all()
    full = [json.loads(line) for line in (folder / "provenance.jsonl").read_text().splitlines()]
    cons = next(f for f in full if f["item"] == "b.png")["provenance"]["consensus"]
    assert cons["parameters"]["classes"] == ["normal", "nodule", "effusion"]
    assert cons["posterior"]["nodule"] == pytest.approx(2 / 3)
    excluded = pd.read_csv(folder / "excluded.csv")
    assert excluded.to_dict("records") == [{"item": "h.png",
                                            "reason": "excluded by lead: not read yet"}]
    rules = json.loads((folder / "rules.json").read_text())
    assert rules["schema"]["version"] == 1 and rules["guidelines"][0]["version"] == 1
    assert (folder / "datasheet.html").read_text().count("<svg") >= 3
    assert (folder / "datasheet.pdf").read_bytes().startswith(b"%PDF")
    report = verify_folder(folder)
    assert report.ok, report.to_dict()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["merkle_root"] == merkle_root(manifest["files"]) == release.merkle_root
    assert manifest["audit_head"]["seq"] == release.audit_seq
    with ws.sessions() as s:
        stored = s.get(Release, release.id)
        assert stored is not None
        assert service.rebuild(s, ws.blobs, stored).identical


def test_unresolved_items_refuse_the_release_and_nothing_is_stored(ws: Workspace) -> None:
    before = _head(ws)
    with pytest.raises(InputError) as err:
        create(ws, "v1", exclude=None)
    assert "h.png" in str(err.value) and "no consensus" in str(err.value)
    assert err.value.field == "items"
    assert _head(ws) == before
    with pytest.raises(InputError, match="unknown item"):
        create(ws, "v1", exclude={"zzz.png": "x"})
    release = create(ws, "v1", exclude=None, exclude_unresolved="waiting for readers")
    with ws.sessions() as s:
        row = s.scalar(select(ReleaseItem).where(ReleaseItem.release_id == release.id,
                                                 ReleaseItem.external_id == "h.png"))
        assert row is not None and not row.included and "waiting for readers" in row.reason
    with pytest.raises(ConflictError):
        create(ws, "v1")
    with pytest.raises(InputError):
        create(ws, "bad name!")


def test_stored_releases_cannot_be_changed(ws: Workspace) -> None:
    release = create(ws, "v1")
    for statement in (
        update(ReleaseItem).where(ReleaseItem.release_id == release.id)
        .values(final_label={"label": "normal"}),
        update(Release).where(Release.id == release.id).values(manifest_sha256="0" * 64),
    ):
        with pytest.raises(DBAPIError), ws.engine.begin() as conn:
            conn.execute(statement)
    with pytest.raises(DBAPIError), ws.engine.begin() as conn:
        conn.execute(ReleaseItem.__table__.delete())
    with ws.engine.begin() as conn:  # the status alone may change (signing does it)
        conn.execute(update(Release).where(Release.id == release.id).values(status="signed"))


def test_verify_names_changed_missing_and_extra_files(ws: Workspace, tmp_path: Path) -> None:
    create(ws, "v1")
    folder = write(ws, "v1", tmp_path / "v1")
    (folder / "labels.csv").write_text("item,final_label\nx,y\n")
    (folder / "excluded.csv").unlink()
    (folder / "notes.txt").write_text("hello")
    report = verify_folder(folder)
    assert not report.ok
    assert report.changed == ["labels.csv"] and report.missing == ["excluded.csv"]
    assert report.extra == ["notes.txt"]
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["labels.csv"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    assert any("Merkle root" in p for p in verify_folder(folder).problems)


def test_signing(ws: Workspace, tmp_path: Path) -> None:
    create(ws, "v1")
    before = _head(ws)
    refused = sign(ws, "v1", password="wrong password!")
    assert isinstance(refused.error, PermissionDeniedError) and "password" in str(refused.error)
    with ws.sessions() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.seq > before)).all()
        assert [e.action for e in events] == ["release.sign_refused"]
        assert not service.signatures(s, s.scalars(select(Release)).one())
    outcome = sign(ws, "v1")
    assert outcome.error is None and outcome.signature is not None
    assert outcome.signature.printed_name == "Quinn Approver"
    assert outcome.signature.signed_at.endswith("Z")
    again = sign(ws, "v1")
    assert isinstance(again.error, ConflictError) and "already signed" in str(again.error)
    assert sign(ws, "v1", username="rita").error is not None  # no password, no approver role
    folder = write(ws, "v1", tmp_path / "v1")
    report = verify_folder(folder)
    assert report.ok and [s.signer for s in report.signatures] == ["quinn"]
    assert report.signatures[0].meaning == "approved for training"
    # Moving the signature to another release breaks it.
    adjudicate(ws, "b.png", "normal")
    create(ws, "v2")
    other = write(ws, "v2", tmp_path / "v2")
    (other / "signatures").mkdir()
    shutil.copy(folder / "signatures" / "quinn.json", other / "signatures" / "quinn.json")
    moved = verify_folder(other)
    assert not moved.ok and "another manifest" in moved.signatures[0].problem
    # Editing the signature breaks it.
    path = folder / "signatures" / "quinn.json"
    doc = json.loads(path.read_text())
    doc["meaning"] = "approved for clinical use"
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    edited = verify_folder(folder)
    assert not edited.ok and "edited" in edited.signatures[0].problem


def _rewrite(path: Path, **changes: object) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def test_ed25519_signatures_verify_offline_and_name_each_tampering(
        ws: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    create(ws, "v1")
    before = _head(ws)
    caplog.set_level(logging.DEBUG)
    assert sign(ws, "v1", password="wrong password!").error is not None
    with ws.sessions() as s:  # a refused signing makes no key
        assert not s.scalars(select(SigningKey)).all()
    assert sign(ws, "v1").error is None
    folder = write(ws, "v1", tmp_path / "v1")
    report = verify_folder(folder)
    assert report.ok and report.signatures[0].key.startswith("ed25519 ")
    # Independent check with cryptography: the public key in the folder verifies the signature
    # bytes over the canonical JSON of the signed fields.
    doc = json.loads((folder / "signatures" / "quinn.json").read_text())
    public = serialization.load_pem_public_key(doc["public_key"].encode())
    assert isinstance(public, Ed25519PublicKey)
    fields = ("format", "release", "project", "manifest_sha256", "merkle_root", "signer",
              "printed_name", "meaning", "signed_at", "key_id")
    payload = json.dumps({k: doc[k] for k in fields}, indent=2, sort_keys=True,
                         ensure_ascii=False) + "\n"
    public.verify(base64.b64decode(doc["ed25519_signature"]), payload.encode())
    assert doc["meaning"] == "approved for training" and doc["signer"] == "quinn"
    # The stored private key opens only with the password, is the folder's key, and never
    # appears in the audit log, the logs or the folder.
    with ws.sessions() as s:
        row = s.scalars(select(SigningKey)).one()
        assert "ENCRYPTED PRIVATE KEY" in row.private_key_pem
        with pytest.raises(ValueError):
            serialization.load_pem_private_key(row.private_key_pem.encode(), password=b"nope")
        private = serialization.load_pem_private_key(row.private_key_pem.encode(),
                                                     password=PASSWORD.encode())
        assert isinstance(private, Ed25519PrivateKey)
        assert private.public_key().public_bytes_raw() == public.public_bytes_raw()
        events = s.scalars(select(AuditEvent).where(AuditEvent.seq > before)).all()
        text = "".join(e.before + e.after for e in events)
        assert "signing_keys" in {e.entity_type for e in events}
        assert "PRIVATE KEY" not in text and row.private_key_pem not in text
        release = service.get_release(s, projects.get_project(s, KEY), "v1")
        assert [ok for _f, ok, _p in service.verify_stored_signatures(s, ws.blobs, release)] \
            == [True]
    assert "PRIVATE KEY" not in caplog.text
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    # Each tampered field is named.
    for name, value in (("meaning", "approved for clinical use"),
                        ("signed_at", "2020-01-01T00:00:00Z"), ("printed_name", "Someone Else"),
                        ("signer", "rita"), ("release", "v9"), ("merkle_root", "0" * 64),
                        ("manifest_sha256", "0" * 64)):
        copy = tmp_path / f"t-{name}"
        shutil.copytree(folder, copy)
        _rewrite(copy / "signatures" / "quinn.json", **{name: value})
        checked = verify_folder(copy).signatures[0]
        assert not checked.ok and f"edited: {name} changed" in checked.problem, (name, checked)
    # A wrong key: another key's public key in the file, or a forged signature.
    other = Ed25519PrivateKey.generate()
    copy = tmp_path / "wrong-key"
    shutil.copytree(folder, copy)
    _rewrite(copy / "signatures" / "quinn.json", public_key=other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    assert "wrong key" in verify_folder(copy).signatures[0].problem
    _rewrite(copy / "signatures" / "quinn.json", public_key=doc["public_key"],
             ed25519_signature=base64.b64encode(other.sign(payload.encode())).decode())
    assert "does not verify" in verify_folder(copy).signatures[0].problem
    # A changed release file is named; the signature stays bound to the untouched manifest.
    copy = tmp_path / "changed"
    shutil.copytree(folder, copy)
    with open(copy / "labels.csv", "a") as fh:
        fh.write("x\n")
    changed = verify_folder(copy)
    assert not changed.ok and changed.changed == ["labels.csv"]
    # Moving the signature to another release fails although its Ed25519 signature is intact.
    adjudicate(ws, "b.png", "normal")
    create(ws, "v2")
    moved = write(ws, "v2", tmp_path / "v2")
    (moved / "signatures").mkdir()
    shutil.copy(folder / "signatures" / "quinn.json", moved / "signatures" / "quinn.json")
    assert "another manifest" in verify_folder(moved).signatures[0].problem
    # The same key signs the next release.
    assert sign(ws, "v2").error is None
    with ws.sessions() as s:
        assert len(s.scalars(select(SigningKey)).all()) == 1


def test_legacy_signatures_still_verify(ws: Workspace, tmp_path: Path) -> None:
    create(ws, "v1")
    folder = write(ws, "v1", tmp_path / "v1")
    manifest = json.loads((folder / "manifest.json").read_text())
    doc = signature_document(
        release="v1", project=KEY, manifest_sha256=sha256_hex((folder / "manifest.json")
                                                               .read_bytes()),
        merkle_root_hex=manifest["merkle_root"], signer="quinn", printed_name="Quinn Approver",
        meaning="reviewed", signed_at="2026-01-01T00:00:00Z")
    (folder / "signatures").mkdir()
    (folder / "signatures" / "quinn.json").write_bytes(canonical_bytes(doc))
    report = verify_folder(folder)
    assert report.ok and report.signatures[0].key == "legacy binding, no key"
    _rewrite(folder / "signatures" / "quinn.json", meaning="approved for training")
    assert "edited" in verify_folder(folder).signatures[0].problem


def test_separation_of_duties(ws: Workspace) -> None:
    adjudicate(ws, "b.png", "normal")
    adjudicate(ws, "d.png", "normal")
    create(ws, "v1", max_adjudicated_share=0.2)
    outcome = sign(ws, "v1", username="sam")
    assert isinstance(outcome.error, PermissionDeniedError)
    assert "separation of duties" in str(outcome.error) and "29%" in str(outcome.error)
    assert sign(ws, "v1", username="quinn").error is None


def test_identifiers_in_any_file_refuse_the_release(ws: Workspace) -> None:
    ws.vault.derive(KEY, "patient", "SMITH-0042")
    before = _head(ws)
    ids = service.vault_identifiers(ws.vault, KEY)
    assert ("patient", "SMITH-0042") in ids
    with pytest.raises(InputError) as err:
        create(ws, "v1", identifiers=ids, limitations=["Collected from smith-0042's clinic."])
    assert "datasheet.html" in str(err.value) and "SMITH" not in str(err.value).upper()
    assert _head(ws) == before
    release = create(ws, "v1", identifiers=ids)
    assert release.checks["no_identifiers"] == {"ok": True, "identifiers_searched": 1,
                                                 "found": []}


def test_splits_keep_patients_together_and_are_seeded() -> None:
    rows = []
    for p in range(60):
        for k in range(1 + p % 3):
            rows.append({"item": f"i{p}-{k}", "patient": f"P{p}", "label": "ab"[p % 2],
                         "site": "xyz"[p % 3]})
    rows.append({"item": "lonely", "patient": None, "label": "a", "site": "x"})
    table = pd.DataFrame(rows)
    splits = make_splits(table, seed=3)
    assert patients_in_several_splits(table, splits) == []
    assert splits.equals(make_splits(table, seed=3))
    assert not splits.equals(make_splits(table, seed=4))
    shares = splits.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.7, abs=0.1)
    assert shares["test"] == pytest.approx(0.15, abs=0.08)
    for _key, group in table.assign(split=splits).groupby(["label", "site"]):
        assert group["split"].nunique() == 3  # every stratum reaches every split
    with pytest.raises(InputError):
        make_splits(table, seed=0, fractions={"train": 0.5, "test": 0.3})


def test_diff_names_changes_with_reason_and_audit_event(ws: Workspace) -> None:
    create(ws, "v1")
    adjudicate(ws, "b.png", "normal", reason="radiologist consensus meeting")
    with ws.unit("lead") as s:
        project = projects.get_project(s, KEY)
        projects.add_guideline_version(s, project, body="v2", change_note="Define nodule size.")
    create(ws, "v2", exclude={"h.png": "not read yet", "g.png": "duplicate image"})
    with ws.sessions() as s:
        project = projects.get_project(s, KEY)
        v1, v2 = (service.get_release(s, project, n) for n in ("v1", "v2"))
        assert v2.parent_id == v1.id
        result = release_diff.diff_releases(s, v1, v2)
        change = result["label_changed"][0]
        event = s.scalar(select(AuditEvent).where(AuditEvent.seq == change["audit_event"]["seq"]))
    assert result["summary"] == {"added": 0, "removed": 1, "label_changed": 1,
                                 "split_changed": 0}
    assert change["item"] == "b.png" and (change["from"], change["to"]) == ("nodule", "normal")
    assert "radiologist consensus meeting" in change["why"] and "sam" in change["why"]
    assert event is not None and event.entity_type == "annotations"
    assert result["removed"] == [{"item": "g.png", "label": "effusion",
                                  "reason": "excluded by lead: duplicate image"}]
    assert result["guideline_changes"][0]["change_note"] == "Define nodule size."
    text = release_diff.diff_text(result)
    assert "b.png: nodule -> normal" in text and "Define nodule size." in text


def test_export_tables_with_provenance_and_test_split_access_is_audited(
    ws: Workspace, tmp_path: Path
) -> None:
    from truthset.release.export import export_release

    create(ws, "v1", fractions={"train": 0.5, "validation": 0.2, "test": 0.3})
    with ws.unit("ml") as s:
        release = service.get_release(s, projects.get_project(s, KEY), "v1")
        written = export_release(s, release, tmp_path / "out", formats=["csv", "parquet"])
    assert sorted(p.name for p in written) == ["labels.csv", "labels.parquet", "reads.csv",
                                               "reads.parquet"]
    labels = pd.read_parquet(tmp_path / "out" / "labels.parquet")
    assert {"final_label", "label_source", "consensus_method", "readers", "adjudicator",
            "guideline_versions", "split"} <= set(labels.columns)
    assert labels.equals(pd.read_parquet(tmp_path / "out" / "labels.parquet"))
    with ws.sessions() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.seq))]
    assert actions[-2:] == ["release.export", "release.test_split_access"]
    with ws.unit("ml") as s:
        release = service.get_release(s, projects.get_project(s, KEY), "v1")
        with pytest.raises(InputError, match="COCO needs a box or polygon"):
            export_release(s, release, tmp_path / "coco", formats=["coco"])
        with pytest.raises(InputError, match="unknown split"):
            export_release(s, release, tmp_path / "x", formats=["csv"], splits=["holdout"])


def test_release_of_a_project_run_through_the_workflow_queue(
    workspace: Workspace, tmp_path: Path
) -> None:
    """Reads, disagreement, escalation and adjudication made by the workflow queue end up in
    the release as the queue decided them, with the adjudicator's reason."""
    from release_support import SCHEMA
    from truthset.auth import memberships
    from truthset.workflow import policies, queue
    from truthset.workspace import imports, users

    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    for k in range(3):
        Image.new("L", (8, 6), color=40 * k).save(folder / f"x{k}.png")
    plan = {"x0.png": ("normal", "normal"), "x1.png": ("nodule", "normal"),
            "x2.png": ("effusion", "effusion")}
    with workspace.unit("setup") as s:
        project = projects.create_project(s, key="wf", name="wf", schema_text=SCHEMA)
        imports.import_items(s, workspace.blobs, project, [folder])
        for name, role, tier in (("ann", "annotator", 1), ("bob", "annotator", 1),
                                 ("sam", "adjudicator", 3)):
            memberships.add_member(s, project, users.add_user(s, username=name, role=role,
                                                              tier=tier), role)
        policies.set_policy(s, project, "policy:\n  workflow: consensus\n  method: mv\n"
                                        "  k: 2\n  min_agreement: 1.0\n  target: 0.9\n")
        queue.enqueue(s, project)
    for reader, k in (("ann", 0), ("bob", 1)):
        for _ in plan:
            with workspace.unit(reader) as s:
                project = projects.get_project(s, "wf")
                user = users.get_user(s, reader)
                task = queue.next_task(s, project, user).task
                assert task is not None
                queue.submit(s, project, user, task.task_id,
                             {"label": plan[task.external_id][k]})
    with workspace.unit("sam") as s:
        project = projects.get_project(s, "wf")
        sam = users.get_user(s, "sam")
        task = queue.next_task(s, project, sam).task
        assert task is not None and task.external_id == "x1.png"
        queue.adjudicate(s, project, sam, task.task_id, {"label": "nodule"},
                         reason="nodule visible on the lateral view")
    with workspace.unit("lead") as s:
        project = projects.get_project(s, "wf")
        release = service.create_release(s, project, workspace.blobs, name="v1", actor="lead")
        rows = {r.external_id: r for r in service.release_items(s, release)}
    assert all(r.included for r in rows.values())
    adjudicated = rows["x1.png"]
    assert adjudicated.final_label == {"label": "nodule"}
    assert adjudicated.label_source == "adjudicated"
    adj = adjudicated.provenance["adjudication"]
    assert adj["adjudicator"] == "sam" and adj["reason"] == "nodule visible on the lateral view"
    assert [r["reader"] for r in adjudicated.provenance["reads"]] == ["ann", "bob"]
    assert rows["x0.png"].label_source == "consensus"
    assert rows["x0.png"].provenance["consensus"]["method"] == "mv"


def test_geometry_checks_and_imaging_exports_of_a_release(tmp_path: Path) -> None:
    """Boxes outside the image fail the export check (item excluded with the reason); the
    release's boxes export as COCO and DICOM SR, its masks as DICOM SEG and NIfTI."""
    import pydicom

    from test_imaging_helpers import make_series
    from truthset.prelabel.output import encode_mask
    from truthset.release.export import export_release
    from truthset.store.models import Item, Review
    from truthset.workflow.annotations import record_annotation
    from truthset.workspace import imports, users

    ws = Workspace.init(tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    series = [make_series(tmp_path / "s1", slices=2)[0],
              make_series(tmp_path / "s2", slices=2, base="MR_small.dcm")[0]]
    schema = ("name: lesions\nkind: {kind}\nclasses:\n  - {{name: tumour}}\n"
              "  - {{name: cyst}}\n")
    with ws, ws.unit("lead") as s:
        reader = users.add_user(s, username="dr-a", role="annotator")
        checker = users.add_user(s, username="dr-b", role="reviewer", tier=2)
        made = {}
        for kind in ("box", "mask"):
            project = projects.create_project(s, key=kind, name=kind,
                                              schema_text=schema.format(kind=kind))
            for paths in series:
                imports.import_items(s, ws.blobs, project, paths, vault=ws.vault)
            made[kind] = project
        rows = [int(pydicom.dcmread(paths[0]).Rows) for paths in series]
        cols = [int(pydicom.dcmread(paths[0]).Columns) for paths in series]
        boxes = {0: [{"label": "tumour", "box": [10, 20, 40, 50], "slice": 0}],
                 1: [{"label": "cyst", "box": [10, 20, cols[1] + 5, 50], "slice": 0}]}
        mask = np.zeros((2, rows[0], cols[0]), dtype=bool)
        mask[0, 5:9, 5:9] = True
        for kind, project in made.items():
            items = s.scalars(select(Item).where(Item.project_id == project.id)
                              .order_by(Item.id)).all()
            assert len(items) == 2
            for k, item in enumerate(items):
                payload = ({"objects": boxes[k]} if kind == "box" else
                           {"objects": [{"label": "tumour", "mask": encode_mask(
                               mask if k == 0 else mask[:1])}]})
                row = record_annotation(s, project, item=item, author=reader, payload=payload)
                s.add(Review(project_id=project.id, annotation_id=row.id,
                             reviewer_id=checker.id, decision="accept"))
        s.flush()
        box_release = service.create_release(s, made["box"], ws.blobs, name="v1", actor="lead",
                                             fractions={"train": 0.5, "test": 0.5})
        box_rows = sorted(service.release_items(s, box_release), key=lambda r: r.item_id)
        mask_release = service.create_release(s, made["mask"], ws.blobs, name="v1",
                                              actor="lead", fractions={"train": 0.5,
                                                                       "test": 0.5})
        mask_rows = sorted(service.release_items(s, mask_release), key=lambda r: r.item_id)
        assert [r.included for r in box_rows] == [True, False]
        assert "outside the image" in box_rows[1].reason
        assert not box_release.checks["geometry_in_bounds"]["ok"]
        assert [r.included for r in mask_rows] == [True, False]
        assert "mask shape" in mask_rows[1].reason
        coco_files = export_release(s, box_release, tmp_path / "coco",
                                    formats=["coco", "dicom-sr"], blobs=ws.blobs)
        seg_files = export_release(s, mask_release, tmp_path / "seg",
                                   formats=["dicom-seg", "nifti"], blobs=ws.blobs)
    names = sorted(p.name for p in coco_files)
    assert any(n.startswith("coco_") for n in names) and any(n.endswith("_sr.dcm") for n in names)
    coco = json.loads(next(p for p in coco_files if p.name.startswith("coco_")).read_text())
    assert coco["annotations"][0]["bbox"] == [10.0, 20.0, 30.0, 30.0]
    assert sorted(p.name.split("_", 1)[1] for p in seg_files) == ["labels.nii.gz", "seg.dcm"]
