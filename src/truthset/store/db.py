"""Engines, sessions and schema migrations for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session as Session  # re-exported: the interfaces' type hints
from sqlalchemy.orm import sessionmaker

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def sqlite_url(path: str | Path) -> str:
    """SQLAlchemy URL of an SQLite database file."""
    return f"sqlite:///{Path(path).resolve()}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the settings Truthset relies on.

    SQLite: foreign keys on, WAL journal (readers never block the writer), a 30 s busy timeout,
    and ``BEGIN IMMEDIATE`` so that a write transaction takes the write lock at its start
    instead of failing half-way. PostgreSQL: connections checked before use.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)

        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose sessions keep loaded values after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def lock_key(session: Session, *parts: object) -> None:
    """Hold a transaction-scoped lock named by ``parts`` until the session's transaction ends.

    For serialising work on something that has no row to lock (yet): PostgreSQL takes
    ``pg_advisory_xact_lock`` on a 64-bit hash of the parts; SQLite needs nothing, as its write
    transactions (``BEGIN IMMEDIATE``, see :func:`make_engine`) already run one at a time.
    Callers that take several keys take them in a fixed order (sorted), so two transactions never
    wait for each other in a circle.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def alembic_config(engine: Engine) -> Config:
    """An Alembic configuration that runs the packaged migrations on ``engine``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Bring the database schema to ``revision`` (every branch head by default)."""
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> frozenset[str]:
    """The schema revisions (one per migration branch) the database is at; empty when new."""
    with engine.connect() as conn:
        return frozenset(MigrationContext.configure(conn).get_current_heads())


def head_revision() -> frozenset[str]:
    """The newest schema revision of every migration branch this version of Truthset ships."""
    return frozenset(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())
