"""Shared test fixtures."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

if TYPE_CHECKING:
    from truthset.workspace.workspace import Workspace

#: ../shared beside the checkout: public crowd datasets and published worked examples.
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def crowd_dir() -> Path:
    """Folder of the public crowd-labelling datasets.

    ``../shared/data/crowd`` beside the checkout when present, else the copy shipped in
    ``tests/data/crowd`` (same files, with their sources and licences in its README).
    """
    path = SHARED / "data" / "crowd"
    if path.is_dir():
        return path
    return Path(__file__).resolve().parent / "data" / "crowd"


# --- databases: every store test runs on SQLite and, when reachable, on PostgreSQL -----------

#: The PostgreSQL server the suite uses (a fresh schema per test keeps runs apart).
POSTGRES_URL = os.environ.get(
    "TRUTHSET_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_available() -> bool:
    try:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


_PG_OK: bool | None = None


def postgres_ok() -> bool:
    """Whether the PostgreSQL test server answers (checked once)."""
    global _PG_OK
    if _PG_OK is None:
        _PG_OK = _postgres_available()
    return _PG_OK


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: an SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'truthset.db'}"
        return
    if not postgres_ok():
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.engine.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def workspace(tmp_path: Path, database_url: str) -> Iterator[Workspace]:
    """A fresh workspace on each database."""
    from truthset.workspace.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", database_url=database_url)
    try:
        yield ws
    finally:
        ws.close()
