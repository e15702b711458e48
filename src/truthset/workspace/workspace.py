"""A workspace: one folder holding the configuration, the embedded database and the blobs.

Found from ``--workspace``, then ``TRUTHSET_WORKSPACE``, then the current directory.
``TRUTHSET_DATABASE_URL`` selects another database (PostgreSQL in production) and
``TRUTHSET_BLOB_URL`` another blob store (any fsspec URL), and
``TRUTHSET_PSEUDONYM_DATABASE_URL`` the pseudonym vault, overriding the configuration file.
``escalation_check_minutes`` (``TRUTHSET_ESCALATION_CHECK_MINUTES``) is how often overdue
escalations are raised without a person (0 = never; see :mod:`truthset.jobs.schedule`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from truthset import audit
from truthset.domain.errors import InputError, NotFoundError, TruthsetError
from truthset.store.blobs import BlobStore
from truthset.store.db import (
    current_revision,
    head_revision,
    make_engine,
    session_factory,
    sqlite_url,
    upgrade,
)
from truthset.store.pseudonyms import PseudonymVault

CONFIG_FILE = "truthset.yaml"
DEFAULT_DB = "truthset.db"
DEFAULT_BLOBS = "blobs"
DEFAULT_VAULT = "pseudonyms.db"
ENV_WORKSPACE = "TRUTHSET_WORKSPACE"
ENV_DATABASE_URL = "TRUTHSET_DATABASE_URL"
ENV_BLOB_URL = "TRUTHSET_BLOB_URL"
ENV_PSEUDONYM_URL = "TRUTHSET_PSEUDONYM_DATABASE_URL"
ENV_ESCALATION_CHECK = "TRUTHSET_ESCALATION_CHECK_MINUTES"
#: How often overdue escalations are raised by default (minutes).
DEFAULT_ESCALATION_CHECK_MINUTES = 15.0


@dataclass(frozen=True)
class WorkspaceConfig:
    """What ``truthset.yaml`` holds. Relative paths are relative to the workspace folder."""

    database_url: str
    blob_url: str
    pseudonym_url: str = f"sqlite:///{DEFAULT_VAULT}"
    #: Period of the overdue-escalation check, in minutes (0: off).
    escalation_check_minutes: float = DEFAULT_ESCALATION_CHECK_MINUTES


def check_minutes(value: object, source: str) -> float:
    """A period in minutes: a finite number >= 0.

    Raises
    ------
    InputError
        Not a number, negative or infinite (``source`` names where it came from).
    """
    try:
        minutes = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"escalation_check_minutes must be a number of minutes, not {value!r}",
                         source=source, field="escalation_check_minutes") from None
    if not math.isfinite(minutes) or minutes < 0:
        raise InputError("escalation_check_minutes must be 0 (off) or a positive number",
                         source=source, field="escalation_check_minutes")
    return minutes


def resolve_workspace_dir(explicit: str | Path | None = None) -> Path:
    """The workspace folder: ``explicit``, else ``$TRUTHSET_WORKSPACE``, else the cwd."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(ENV_WORKSPACE)
    return Path(env) if env else Path.cwd()


class Workspace:
    """An open workspace: database engine, audited session factory and blob store."""

    def __init__(self, root: Path, config: WorkspaceConfig) -> None:
        self.root = root.resolve()
        self.config = config
        self.engine: Engine = make_engine(config.database_url)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        audit.install(self.sessions)
        blob_url = config.blob_url
        if "://" not in blob_url and not Path(blob_url).is_absolute():
            blob_url = str(self.root / blob_url)
        self.blobs = BlobStore(blob_url)
        self._vault: PseudonymVault | None = None

    @property
    def vault(self) -> PseudonymVault:
        """The pseudonym vault (a separate database), opened on first use."""
        if self._vault is None:
            self._vault = PseudonymVault(self.config.pseudonym_url)
        return self._vault

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        root: str | Path,
        *,
        database_url: str | None = None,
        blob_url: str | None = None,
    ) -> Workspace:
        """Create a workspace in ``root`` (made if absent) and migrate its database.

        Raises
        ------
        InputError
            ``root`` already holds a workspace.
        """
        root = Path(root)
        if (root / CONFIG_FILE).exists():
            raise InputError("a workspace already exists here", source=str(root / CONFIG_FILE))
        root.mkdir(parents=True, exist_ok=True)
        config = WorkspaceConfig(
            database_url=database_url
            or os.environ.get(ENV_DATABASE_URL)
            or f"sqlite:///{DEFAULT_DB}",
            blob_url=blob_url or os.environ.get(ENV_BLOB_URL) or DEFAULT_BLOBS,
            pseudonym_url=os.environ.get(ENV_PSEUDONYM_URL) or f"sqlite:///{DEFAULT_VAULT}",
        )
        (root / CONFIG_FILE).write_text(
            "# Truthset workspace. TRUTHSET_DATABASE_URL / TRUTHSET_BLOB_URL override these.\n"
            + yaml.safe_dump(asdict(config), sort_keys=False),
            encoding="utf-8",
        )
        workspace = cls(root, cls._effective(root, config))
        upgrade(workspace.engine)
        return workspace

    @classmethod
    def open(cls, root: str | Path | None = None, *, migrate: bool = True) -> Workspace:
        """Open the workspace in ``root`` (resolved as :func:`resolve_workspace_dir` says).

        Raises
        ------
        NotFoundError
            No ``truthset.yaml`` there.
        InputError
            The configuration file is malformed.
        """
        folder = resolve_workspace_dir(root)
        path = folder / CONFIG_FILE
        if not path.is_file():
            raise NotFoundError(
                f"no Truthset workspace in {folder.resolve()} (no {CONFIG_FILE}); "
                "run `truthset init DIR`, or pass --workspace / set TRUTHSET_WORKSPACE"
            )
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            config = WorkspaceConfig(
                database_url=str(raw["database_url"]),
                blob_url=str(raw["blob_url"]),
                pseudonym_url=str(raw.get("pseudonym_url", f"sqlite:///{DEFAULT_VAULT}")),
                escalation_check_minutes=check_minutes(
                    raw.get("escalation_check_minutes", DEFAULT_ESCALATION_CHECK_MINUTES),
                    str(path)),
            )
        except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"malformed workspace configuration: {exc}", source=str(path)) from exc
        workspace = cls(folder, cls._effective(folder, config))
        if migrate:
            upgrade(workspace.engine)
        elif current_revision(workspace.engine) != head_revision():
            raise TruthsetError("the database schema is not up to date; run `truthset migrate`")
        return workspace

    @staticmethod
    def _effective(root: Path, config: WorkspaceConfig) -> WorkspaceConfig:
        def anchored(url: str) -> str:
            if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
                relative = url.removeprefix("sqlite:///")
                if relative and relative != ":memory:":
                    return sqlite_url(root / relative)
            return url

        return WorkspaceConfig(
            database_url=anchored(os.environ.get(ENV_DATABASE_URL) or config.database_url),
            blob_url=os.environ.get(ENV_BLOB_URL) or config.blob_url,
            pseudonym_url=anchored(os.environ.get(ENV_PSEUDONYM_URL) or config.pseudonym_url),
            escalation_check_minutes=check_minutes(
                os.environ.get(ENV_ESCALATION_CHECK) or config.escalation_check_minutes,
                ENV_ESCALATION_CHECK if os.environ.get(ENV_ESCALATION_CHECK) else "config"),
        )

    # -- transactions -------------------------------------------------------------------------
    @contextmanager
    def unit(self, actor: str) -> Iterator[Session]:
        """A unit of work: one transaction, committed on success, rolled back on any error.

        Every write inside it is audited with ``actor``.
        """
        session = self.sessions()
        session.info["actor"] = actor
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()
        if self._vault is not None:
            self._vault.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
