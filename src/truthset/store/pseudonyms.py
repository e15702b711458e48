"""The pseudonym vault: original identifiers ↔ pseudonyms, kept apart from the data.

De-identification replaces patient identities and UIDs with stable pseudonyms. The mapping back
is the most sensitive data Truthset holds, so it lives in its own database (by default
``pseudonyms.db`` beside the workspace database, file mode 0600; in production its own
PostgreSQL database or schema with its own credentials), never in the main store, never in an
export. Only an admin may read it (the services check the role and audit every read).

Each project has a random secret here; pseudonyms are keyed hashes of the original values under
that secret, so the same patient or UID gets the same pseudonym across imports, and nobody
without the vault can recompute or reverse them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import DateTime, Engine, LargeBinary, String, UniqueConstraint, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from truthset.store.db import make_engine


class VaultBase(DeclarativeBase):
    """Declarative base of the vault's own tables (not part of the main schema)."""


class ProjectSecret(VaultBase):
    """The per-project key that pseudonyms are derived with."""

    __tablename__ = "project_secrets"

    project_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PseudonymEntry(VaultBase):
    """One original value and the pseudonym that replaced it."""

    __tablename__ = "pseudonyms"
    __table_args__ = (UniqueConstraint("project_key", "kind", "original"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_key: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    original: Mapped[str] = mapped_column(String(512))
    pseudonym: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PseudonymVault:
    """Derive, remember and (for admins, through a service) look up pseudonyms.

    Parameters
    ----------
    url:
        SQLAlchemy URL of the vault database. For an SQLite file the file is created with
        mode 0600.
    """

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch(mode=0o600)
            os.chmod(path, 0o600)
        self.engine: Engine = make_engine(url)
        VaultBase.metadata.create_all(self.engine)

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    def _secret(self, session: Session, project_key: str) -> bytes:
        row = session.get(ProjectSecret, project_key)
        if row is None:
            row = ProjectSecret(
                project_key=project_key,
                secret=secrets.token_bytes(32),
                created_at=datetime.now(UTC),
            )
            session.add(row)
            session.flush()
        return row.secret

    def project_secret(self, project_key: str) -> bytes:
        """The project's random key (created on first use). It never leaves the vault except
        into the de-identification of that project's data."""
        with Session(self.engine) as session, session.begin():
            return self._secret(session, project_key)

    def remember(self, project_key: str, kind: str, pairs: dict[str, str]) -> None:
        """Record ``original -> pseudonym`` pairs made elsewhere (e.g. remapped UIDs)."""
        if not pairs:
            return
        with Session(self.engine) as session, session.begin():
            known = set(
                session.scalars(
                    select(PseudonymEntry.original).where(
                        PseudonymEntry.project_key == project_key,
                        PseudonymEntry.kind == kind,
                        PseudonymEntry.original.in_(list(pairs)),
                    )
                )
            )
            now = datetime.now(UTC)
            session.add_all(
                PseudonymEntry(project_key=project_key, kind=kind, original=original,
                               pseudonym=pseudonym, created_at=now)
                for original, pseudonym in pairs.items()
                if original not in known
            )

    def derive(self, project_key: str, kind: str, original: str) -> str:
        """The stable pseudonym of ``original`` (remembered for re-identification by admins).

        ``kind`` selects the form: ``"uid"`` gives a DICOM UID under the ``2.25`` root
        (a UUID-derived integer, as PS3.5 B.2 allows); anything else gives ``<PREFIX>-`` and
        16 base32 characters (``patient`` → ``P-…``).
        """
        with Session(self.engine) as session, session.begin():
            found = session.scalar(
                select(PseudonymEntry.pseudonym).where(
                    PseudonymEntry.project_key == project_key,
                    PseudonymEntry.kind == kind,
                    PseudonymEntry.original == original,
                )
            )
            if found is not None:
                return found
            digest = hmac.new(
                self._secret(session, project_key), f"{kind}\x00{original}".encode(), hashlib.sha256
            ).digest()
            if kind == "uid":
                pseudonym = f"2.25.{int.from_bytes(digest[:16], 'big')}"
            else:
                prefix = kind[:1].upper() or "X"
                pseudonym = f"{prefix}-{base64.b32encode(digest[:10]).decode().rstrip('=')}"
            session.add(
                PseudonymEntry(
                    project_key=project_key,
                    kind=kind,
                    original=original,
                    pseudonym=pseudonym,
                    created_at=datetime.now(UTC),
                )
            )
            return pseudonym

    def reidentify(self, project_key: str, pseudonym: str) -> list[tuple[str, str]]:
        """``(kind, original)`` pairs behind a pseudonym. Callers must check the admin role
        and audit the read."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(PseudonymEntry.kind, PseudonymEntry.original).where(
                    PseudonymEntry.project_key == project_key,
                    PseudonymEntry.pseudonym == pseudonym,
                )
            ).all()
        return [(kind, original) for kind, original in rows]

    def originals(self, project_key: str) -> list[tuple[str, str]]:
        """Every ``(kind, original)`` the vault holds for a project, for scanning exports for
        identifiers. Callers must never show or log the values."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(PseudonymEntry.kind, PseudonymEntry.original).where(
                    PseudonymEntry.project_key == project_key
                )
            ).all()
        return [(kind, original) for kind, original in rows]
