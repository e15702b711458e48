"""The relational model: every table Truthset stores, as SQLAlchemy 2 typed mappings.

Conventions
-----------
- Times are timezone-aware UTC (``created_at``), written by :func:`utcnow`.
- Annotations are immutable: a correction is a new row whose ``parent_id`` names the revision it
  replaces. Nothing in Truthset updates an annotation's payload in place.
- Audit events live in ``audit_events`` and are append-only (database triggers refuse UPDATE and
  DELETE; see the initial migration). Their time and payloads are stored as canonical text so
  that the hash chain can be recomputed bit for bit on any database.
- Columns whose values must never enter the audit log (password hashes, secrets) carry
  ``info={"audit": "redact"}``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Select,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every Truthset table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    """A labelling project: its label schema, guideline and policy live in versioned rows."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LabelSchemaVersion(Base):
    """One version of a project's label schema (the YAML text and its parsed form)."""

    __tablename__ = "label_schemas"
    __table_args__ = (UniqueConstraint("project_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    source_text: Mapped[str] = mapped_column(Text)
    definition: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GuidelineVersion(Base):
    """One version of a project's guideline (Markdown) with what changed since the last."""

    __tablename__ = "guidelines"
    __table_args__ = (UniqueConstraint("project_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    change_note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    """A person (or service account) who labels, reviews, adjudicates or administers."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(32))
    tier: Mapped[int] = mapped_column(Integer, default=1)
    specialty: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str | None] = mapped_column(
        String(255), default=None, info={"audit": "redact"}
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Item(Base):
    """One unit to label: an image, a series, a volume or a report, with what audits need."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("project_id", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    media: Mapped[list[Any]] = mapped_column(default=list)
    modality: Mapped[str | None] = mapped_column(String(16), default=None)
    body_part: Mapped[str | None] = mapped_column(String(64), default=None)
    site: Mapped[str | None] = mapped_column(String(100), default=None)
    manufacturer: Mapped[str | None] = mapped_column(String(100), default=None)
    patient_pseudonym: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    age_band: Mapped[str | None] = mapped_column(String(16), default=None)
    sex: Mapped[str | None] = mapped_column(String(8), default=None)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Task(Base):
    """One item waiting for one stage (annotate, review, adjudicate)."""

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_queue", "project_id", "stage", "status", "priority"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open")
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=None
    )
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Annotation(Base):
    """One reader's label on one item: an immutable revision."""

    __tablename__ = "annotations"
    __table_args__ = (Index("ix_annotations_item", "project_id", "item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), default=None)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    source: Mapped[str] = mapped_column(String(16), default="human")
    model_name: Mapped[str | None] = mapped_column(String(100), default=None)
    model_version: Mapped[str | None] = mapped_column(String(50), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column()
    schema_version: Mapped[int] = mapped_column(Integer)
    guideline_version: Mapped[int | None] = mapped_column(Integer, default=None)
    time_spent_s: Mapped[float | None] = mapped_column(Float, default=None)
    #: Indexed: "is this revision superseded?" (a child naming it) is asked on every read.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"), default=None,
                                                  index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    author: Mapped[User | None] = relationship(lazy="joined")


class Review(Base):
    """A reviewer's decision on an annotation: accept, correct (with a new revision) or reject."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    corrected_annotation_id: Mapped[int | None] = mapped_column(
        ForeignKey("annotations.id"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Consensus(Base):
    """The aggregated label of an item: method, inputs, posterior and agreement.

    A recomputation adds a new row; the latest row of an item is its current consensus.
    """

    __tablename__ = "consensus"
    __table_args__ = (Index("ix_consensus_item", "project_id", "item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    method: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    label: Mapped[dict[str, Any]] = mapped_column()
    posterior: Mapped[dict[str, Any]] = mapped_column(default=dict)
    confidence: Mapped[float | None] = mapped_column(Float, default=None)
    agreement: Mapped[float | None] = mapped_column(Float, default=None)
    input_annotation_ids: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="final")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @classmethod
    def latest_ids(cls, project_id: int) -> Select[int]:
        """The id of each item's current (latest) consensus row in the project, as a query to
        filter on: ``Consensus.id.in_(Consensus.latest_ids(project.id))``. Callers may narrow
        it with ``.where(...)``."""
        return (select(func.max(cls.id)).where(cls.project_id == project_id)
                .group_by(cls.item_id))


class Blob(Base):
    """Index of the content-addressed blob store: one row per distinct content."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    """One append-only, hash-chained audit event. See :mod:`truthset.audit`."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(100), default=None)
    project_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    before: Mapped[str] = mapped_column(Text)
    after: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """A single row holding the latest audit event's sequence number and hash.

    Appending locks this row first, which serialises concurrent writers on every database.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


#: Tables whose writes are not audited automatically (they are the audit itself).
UNAUDITED_TABLES = frozenset({"audit_events", "audit_head"})


# --- auth/api ---


class Membership(Base):
    """A user's role in one project (a user may hold several roles in a project)."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("project_id", "user_id", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """A bearer token for scripts; only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, info={"audit": "redact"})
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class WebSession(Base):
    """A server-side browser session (cookie holds the secret; the row holds its SHA-256)."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True, info={"audit": "redact"})
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_hash: Mapped[str] = mapped_column(String(64), info={"audit": "redact"})
    method: Mapped[str] = mapped_column(String(16), default="password")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class LoginThrottle(Base):
    """Failed sign-in counter and lock for one key (``user:<name>`` or ``ip:<address>``)."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class OidcState(Base):
    """A pending OpenID Connect sign-in: state, nonce and PKCE verifier, used once."""

    __tablename__ = "oidc_states"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(100), info={"audit": "redact"})
    code_verifier: Mapped[str] = mapped_column(String(128), info={"audit": "redact"})
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- workflow ---


class PolicyVersion(Base):
    """One version of a project's workflow policy (the YAML text and its parsed form)."""

    __tablename__ = "workflow_policies"
    __table_args__ = (UniqueConstraint("project_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    source_text: Mapped[str] = mapped_column(Text)
    definition: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GoldItem(Base):
    """An item whose reference answer is known: ``gold`` (mixed into queues) or
    ``calibration`` (the batch each new reader must pass)."""

    __tablename__ = "gold_items"
    __table_args__ = (UniqueConstraint("project_id", "item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    label: Mapped[dict[str, Any]] = mapped_column()
    purpose: Mapped[str] = mapped_column(String(16), default="gold")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReaderStatus(Base):
    """A reader's standing in a project: calibration result (``class_name`` empty) or a
    per-class suspension, with the message the reader is shown."""

    __tablename__ = "reader_status"
    __table_args__ = (UniqueConstraint("project_id", "user_id", "class_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    class_name: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Escalation(Base):
    """An item sent up the tiers, with its deadline and how it ended."""

    __tablename__ = "escalations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    from_tier: Mapped[int] = mapped_column(Integer)
    to_tier: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


# --- imaging ---


class ImagingInstance(Base):
    """One stored (de-identified) DICOM instance of an item: the index DICOMweb searches.

    ``qido`` holds the de-identified study/series/instance attributes QIDO-RS answers with,
    as DICOM JSON; the instance itself is the blob ``sha256``.
    """

    __tablename__ = "imaging_instances"
    __table_args__ = (
        UniqueConstraint("project_id", "sop_instance_uid"),
        Index("ix_imaging_instances_study", "project_id", "study_instance_uid"),
        Index("ix_imaging_instances_series", "project_id", "series_instance_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str | None] = mapped_column(String(16), default=None)
    instance_number: Mapped[int | None] = mapped_column(Integer, default=None)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    columns: Mapped[int] = mapped_column(Integer, default=0)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    sha256: Mapped[str] = mapped_column(String(64))
    qido: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    item: Mapped[Item] = relationship()


# --- release ---


class Release(Base):
    """A frozen dataset version of a project: its items, files, manifest and signatures.

    Once created, only ``status`` changes (``created`` -> ``signed``); everything else is fixed
    (a database trigger refuses other updates, and deletes).
    """

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="created")
    created_by: Mapped[str] = mapped_column(String(100))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"), default=None)
    schema_version: Mapped[int] = mapped_column(Integer)
    guideline_version: Mapped[int | None] = mapped_column(Integer, default=None)
    policy_version: Mapped[int | None] = mapped_column(Integer, default=None)
    audit_seq: Mapped[int] = mapped_column(BigInteger)
    audit_hash: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checks: Mapped[dict[str, Any]] = mapped_column(default=dict)
    manifest_sha256: Mapped[str] = mapped_column(String(64), default="")
    merkle_root: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReleaseItem(Base):
    """One item of a release: included with its final label and provenance, or excluded with
    the reason. Immutable."""

    __tablename__ = "release_items"
    __table_args__ = (UniqueConstraint("release_id", "item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    external_id: Mapped[str] = mapped_column(String(255))
    included: Mapped[bool] = mapped_column(Boolean)
    final_label: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    label_source: Mapped[str] = mapped_column(String(32), default="")
    split: Mapped[str | None] = mapped_column(String(16), default=None)
    reason: Mapped[str] = mapped_column(Text, default="")
    subgroups: Mapped[dict[str, Any]] = mapped_column(default=dict)
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ReleaseFile(Base):
    """One file of a release: its name, SHA-256 (the blob holding its bytes) and size."""

    __tablename__ = "release_files"
    __table_args__ = (UniqueConstraint("release_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100))


class ReleaseSignature(Base):
    """An approver's electronic signature of a release: printed name, UTC time and meaning,
    bound to the manifest hash. Immutable."""

    __tablename__ = "release_signatures"
    __table_args__ = (UniqueConstraint("release_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    username: Mapped[str] = mapped_column(String(100))
    printed_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str] = mapped_column(String(100))
    signed_at: Mapped[str] = mapped_column(String(40))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    signature_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    file_name: Mapped[str] = mapped_column(String(255))
    file_sha256: Mapped[str] = mapped_column(String(64))


class SigningKey(Base):
    """An approver's Ed25519 key pair for release signatures: the public key in clear (PEM),
    the private key as PKCS#8 PEM encrypted with a key derived from the approver's password
    (never logged; redacted in the audit log). The newest key that the password opens signs."""

    __tablename__ = "signing_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(64), unique=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    private_key_pem: Mapped[str] = mapped_column(Text, info={"audit": "redact"})
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- prelabel/jobs ---


class PrelabelModel(Base):
    """A registered drafting model of a project: adapter kind, configuration and the classes
    it may draft (a draft of any other class is refused)."""

    __tablename__ = "prelabel_models"
    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(50))
    kind: Mapped[str] = mapped_column(String(16))
    output: Mapped[str] = mapped_column(String(16))
    classes: Mapped[list[Any]] = mapped_column(default=list)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timeout_s: Mapped[float] = mapped_column(Float, default=30.0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PrelabelDraft(Base):
    """One attempt of a model to draft one item: ``drafted`` (with the annotation made),
    ``refused`` (bad model output, with the reason) or ``skipped`` (class paused)."""

    __tablename__ = "prelabel_drafts"
    __table_args__ = (Index("ix_prelabel_drafts_item", "project_id", "item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    model_id: Mapped[int] = mapped_column(ForeignKey("prelabel_models.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    annotation_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"), default=None)
    confidence: Mapped[float | None] = mapped_column(Float, default=None)
    probabilities: Mapped[dict[str, Any]] = mapped_column(default=dict)
    device: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DraftOutcome(Base):
    """What a reader did with one class of a model draft: ``accepted`` unchanged, ``edited``
    (with Dice/IoU between draft and final) or ``rejected``."""

    __tablename__ = "draft_outcomes"
    __table_args__ = (
        UniqueConstraint("draft_annotation_id", "final_annotation_id", "class_name"),
        # With id: a class's latest outcomes (the acceptance window) by a backward index scan.
        Index("ix_draft_outcomes_class", "project_id", "class_name", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    draft_annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"))
    final_annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"))
    class_name: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(16))
    dice: Mapped[float | None] = mapped_column(Float, default=None)
    iou: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ClassAutomation(Base):
    """Whether drafting is on for one class of a project; paused automatically when
    acceptance falls, resumed only by a manager."""

    __tablename__ = "class_automation"
    __table_args__ = (UniqueConstraint("project_id", "class_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    class_name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="active")
    reason: Mapped[str] = mapped_column(Text, default="")
    acceptance: Mapped[float | None] = mapped_column(Float, default=None)
    window: Mapped[int] = mapped_column(Integer, default=0)
    decided_by: Mapped[str] = mapped_column(String(100), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Schedule(Base):
    """A periodic task of the workspace (raising overdue escalations, ...): its period and its
    last run. A run claims its period slot on this row, so several processes that all keep
    time run it once per slot."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    period_s: Mapped[float] = mapped_column(Float, default=0.0)
    last_slot_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          default=None)
    last_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                             default=None)
    last_finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                              default=None)
    last_status: Mapped[str] = mapped_column(String(16), default="")
    last_result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_error: Mapped[str] = mapped_column(Text, default="")
    runner: Mapped[str] = mapped_column(String(32), default="")
    runs: Mapped[int] = mapped_column(Integer, default=0)


class Job(Base):
    """A background job (pre-labelling, consensus, release, export): status, progress,
    cancellation flag and outcome. Runs in-process or on a procrastinate worker."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status", "status", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), default=None,
                                                   index=True)
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    backend: Mapped[str] = mapped_column(String(16), default="inprocess")
    external_id: Mapped[str | None] = mapped_column(String(64), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(100), default=None, unique=True)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int | None] = mapped_column(Integer, default=None)
    message: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str] = mapped_column(Text, default="")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class LabelIssue(Base):
    """An item whose final label is likely wrong (label-error detection), and whether it
    was sent back to review."""

    __tablename__ = "label_issues"
    __table_args__ = (Index("ix_label_issues_item", "project_id", "item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    given_label: Mapped[str] = mapped_column(String(100))
    suggested_label: Mapped[str | None] = mapped_column(String(100), default=None)
    score: Mapped[float] = mapped_column(Float)
    self_confidence: Mapped[float] = mapped_column(Float)
    agreement: Mapped[float | None] = mapped_column(Float, default=None)
    method: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="flagged")
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- workflow queue ---


class TaskOutcome(Base):
    """What became of one task when its reader finished it: the outcome (``read``, ``gold``,
    ``calibration``, ``accept``, ``correct``, ``reject``, ``escalate``, ``adjudicate``), the
    policy version it ran under and the reader time it cost. One row per finished task; the
    cost and throughput reports read these."""

    __tablename__ = "task_outcomes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), unique=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    stage: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    policy_version: Mapped[int | None] = mapped_column(Integer, default=None)
    time_spent_s: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


#: The queue looks up "has this reader a task on this item" on every request.
Index("ix_tasks_assignee", Task.assignee_id, Task.item_id)
