"""The hash chain: canonical JSON, event hashes and verification. Pure functions.

Each event's hash is the SHA-256 of the canonical JSON of its fields, including the hash of the
previous event (``prev_hash``; the first event chains to :data:`GENESIS`). Editing an event
changes its hash; deleting one leaves a gap in the sequence numbers and breaks the next event's
``prev_hash``; swapping two breaks both. Truncating the tail or rewriting the whole chain is only
caught by comparing with a head anchored outside the system (``truthset audit head``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

#: ``prev_hash`` of the first event.
GENESIS = "0" * 64

#: The fields of an event that its hash covers, in canonical order.
HASHED_FIELDS = (
    "seq",
    "at",
    "actor",
    "action",
    "entity_type",
    "entity_id",
    "project_id",
    "before",
    "after",
    "prev_hash",
)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot put {type(value).__name__} into canonical JSON")


def canonical_json(value: Any) -> str:
    """Serialise ``value`` deterministically: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_default,
    )


def event_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of an event's :data:`HASHED_FIELDS`."""
    body = {name: fields[name] for name in HASHED_FIELDS}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    """The latest event of a chain: anchor it outside the system to detect truncation."""

    seq: int
    hash: str
    at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"seq": self.seq, "hash": self.hash, "at": self.at}


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of walking a chain.

    Attributes
    ----------
    ok:
        True when every event is intact and linked.
    n_events:
        Events read.
    head:
        The last event read (``None`` for an empty chain).
    broken_seq:
        Sequence number of the first broken event (``None`` when ``ok``).
    reason:
        Why that event is broken.
    """

    ok: bool
    n_events: int
    head: ChainHead | None
    broken_seq: int | None = None
    reason: str | None = None


def verify_chain(
    events: Iterable[Mapping[str, Any]],
    *,
    anchor: ChainHead | None = None,
    stored_head: ChainHead | None = None,
) -> VerifyResult:
    """Walk events in storage order and report the first broken one.

    Parameters
    ----------
    events:
        Event mappings with the :data:`HASHED_FIELDS` and ``hash``, ordered by ``seq``.
    anchor:
        A head exported earlier (``truthset audit head``). The chain must still contain it
        unchanged; this detects a truncated tail or a rewritten history.
    stored_head:
        The head the database keeps beside the events; a mismatch means events were removed
        from the end.
    """
    expected_seq = 1
    prev = GENESIS
    last: ChainHead | None = None
    anchor_seen = anchor is None
    n = 0
    for event in events:
        n += 1
        seq = int(event["seq"])
        if seq != expected_seq:
            if seq > expected_seq:
                missing = (
                    f"event {expected_seq} is missing"
                    if seq == expected_seq + 1
                    else f"events {expected_seq}–{seq - 1} are missing"
                )
                return VerifyResult(False, n, last, expected_seq, missing)
            return VerifyResult(False, n, last, seq, f"event {seq} is out of order")
        if event["prev_hash"] != prev:
            return VerifyResult(
                False, n, last, seq, "its prev_hash does not match the previous event's hash"
            )
        recomputed = event_hash(event)
        if recomputed != event["hash"]:
            return VerifyResult(
                False, n, last, seq, "its content does not match its hash (the event was altered)"
            )
        if anchor is not None and seq == anchor.seq:
            if event["hash"] != anchor.hash:
                return VerifyResult(
                    False, n, last, seq, "it differs from the anchored head (history rewritten)"
                )
            anchor_seen = True
        prev = event["hash"]
        last = ChainHead(seq, event["hash"], event.get("at"))
        expected_seq += 1
    if not anchor_seen:
        assert anchor is not None
        return VerifyResult(
            False,
            n,
            last,
            anchor.seq,
            f"the anchored head (event {anchor.seq}) is no longer in the chain (truncated)",
        )
    if stored_head is not None and (
        last is None or (stored_head.seq, stored_head.hash) != (last.seq, last.hash)
    ):
        missing_from = (last.seq + 1) if last else 1
        return VerifyResult(
            False,
            n,
            last,
            missing_from,
            f"the stored head is event {stored_head.seq}, but the chain ends at "
            f"{last.seq if last else 0} (events removed from the end)",
        )
    return VerifyResult(True, n, last)
