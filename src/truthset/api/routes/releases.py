"""Releases of a project: list, read, create, diff, sign, verify and download files."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from truthset import audit
from truthset.api.deps import CtxDep
from truthset.api.errors import error_body
from truthset.api.routes.common import KEY_PATTERN, PREFIX, load_project
from truthset.auth.policy import Action
from truthset.domain.errors import ConflictError, InputError, TruthsetError
from truthset.release import diff as release_diff
from truthset.release import service
from truthset.release.splits import DEFAULT_FRACTIONS
from truthset.store.models import Release

router = APIRouter(prefix=PREFIX + "/projects/{key}/releases", tags=["releases"])

Key = Annotated[str, Path(pattern=KEY_PATTERN, description="Project key.")]
Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
                           description="Release name.")]


class ReleaseIn(BaseModel):
    """What to freeze into a new release."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    exclude: dict[str, str] = Field(default_factory=dict, max_length=100_000,
                                    description="External item id -> reason to leave it out.")
    exclude_unresolved: str | None = Field(
        default=None, max_length=500,
        description="Leave every unresolved item out with this reason (otherwise they refuse "
                    "the release).")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    splits: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_FRACTIONS),
                                     max_length=10)
    parent: str | None = Field(default=None, max_length=100)
    limitations: list[str] = Field(default_factory=list, max_length=50)
    max_adjudicated_share: float = Field(default=service.DEFAULT_MAX_ADJUDICATED_SHARE, ge=0,
                                         le=1)


class SignIn(BaseModel):
    """A signature: the signer re-enters their password and states what it means."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1000)
    meaning: str = Field(min_length=1, max_length=100,
                         description="e.g. 'reviewed', 'approved for training'.")


class SignatureOut(BaseModel):
    """One signature of a release."""

    username: str
    printed_name: str
    meaning: str
    signed_at: str
    manifest_sha256: str
    signature_sha256: str
    file: str


class FileOut(BaseModel):
    """One file of a release."""

    name: str
    sha256: str
    size: int
    media_type: str


class ReleaseOut(BaseModel):
    """A release with its counts, manifest hash and signatures."""

    name: str
    project: str
    status: str
    created_at: datetime
    created_by: str
    parent: str | None
    schema_version: int
    guideline_version: int | None
    manifest_sha256: str
    merkle_root: str
    audit_seq: int
    included: int
    excluded: int
    signatures: list[SignatureOut]


class ReleaseDetailOut(ReleaseOut):
    """A release with its files and export checks."""

    files: list[FileOut]
    checks: dict[str, Any]
    settings: dict[str, Any]


class VerifyOut(BaseModel):
    """Whether the stored release still checks out."""

    name: str
    ok: bool
    rebuilt_identical: bool
    differing: list[str]
    problems: list[str]
    signatures: list[dict[str, Any]]


def _out(ctx: CtxDep, key: str, release: Release) -> dict[str, Any]:
    items = service.release_items(ctx.session, release)
    parent = ctx.session.get(Release, release.parent_id) if release.parent_id else None
    n_in = sum(1 for i in items if i.included)
    return {
        "name": release.name, "project": key, "status": release.status,
        "created_at": release.created_at, "created_by": release.created_by,
        "parent": parent.name if parent else None, "schema_version": release.schema_version,
        "guideline_version": release.guideline_version,
        "manifest_sha256": release.manifest_sha256, "merkle_root": release.merkle_root,
        "audit_seq": int(release.audit_seq), "included": n_in, "excluded": len(items) - n_in,
        "signatures": [SignatureOut(username=s.username, printed_name=s.printed_name,
                                    meaning=s.meaning, signed_at=s.signed_at,
                                    manifest_sha256=s.manifest_sha256,
                                    signature_sha256=s.signature_sha256, file=s.file_name)
                       for s in service.signatures(ctx.session, release)],
    }


def _detail(ctx: CtxDep, key: str, release: Release) -> ReleaseDetailOut:
    files = [FileOut(name=f.name, sha256=f.sha256, size=f.size, media_type=f.media_type)
             for f in service.release_files(ctx.session, release)]
    return ReleaseDetailOut(**_out(ctx, key, release), files=files, checks=release.checks,
                            settings={k: v for k, v in release.settings.items()
                                      if k != "excluded_by_hand"})


@router.get("", response_model=list[ReleaseOut])
def list_releases(key: Key, ctx: CtxDep) -> list[ReleaseOut]:
    """The project's releases, oldest first."""
    project, _ = load_project(ctx, key, Action.RELEASE_READ)
    return [ReleaseOut(**_out(ctx, key, r)) for r in service.list_releases(ctx.session, project)]


@router.post("", response_model=ReleaseDetailOut, status_code=201)
def create_release(key: Key, body: ReleaseIn, ctx: CtxDep) -> ReleaseDetailOut:
    """Freeze the project's final labels into a new, immutable release (managers). Unresolved
    items refuse it unless excluded; a known identifier in any file refuses it."""
    project, _ = load_project(ctx, key, Action.RELEASE_CREATE)
    release = service.create_release(
        ctx.session, project, ctx.workspace.blobs, name=body.name, actor=ctx.principal.actor,
        exclude=body.exclude, exclude_unresolved=body.exclude_unresolved, seed=body.seed,
        fractions=body.splits, parent=body.parent, limitations=body.limitations,
        max_adjudicated_share=body.max_adjudicated_share,
        identifiers=service.vault_identifiers(ctx.workspace.vault, project.key))
    return _detail(ctx, key, release)


@router.get("/{name}", response_model=ReleaseDetailOut)
def read_release(key: Key, name: Name, ctx: CtxDep) -> ReleaseDetailOut:
    """One release with its files, checks and signatures."""
    project, _ = load_project(ctx, key, Action.RELEASE_READ)
    return _detail(ctx, key, service.get_release(ctx.session, project, name))


@router.get("/{name}/diff", response_model=None,
            responses={200: {"content": {"application/json": {}, "text/plain": {}}}})
def diff_release(
    key: Key, name: Name, ctx: CtxDep,
    against: Annotated[str | None, Query(max_length=100, description="The earlier release "
                                         "(default: this release's parent).")] = None,
    format: Annotated[str, Query(pattern="^(json|text)$")] = "json",
) -> Any:
    """What changed from ``against`` to this release: items, labels with reason and audit
    event, guideline and schema versions."""
    project, _ = load_project(ctx, key, Action.RELEASE_READ)
    new = service.get_release(ctx.session, project, name)
    if against is None:
        if new.parent_id is None:
            raise InputError("this release has no parent; name one with ?against=",
                             field="against")
        old = ctx.session.get(Release, new.parent_id)
        assert old is not None
    else:
        old = service.get_release(ctx.session, project, against)
    result = release_diff.diff_releases(ctx.session, old, new)
    if format == "text":
        return PlainTextResponse(release_diff.diff_text(result))
    return result


_SIGN_ERRORS = {403: "forbidden", 409: "conflict", 422: "invalid_input"}


@router.post("/{name}/signatures", response_model=SignatureOut, status_code=201,
             responses={403: {"description": "wrong password, no approver role, or "
                                              "separation of duties"},
                        409: {"description": "already signed, or the release no longer "
                                             "checks out"}})
def sign_release(key: Key, name: Name, body: SignIn, ctx: CtxDep) -> Any:
    """Sign the release as yourself, re-entering your password. A refusal is audited and
    nothing else changes."""
    project, _ = load_project(ctx, key, Action.RELEASE_SIGN)
    release = service.get_release(ctx.session, project, name)
    outcome = service.sign_release(
        ctx.session, ctx.workspace.blobs, release, username=ctx.principal.username,
        password=body.password, meaning=body.meaning,
        identifiers=service.vault_identifiers(ctx.workspace.vault, project.key))
    if outcome.error is not None:
        # Returned, not raised: the refusal's audit event commits with the request.
        status = _status_of(outcome.error)
        field = outcome.error.field if isinstance(outcome.error, InputError) else (
            "password" if "password" in str(outcome.error) else None)
        return JSONResponse(error_body(_SIGN_ERRORS[status], str(outcome.error), field),
                            status_code=status)
    sig = outcome.signature
    assert sig is not None
    return SignatureOut(username=sig.username, printed_name=sig.printed_name,
                        meaning=sig.meaning, signed_at=sig.signed_at,
                        manifest_sha256=sig.manifest_sha256,
                        signature_sha256=sig.signature_sha256, file=sig.file_name)


def _status_of(error: TruthsetError) -> int:
    if isinstance(error, InputError):
        return 422
    if isinstance(error, ConflictError):
        return 409
    return 403


@router.get("/{name}/verify", response_model=VerifyOut)
def verify_release(key: Key, name: Name, ctx: CtxDep) -> VerifyOut:
    """Check the stored release: its files rebuilt from the database are byte-identical, every
    stored blob is intact, and every signature is bound to its manifest."""
    project, _ = load_project(ctx, key, Action.RELEASE_READ)
    release = service.get_release(ctx.session, project, name)
    rebuilt = service.rebuild(ctx.session, ctx.workspace.blobs, release)
    problems = service.stored_file_problems(ctx.session, ctx.workspace.blobs, release)
    sigs = [{"file": f, "ok": ok, "problem": p}
            for f, ok, p in service.verify_stored_signatures(ctx.session, ctx.workspace.blobs,
                                                             release)]
    ok = rebuilt.identical and not problems and all(s["ok"] for s in sigs)
    return VerifyOut(name=name, ok=ok, rebuilt_identical=rebuilt.identical,
                     differing=rebuilt.differing + rebuilt.missing_blobs, problems=problems,
                     signatures=sigs)


def _file_reply(ctx: CtxDep, project_id: int, release: Release, path: str) -> Response:
    data, media_type = service.release_file_bytes(ctx.session, ctx.workspace.blobs, release,
                                                  path)
    audit.record(ctx.session, action="release.download", entity_type="releases",
                 entity_id=release.id, project_id=project_id,
                 after={"release": release.name, "file": path})
    return Response(data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="'
                                                    f'{path.rsplit("/", 1)[-1]}"'})


FileName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")]


@router.get("/{name}/files/{path}", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def download_file(key: Key, name: Name, path: FileName, ctx: CtxDep) -> Response:
    """One file of the release (``manifest.json``, ``labels.csv``, ``datasheet.pdf`` …).
    Downloads are audited, and so is access to test-split labels."""
    project, _ = load_project(ctx, key, Action.RELEASE_DOWNLOAD)
    return _file_reply(ctx, project.id, service.get_release(ctx.session, project, name), path)


@router.get("/{name}/signatures/{username}", response_class=Response,
            responses={200: {"content": {"application/json": {}}}})
def download_signature(key: Key, name: Name, username: FileName, ctx: CtxDep) -> Response:
    """The signature file ``signatures/<username>.json`` of the release."""
    project, _ = load_project(ctx, key, Action.RELEASE_DOWNLOAD)
    release = service.get_release(ctx.session, project, name)
    return _file_reply(ctx, project.id, release, f"signatures/{username}.json")
