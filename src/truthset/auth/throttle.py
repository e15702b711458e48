"""Sign-in throttling: a key (``user:<name>``, ``ip:<address>``) that fails too often within a
window is locked for a while; a locked key is refused before the password is even checked.

State lives in the database (table ``login_throttle``) so every server process sees it, and its
changes are audited like any other write.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from truthset.auth._secrets import aware, now
from truthset.auth.errors import ThrottledError
from truthset.store.models import LoginThrottle


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failures a key may have within ``window`` before it is locked for ``lock``.

    Per-user limits stop password guessing against one account; a higher per-address limit stops
    one client spraying many accounts.
    """

    user_failures: int = 5
    ip_failures: int = 50
    window: timedelta = timedelta(minutes=15)
    lock: timedelta = timedelta(minutes=15)

    def limit(self, key: str) -> int:
        """The failure limit of ``key``."""
        return self.ip_failures if key.startswith("ip:") else self.user_failures


def keys_for(username: str, address: str | None) -> list[str]:
    """The throttle keys of one sign-in attempt."""
    keys = [f"user:{username.lower()[:190]}"]
    if address:
        keys.append(f"ip:{address[:190]}")
    return keys


def check(session: Session, keys: Sequence[str], *, at: datetime | None = None) -> None:
    """Refuse when any key is locked.

    Raises
    ------
    ThrottledError
        With the seconds until the lock ends.
    """
    moment = at or now()
    for key in keys:
        row = session.get(LoginThrottle, key)
        until = aware(row.locked_until) if row else None
        if until is not None and until > moment:
            wait = math.ceil((until - moment).total_seconds())
            raise ThrottledError(
                f"too many failed sign-ins; try again in {wait} s", retry_after=wait
            )


def record_failure(
    session: Session, keys: Sequence[str], policy: ThrottlePolicy, *, at: datetime | None = None
) -> list[str]:
    """Count one failure against each key; return the keys this failure locked."""
    moment = at or now()
    locked: list[str] = []
    for key in keys:
        row = session.get(LoginThrottle, key)
        if row is None:
            row = LoginThrottle(key=key, failures=0, window_start=moment)
            session.add(row)
        start = aware(row.window_start) or moment
        if moment - start > policy.window:
            row.failures, row.window_start = 0, moment
        row.failures = (row.failures or 0) + 1
        if row.failures >= policy.limit(key):
            row.locked_until = moment + policy.lock
            row.failures, row.window_start = 0, moment
            locked.append(key)
    session.flush()
    return locked


def record_success(session: Session, username: str) -> None:
    """Clear the user's failure count after a good sign-in."""
    row = session.get(LoginThrottle, keys_for(username, None)[0])
    if row is not None and (row.failures or row.locked_until is not None):
        row.failures, row.locked_until = 0, None
        session.flush()
