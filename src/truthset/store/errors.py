"""Database failures the interfaces answer for, named by the store.

The API maps these to HTTP replies: a constraint the change broke (``IntegrityError``, e.g. two
concurrent requests inserting the same unique row) is a conflict (409); a database that is
locked, unreachable or refused the connection (``OperationalError``) and a connection pool that
stayed busy for its whole wait (``PoolTimeoutError``) are "retry later" (503). They are
re-exported here so that ``api/`` and ``cli/`` depend on the store, the only layer that knows
SQL, and never import SQLAlchemy themselves: a change of database library changes this module,
not the interfaces.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

__all__ = ["IntegrityError", "OperationalError", "PoolTimeoutError"]
