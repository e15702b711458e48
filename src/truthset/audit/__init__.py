"""Append-only, hash-chained audit log: every write, login, import, export and release."""

from truthset.audit.chain import (
    GENESIS,
    ChainHead,
    VerifyResult,
    canonical_json,
    event_hash,
    verify_chain,
)
from truthset.audit.log import append_events, install, iter_events, record, stored_head, verify
from truthset.audit.query import AuditFilter, parse_instant, select_events

__all__ = [
    "GENESIS",
    "AuditFilter",
    "ChainHead",
    "VerifyResult",
    "append_events",
    "canonical_json",
    "event_hash",
    "install",
    "iter_events",
    "parse_instant",
    "record",
    "select_events",
    "stored_head",
    "verify",
    "verify_chain",
]
