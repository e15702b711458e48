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

__all__ = [
    "GENESIS",
    "ChainHead",
    "VerifyResult",
    "append_events",
    "canonical_json",
    "event_hash",
    "install",
    "iter_events",
    "record",
    "stored_head",
    "verify",
    "verify_chain",
]
