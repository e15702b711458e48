"""Request and response bodies (they make the OpenAPI document)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

T = TypeVar("T")


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


#: A time, always timezone-aware UTC in replies (SQLite hands back naive values).
Utc = Annotated[datetime, BeforeValidator(_utc)]

Name = Field(min_length=1, max_length=100)


class ErrorOut(BaseModel):
    """Every error reply."""

    error: str
    field: str | None = None
    detail: str


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``cursor`` for the next (``null``: last)."""

    items: list[T]
    next_cursor: str | None = None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(_In):
    """Sign-in with a local password."""

    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    """A user as others see them."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    display_name: str
    role: str
    tier: int
    specialty: str
    active: bool


class UserIn(_In):
    """A new user."""

    username: str = Field(min_length=1, max_length=100)
    role: str = Field(min_length=1, max_length=32)
    tier: int = Field(default=1, ge=1, le=3)
    specialty: str = Field(default="", max_length=100)
    display_name: str = Field(default="", max_length=200)
    password: str | None = Field(default=None, min_length=12, max_length=1024)


class UserPatch(_In):
    """Changes to a user (only the fields given change)."""

    display_name: str | None = Field(default=None, max_length=200)
    tier: int | None = Field(default=None, ge=1, le=3)
    specialty: str | None = Field(default=None, max_length=100)
    active: bool | None = None


class MembershipOut(BaseModel):
    """One role of one user in one project."""

    project: str
    username: str
    role: str
    created_at: Utc


class MeOut(BaseModel):
    """The caller."""

    user: UserOut
    via: str
    memberships: list[MembershipOut]


class SessionOut(BaseModel):
    """A new browser session: the cookie is set; send ``csrf_token`` on unsafe requests."""

    user: UserOut
    csrf_token: str
    expires_at: Utc


class CsrfOut(BaseModel):
    """A fresh CSRF token."""

    csrf_token: str


class TokenIn(_In):
    """A new API token."""

    name: str = Field(default="", max_length=100)
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)


class TokenOut(BaseModel):
    """An API token (without its secret)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    created_at: Utc
    expires_at: Utc | None
    revoked_at: Utc | None


class TokenCreated(TokenOut):
    """A token just made: ``token`` is shown this once."""

    token: str


class ProjectIn(_In):
    """A new project with version 1 of its schema (YAML) and, optionally, its guideline."""

    key: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=10000)
    schema_yaml: str = Field(min_length=1, max_length=200000)
    guideline: str | None = Field(default=None, max_length=500000)


class ProjectPatch(_In):
    """Changes to a project."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10000)


class ProjectOut(BaseModel):
    """A project."""

    id: int
    key: str
    name: str
    description: str
    schema_version: int
    guideline_version: int | None
    created_at: Utc


class SchemaIn(_In):
    """A new schema version (YAML)."""

    schema_yaml: str = Field(min_length=1, max_length=200000)


class SchemaOut(BaseModel):
    """One schema version."""

    version: int
    definition: dict[str, Any]
    source_text: str
    created_at: Utc


class GuidelineIn(_In):
    """A new guideline version; ``change_note`` says what changed."""

    body: str = Field(max_length=500000)
    change_note: str = Field(min_length=1, max_length=10000)


class GuidelineOut(BaseModel):
    """One guideline version."""

    version: int
    body: str
    change_note: str
    created_at: Utc


class MediaOut(BaseModel):
    """One media file of an item (download from ``.../media/{index}``)."""

    index: int
    sha256: str
    media_type: str
    name: str | None = None
    width: int | None = None
    height: int | None = None
    sop_instance_uid: str | None = Field(
        None, description="DICOM media: the (de-identified) SOP Instance UID served by DICOMweb.")
    frames: int | None = Field(None, description="DICOM media: the number of frames.")


class ItemOut(BaseModel):
    """An item (no patient pseudonym)."""

    id: int
    external_id: str
    kind: str
    status: str
    modality: str | None
    body_part: str | None
    site: str | None
    manufacturer: str | None
    age_band: str | None
    sex: str | None
    media: list[MediaOut]
    study_instance_uid: str | None = Field(
        None, description="DICOM items: the (de-identified) study UID, for DICOMweb.")
    series_instance_uid: str | None = Field(
        None, description="DICOM items: the (de-identified) series UID, for DICOMweb.")
    created_at: Utc


class ImportOut(BaseModel):
    """What an upload did."""

    ingested: list[str]
    skipped: list[str]
    items: list[ItemOut]


class AnnotationIn(_In):
    """A label on an item, checked against the project's current schema."""

    payload: dict[str, Any]
    time_spent_s: float | None = Field(default=None, ge=0, le=86400)
    parent_id: int | None = Field(default=None, ge=1)


class AnnotationOut(BaseModel):
    """One annotation revision."""

    id: int
    item_id: int
    author: str | None
    source: str
    payload: dict[str, Any]
    schema_version: int
    guideline_version: int | None
    parent_id: int | None
    time_spent_s: float | None
    created_at: Utc


class ConsensusIn(_In):
    """Compute a consensus for every item with enough reads."""

    method: str = Field(default="mv", min_length=1, max_length=32)
    min_reads: int = Field(default=1, ge=1, le=1000)
    params: dict[str, Any] = Field(default_factory=dict)


class ConsensusRunOut(BaseModel):
    """What a consensus computation produced."""

    method: str
    n_items: int


class ConsensusOut(BaseModel):
    """The current consensus of one item. ``label`` is ``{"label": class}`` (single, ordinal),
    ``{"labels": [...]}`` (multi-label) or ``{"objects": [...], "minority": [...]}`` (box,
    polygon, mask: fused objects with ``support`` and ``readers``); ``parameters`` records
    how it was computed (policy, IoU threshold, reader pairs' agreement...)."""

    id: int
    item_id: int
    method: str
    label: dict[str, Any]
    parameters: dict[str, Any] = Field(default_factory=dict)
    posterior: dict[str, Any]
    confidence: float | None
    agreement: float | None
    status: str
    input_annotation_ids: list[Any]
    created_at: Utc


class AuditEventOut(BaseModel):
    """One audit event (``before``/``after`` are the stored canonical JSON text)."""

    seq: int
    at: str
    actor: str
    action: str
    entity_type: str
    entity_id: str | None
    project_id: int | None
    before: str
    after: str
    prev_hash: str
    hash: str


class ChainHeadOut(BaseModel):
    """The latest audit event."""

    seq: int
    hash: str
    at: str | None = None


class VerifyOut(BaseModel):
    """Outcome of walking the audit chain."""

    ok: bool
    n_events: int
    head: ChainHeadOut | None
    broken_seq: int | None
    reason: str | None
