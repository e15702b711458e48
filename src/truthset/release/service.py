"""Releases: freeze, store, rebuild, write out and sign dataset versions.

A release is created in one transaction: every item's final label and provenance are frozen
into ``release_items``; the files are rendered from that frozen content, checked (labels inside
the schema, geometry inside the image, no known identifier in any file), stored in the blob
store and listed in ``release_files`` with the manifest. Nothing of it changes afterwards
(database triggers refuse it); only signatures are added, each bound to the manifest hash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.auth.memberships import roles_in
from truthset.auth.passwords import verify_password
from truthset.domain.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    TruthsetError,
)
from truthset.domain.roles import Role
from truthset.domain.schema import LabelSchema
from truthset.release import checks as checks_mod
from truthset.release.freeze import FrozenItem, collect, iso_utc
from truthset.release.keys import signing_key, user_keys
from truthset.release.manifest import (
    MANIFEST,
    SIGNATURE_FORMAT,
    canonical_bytes,
    check_signature,
    sha256_hex,
    signature_document,
    signature_file_name,
)
from truthset.release.render import media_type, render_release
from truthset.release.splits import DEFAULT_FRACTIONS, check_fractions, make_splits
from truthset.store.blobs import BlobStore
from truthset.store.models import (
    GuidelineVersion,
    PolicyVersion,
    Project,
    Release,
    ReleaseFile,
    ReleaseItem,
    ReleaseSignature,
    User,
)
from truthset.workspace.projects import rules as current_rules

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: Roles that may sign (approve) a release, globally or in the project.
APPROVER_ROLES = frozenset({Role.ADMIN, Role.MANAGER})
#: Default largest share of a release's labels its approver may have adjudicated.
DEFAULT_MAX_ADJUDICATED_SHARE = 0.1
#: Suggested signature meanings (any short text is accepted).
MEANINGS = ("reviewed", "approved for training", "approved for validation",
            "approved for clinical evaluation")


# -- create ----------------------------------------------------------------------------------
def _rules_snapshot(session: Session, project: Project) -> tuple[dict[str, Any], int | None]:
    current = current_rules(session, project)
    guidelines = session.scalars(
        select(GuidelineVersion).where(GuidelineVersion.project_id == project.id)
        .order_by(GuidelineVersion.version)).all()
    policy = session.scalars(
        select(PolicyVersion).where(PolicyVersion.project_id == project.id)
        .order_by(PolicyVersion.version.desc()).limit(1)).first()
    snapshot = {
        "schema": {"version": current.schema_version, "definition": current.schema.to_dict()},
        "guidelines": [{"version": g.version, "change_note": g.change_note,
                        "created_at": iso_utc(g.created_at)} for g in guidelines],
        "guideline_version": current.guideline_version,
        "policy": None if policy is None else {"version": policy.version,
                                               "definition": policy.definition},
    }
    return snapshot, None if policy is None else policy.version


def _stored_item(f: FrozenItem, included: bool, reason: str) -> dict[str, Any]:
    return {"item_id": f.item_id, "external_id": f.external_id, "included": included,
            "final_label": f.final_label if included else None,
            "label_source": f.label_source if included else "", "split": None,
            "reason": reason, "subgroups": f.subgroups, "provenance": f.provenance}


def vault_identifiers(vault: Any, project_key: str) -> list[tuple[str, str]]:
    """``(kind, original)`` pairs the pseudonym vault holds for a project (for the PHI scan)."""
    if vault is None:
        return []
    return list(vault.originals(project_key))


def create_release(
    session: Session,
    project: Project,
    blobs: BlobStore,
    *,
    name: str,
    actor: str,
    identifiers: Iterable[tuple[str, str]] = (),
    exclude: Mapping[str, str] | None = None,
    exclude_unresolved: str | None = None,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    parent: str | None = None,
    limitations: Iterable[str] = (),
    max_adjudicated_share: float = DEFAULT_MAX_ADJUDICATED_SHARE,
) -> Release:
    """Freeze ``project``'s final labels into the release ``name``.

    Parameters
    ----------
    identifiers:
        ``(kind, value)`` identifiers no file may contain (the vault's originals, see
        :func:`vault_identifiers`, plus any the caller knows).
    exclude:
        External item id -> reason, for items left out on purpose.
    exclude_unresolved:
        When given, every unresolved item is left out with this reason; otherwise unresolved
        items refuse the release.
    seed, fractions:
        Of the patient-level splits (default 70/15/15).
    parent:
        The release this one is diffed against (default: the latest release of the project).
    limitations:
        Known limitations to print in the datasheet (computed ones are added).
    max_adjudicated_share:
        Separation of duties: nobody who adjudicated more than this share of the labels may
        sign the release.

    Raises
    ------
    InputError
        Bad name or arguments, unknown excluded item, unresolved items not excluded, nothing
        to release, or an identifier found in a file (file and kind named, never the value).
    ConflictError
        A release of that name exists.
    """
    if not _NAME.match(name):
        raise InputError("a release name is 1–100 letters, digits, '.', '_' or '-', starting "
                         "with a letter or digit", field="name")
    if not 0 <= max_adjudicated_share <= 1:
        raise InputError("max_adjudicated_share must be between 0 and 1",
                         field="max_adjudicated_share")
    shares = check_fractions(fractions or DEFAULT_FRACTIONS)
    if session.scalar(select(Release.id).where(Release.project_id == project.id,
                                               Release.name == name)) is not None:
        raise ConflictError(f"field 'name': project {project.key!r} already has a release "
                            f"{name!r}; releases are immutable, choose a new name")
    parent_row = (get_release(session, project, parent) if parent else session.scalars(
        select(Release).where(Release.project_id == project.id)
        .order_by(Release.id.desc()).limit(1)).first())
    frozen = collect(session, project)
    known = {f.external_id for f in frozen}
    excluded_by_hand = dict(exclude or {})
    unknown = sorted(set(excluded_by_hand) - known)
    if unknown:
        raise InputError(f"cannot exclude unknown item(s) {', '.join(unknown[:5])}",
                         field="exclude")
    snapshot, policy_version = _rules_snapshot(session, project)
    schema = LabelSchema.model_validate(snapshot["schema"]["definition"])
    stored: list[dict[str, Any]] = []
    refused: list[str] = []
    label_failures: list[dict[str, str]] = []
    geometry_failures: list[dict[str, str]] = []
    for f in frozen:
        if f.external_id in excluded_by_hand:
            reason = excluded_by_hand[f.external_id].strip() or "no reason given"
            stored.append(_stored_item(f, False, f"excluded by {actor}: {reason}"))
        elif f.status != "active":
            stored.append(_stored_item(f, False, f"quarantined (item status {f.status!r})"))
        elif f.final_label is None:
            if exclude_unresolved is None:
                refused.append(f"{f.external_id} ({f.unresolved})")
            else:
                stored.append(_stored_item(f, False, f"unresolved: {f.unresolved}"
                                           + (f"; {exclude_unresolved}"
                                              if exclude_unresolved.strip() else "")))
        elif (problem := checks_mod.label_problem(schema, f.final_label)) is not None:
            label_failures.append({"item": f.external_id, "problem": problem})
            stored.append(_stored_item(f, False, f"failed a check: {problem}"))
        elif (problem := checks_mod.geometry_problem(schema, f.final_label, f.size)) is not None:
            geometry_failures.append({"item": f.external_id, "problem": problem})
            stored.append(_stored_item(f, False, f"failed a check: {problem}"))
        else:
            stored.append(_stored_item(f, True, ""))
    if refused:
        shown = "; ".join(refused[:5]) + (f"; … {len(refused) - 5} more" if len(refused) > 5
                                          else "")
        raise InputError(
            f"{len(refused)} item(s) have no final label: {shown}. Resolve them, or exclude "
            "them explicitly (exclude ITEM=REASON, or exclude_unresolved=REASON)",
            field="items")
    included = [s for s in stored if s["included"]]
    if not included:
        raise InputError(f"project {project.key!r} has no item with a final label to release",
                         field="items")
    table = pd.DataFrame({
        "item": [s["external_id"] for s in included],
        "patient": [s["subgroups"].get("patient") for s in included],
        "label": [canonical_bytes(s["final_label"]).decode() for s in included],
        "site": [s["subgroups"].get("site") or "" for s in included],
    })
    split = make_splits(table, seed=seed, fractions=shares)
    for s, value in zip(included, split, strict=True):
        s["split"] = str(value)
    from truthset.release.splits import patients_in_several_splits

    leaks = patients_in_several_splits(table, split)
    split_summary = {"seed": seed, "fractions": shares, "by": "patient",
                     "stratified_by": ["class", "site"],
                     "counts": {k: int((split == k).sum()) for k in shares}}
    head = audit.stored_head(session)
    now = datetime.now(UTC)
    settings = {"seed": seed, "fractions": shares, "split_summary": split_summary,
                "limitations": [str(x) for x in limitations],
                "max_adjudicated_share": max_adjudicated_share,
                "exclude_unresolved": exclude_unresolved,
                "excluded_by_hand": dict(sorted(excluded_by_hand.items()))}
    identifiers = list(identifiers)
    searched = len({v for _k, v in identifiers
                    if len(str(v).strip()) >= checks_mod.MIN_IDENTIFIER_LENGTH})
    check_results: dict[str, dict[str, Any]] = {
        "labels_in_schema": {"ok": not label_failures, "failed": label_failures},
        "geometry_in_bounds": {"ok": not geometry_failures, "failed": geometry_failures},
        "splits_by_patient": {"ok": not leaks, "patients_in_several_splits": len(leaks)},
        "no_identifiers": {"ok": True, "identifiers_searched": searched, "found": []},
    }
    meta = {"release": name, "project": project.key, "created_at": iso_utc(now),
            "created_by": actor, "parent": parent_row.name if parent_row else None,
            "schema_version": snapshot["schema"]["version"],
            "guideline_version": snapshot["guideline_version"], "policy_version": policy_version,
            "audit_head": {"seq": int(head.seq), "hash": head.hash}}
    content = {"meta": meta, "rules": snapshot, "settings": settings, "checks": check_results,
               "items": stored}
    files, manifest_bytes = render_release(content)
    findings = checks_mod.scan_for_identifiers({**files, MANIFEST: manifest_bytes}, identifiers)
    if findings:
        where = ", ".join(f"{f.file} ({f.kind} identifier)" for f in findings[:5])
        raise InputError(f"a known identifier was found in the release files: {where}; "
                         "nothing was stored", field="identifiers")
    if leaks:
        raise InputError(f"{len(leaks)} patient(s) fall in several splits", field="splits")
    import json

    manifest = json.loads(manifest_bytes)
    release = Release(
        project_id=project.id, name=name, status="created", created_by=actor,
        parent_id=parent_row.id if parent_row else None,
        schema_version=snapshot["schema"]["version"],
        guideline_version=snapshot["guideline_version"], policy_version=policy_version,
        audit_seq=head.seq, audit_hash=head.hash, settings=settings, rules=snapshot,
        checks=check_results, manifest_sha256=sha256_hex(manifest_bytes),
        merkle_root=manifest["merkle_root"], created_at=now,
    )
    session.add(release)
    session.flush()
    session.add_all(
        ReleaseItem(release_id=release.id, item_id=s["item_id"], external_id=s["external_id"],
                    included=s["included"], final_label=s["final_label"],
                    label_source=s["label_source"], split=s["split"], reason=s["reason"],
                    subgroups=s["subgroups"], provenance=s["provenance"])
        for s in stored
    )
    for fname, data in sorted({**files, MANIFEST: manifest_bytes}.items()):
        digest = blobs.put_bytes(data)
        session.add(ReleaseFile(release_id=release.id, name=fname, sha256=digest,
                                size=len(data), media_type=media_type(fname)))
    session.flush()
    audit.record(session, action="release.create", entity_type="releases",
                 entity_id=release.id, project_id=project.id,
                 after={"release": name, "manifest_sha256": release.manifest_sha256,
                        "merkle_root": release.merkle_root, "included": len(included),
                        "excluded": len(stored) - len(included)})
    return release


# -- read ------------------------------------------------------------------------------------
def list_releases(session: Session, project: Project) -> list[Release]:
    """The project's releases, oldest first."""
    return list(session.scalars(select(Release).where(Release.project_id == project.id)
                                .order_by(Release.id)))


def get_release(session: Session, project: Project, name: str) -> Release:
    """The release ``name`` of ``project``.

    Raises
    ------
    NotFoundError
        No such release (the message lists those there are).
    """
    row = session.scalar(select(Release).where(Release.project_id == project.id,
                                               Release.name == name))
    if row is None:
        names = [r.name for r in list_releases(session, project)]
        known = f"; releases: {', '.join(names)}" if names else "; there are no releases yet"
        raise NotFoundError(f"project {project.key!r} has no release {name!r}{known}")
    return row


def release_items(session: Session, release: Release) -> list[ReleaseItem]:
    """A release's items, ordered by external id."""
    return list(session.scalars(select(ReleaseItem).where(ReleaseItem.release_id == release.id)
                                .order_by(ReleaseItem.external_id, ReleaseItem.item_id)))


def release_files(session: Session, release: Release) -> list[ReleaseFile]:
    """A release's stored files (manifest included), by name."""
    return list(session.scalars(select(ReleaseFile).where(ReleaseFile.release_id == release.id)
                                .order_by(ReleaseFile.name)))


def signatures(session: Session, release: Release) -> list[ReleaseSignature]:
    """A release's signatures, oldest first."""
    return list(session.scalars(select(ReleaseSignature)
                                .where(ReleaseSignature.release_id == release.id)
                                .order_by(ReleaseSignature.id)))


def load_content(session: Session, release: Release) -> dict[str, Any]:
    """The frozen content of a stored release, as :func:`render_release` takes it."""
    project = session.get(Project, release.project_id)
    assert project is not None
    parent = session.get(Release, release.parent_id) if release.parent_id else None
    meta = {"release": release.name, "project": project.key,
            "created_at": iso_utc(release.created_at), "created_by": release.created_by,
            "parent": parent.name if parent else None, "schema_version": release.schema_version,
            "guideline_version": release.guideline_version,
            "policy_version": release.policy_version,
            "audit_head": {"seq": int(release.audit_seq), "hash": release.audit_hash}}
    items = [{"item_id": r.item_id, "external_id": r.external_id, "included": r.included,
              "final_label": r.final_label, "label_source": r.label_source, "split": r.split,
              "reason": r.reason, "subgroups": r.subgroups, "provenance": r.provenance}
             for r in release_items(session, release)]
    return {"meta": meta, "rules": release.rules, "settings": release.settings,
            "checks": release.checks, "items": items}


@dataclass
class RebuildReport:
    """Whether rendering a stored release again gives its stored files, byte for byte."""

    release: str
    identical: bool
    differing: list[str] = field(default_factory=list)
    missing_blobs: list[str] = field(default_factory=list)


def rebuild(session: Session, blobs: BlobStore, release: Release) -> RebuildReport:
    """Render the release again from the database and compare with the stored files."""
    files, manifest_bytes = render_release(load_content(session, release))
    rendered = {**files, MANIFEST: manifest_bytes}
    stored = {f.name: f for f in release_files(session, release)}
    report = RebuildReport(release.name, True)
    for name in sorted(set(rendered) | set(stored)):
        row = stored.get(name)
        if row is None or name not in rendered or sha256_hex(rendered[name]) != row.sha256:
            report.differing.append(name)
        elif not blobs.exists(row.sha256) or not blobs.verify(row.sha256):
            report.missing_blobs.append(name)
    if sha256_hex(manifest_bytes) != release.manifest_sha256:
        report.differing.append("(manifest hash recorded on the release)")
    report.identical = not report.differing and not report.missing_blobs
    return report


def stored_file_problems(session: Session, blobs: BlobStore, release: Release) -> list[str]:
    """What is wrong with a release's stored files (empty when nothing): every blob present and
    intact, the manifest the one recorded on the release, listing exactly the stored files."""
    import json

    rows = {f.name: f for f in release_files(session, release)}
    problems = []
    for name, row in rows.items():
        if not blobs.exists(row.sha256) or not blobs.verify(row.sha256):
            problems.append(f"{name}: blob missing or altered")
    manifest_row = rows.get(MANIFEST)
    if manifest_row is None or manifest_row.sha256 != release.manifest_sha256:
        problems.append("the manifest is not the one recorded on the release")
    elif not problems:
        listed = json.loads(blobs.get_bytes(manifest_row.sha256))["files"]
        stored = {n: r.sha256 for n, r in rows.items() if n != MANIFEST}
        if {n: e["sha256"] for n, e in listed.items()} != stored:
            problems.append("the manifest does not list the stored files")
    return problems


def _log_test_access(session: Session, release: Release, what: str) -> None:
    n_test = session.scalar(select(func.count()).select_from(ReleaseItem).where(
        ReleaseItem.release_id == release.id, ReleaseItem.split == "test"))
    if n_test:
        audit.record(session, action="release.test_split_access", entity_type="releases",
                     entity_id=release.id, project_id=release.project_id,
                     after={"release": release.name, "test_items": int(n_test), "via": what})


def write_folder(session: Session, blobs: BlobStore, release: Release,
                 folder: str | Path) -> Path:
    """Write the stored release (files, manifest, signatures) into an empty folder; the
    download and any access to the test split are audited."""
    out = Path(folder)
    if out.exists() and any(out.iterdir()):
        raise InputError("the folder exists and is not empty", source=str(out))
    out.mkdir(parents=True, exist_ok=True)
    for row in release_files(session, release):
        (out / row.name).write_bytes(blobs.get_bytes(row.sha256))
    for sig in signatures(session, release):
        path = out / sig.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blobs.get_bytes(sig.file_sha256))
    audit.record(session, action="release.download", entity_type="releases",
                 entity_id=release.id, project_id=release.project_id,
                 after={"release": release.name, "folder": out.name})
    _log_test_access(session, release, "folder")
    return out


def release_file_bytes(session: Session, blobs: BlobStore, release: Release,
                       name: str) -> tuple[bytes, str]:
    """One file of a stored release (a signature file too) and its media type; access to a
    file holding test-split labels is audited."""
    for row in release_files(session, release):
        if row.name == name:
            if name not in ("checks.json", "rules.json", MANIFEST):
                _log_test_access(session, release, name)
            return blobs.get_bytes(row.sha256), row.media_type
    for sig in signatures(session, release):
        if sig.file_name == name:
            return blobs.get_bytes(sig.file_sha256), "application/json"
    raise NotFoundError(f"release {release.name!r} has no file {name!r}")


# -- sign ------------------------------------------------------------------------------------
@dataclass
class SignOutcome:
    """A signing attempt: the signature, or the refusal (already audited)."""

    signature: ReleaseSignature | None = None
    error: TruthsetError | None = None


def adjudicated_share(session: Session, release: Release, username: str) -> float:
    """The share of the release's included labels that ``username`` adjudicated."""
    rows = [r for r in release_items(session, release) if r.included]
    if not rows:
        return 0.0
    mine = sum(1 for r in rows if (r.provenance.get("adjudication") or {}).get("adjudicator")
               == username)
    return mine / len(rows)


def sign_release(
    session: Session,
    blobs: BlobStore,
    release: Release,
    *,
    username: str,
    password: str,
    meaning: str,
    identifiers: Iterable[tuple[str, str]] = (),
) -> SignOutcome:
    """Sign ``release`` as ``username``, who re-enters their password.

    Never raises for a refusal: a wrong password, a second signature by the same person, an
    approver without the role, a breach of separation of duties, or a release whose files no
    longer check out are recorded in the audit log (``release.sign_refused``) and returned in
    :attr:`SignOutcome.error`; the caller commits, then reports the error. Nothing else changes.
    """
    project = session.get(Project, release.project_id)
    assert project is not None

    def refuse(error: TruthsetError) -> SignOutcome:
        audit.record(session, action="release.sign_refused", entity_type="releases",
                     entity_id=release.id, project_id=release.project_id, actor=username,
                     after={"release": release.name, "signer": username,
                            "reason": str(error)[:300]})
        return SignOutcome(error=error)

    text = meaning.strip()
    if not text or len(text) > 100:
        return refuse(InputError("the meaning of a signature is 1–100 characters, e.g. "
                                 + ", ".join(repr(m) for m in MEANINGS), field="meaning"))
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active or not user.password_hash:
        return refuse(PermissionDeniedError(
            f"{username!r} cannot sign: no active user with a password"))
    if not verify_password(user.password_hash, password):
        return refuse(PermissionDeniedError("wrong password: the release was not signed"))
    held = roles_in(session, user.id, project.id) | (
        {Role(user.role)} if user.role in {r.value for r in APPROVER_ROLES} else set())
    if not held & APPROVER_ROLES:
        return refuse(PermissionDeniedError(
            f"{username!r} may not approve releases (needs the admin or manager role)"))
    if session.scalar(select(ReleaseSignature.id).where(
            ReleaseSignature.release_id == release.id,
            ReleaseSignature.user_id == user.id)) is not None:
        return refuse(ConflictError(f"{username!r} has already signed release "
                                    f"{release.name!r}"))
    limit = float(release.settings.get("max_adjudicated_share", DEFAULT_MAX_ADJUDICATED_SHARE))
    share = adjudicated_share(session, release, username)
    if share > limit:
        return refuse(PermissionDeniedError(
            f"separation of duties: {username!r} adjudicated {share:.0%} of this release's "
            f"labels (limit {limit:.0%}); someone else must sign"))
    failed = [k for k, v in release.checks.items() if not v.get("ok")]
    if failed:
        return refuse(ConflictError(f"export checks failed: {', '.join(failed)}"))
    problems = stored_file_problems(session, blobs, release)
    if problems:
        return refuse(ConflictError("the stored release files do not check out: "
                                    + "; ".join(problems[:5])))
    stored = {f.name: blobs.get_bytes(f.sha256) for f in release_files(session, release)}
    findings = checks_mod.scan_for_identifiers(stored, identifiers)
    if findings:
        return refuse(ConflictError("a known identifier is in the release files: "
                                    + ", ".join(f"{f.file} ({f.kind})" for f in findings[:5])))
    signed_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    doc = signature_document(
        release=release.name, project=project.key, manifest_sha256=release.manifest_sha256,
        merkle_root_hex=release.merkle_root, signer=user.username,
        printed_name=user.display_name or user.username, meaning=text, signed_at=signed_at,
        key=signing_key(session, user, password))
    data = canonical_bytes(doc)
    row = ReleaseSignature(
        release_id=release.id, user_id=user.id, username=user.username,
        printed_name=doc["printed_name"], meaning=text, signed_at=signed_at,
        manifest_sha256=release.manifest_sha256, signature_sha256=doc["signature_sha256"],
        file_name=signature_file_name(user.username), file_sha256=blobs.put_bytes(data))
    session.add(row)
    release.status = "signed"
    session.flush()
    audit.record(session, action="release.sign", entity_type="releases", entity_id=release.id,
                 project_id=release.project_id, actor=user.username,
                 after={"release": release.name, "signer": user.username,
                        "printed_name": row.printed_name, "meaning": text,
                        "signed_at": signed_at, "manifest_sha256": release.manifest_sha256,
                        "signature_sha256": row.signature_sha256, "key_id": doc["key_id"]})
    return SignOutcome(signature=row)


def verify_stored_signatures(session: Session, blobs: BlobStore,
                             release: Release) -> list[tuple[str, bool, str]]:
    """Each stored signature: (file, ok, problem) — its file still hashes to the recorded
    digest and is bound to this release's manifest; a key-signed file's Ed25519 signature
    verifies against the stored manifest and its key is one of the signer's stored keys."""
    out = []
    manifest_row = next((f for f in release_files(session, release) if f.name == MANIFEST), None)
    for sig in signatures(session, release):
        try:
            ok = blobs.verify(sig.file_sha256)
        except NotFoundError:
            ok = False
        problem = "" if ok else "signature file missing or altered in the blob store"
        if ok and sig.manifest_sha256 != release.manifest_sha256:
            ok, problem = False, "bound to another manifest"
        if ok and manifest_row is not None:
            doc = json.loads(blobs.get_bytes(sig.file_sha256))
            if doc.get("format") == SIGNATURE_FORMAT:
                manifest = json.loads(blobs.get_bytes(manifest_row.sha256))
                check = check_signature(doc, manifest=manifest,
                                        manifest_sha256=release.manifest_sha256,
                                        file=sig.file_name)
                ok, problem = check.ok, check.problem
                user = session.get(User, sig.user_id)
                if ok and user is not None and doc.get("key_id") not in {
                        k.key_id for k in user_keys(session, user)}:
                    ok, problem = False, "wrong key: not a key the workspace holds for the signer"
        out.append((sig.file_name, ok, problem))
    return out
