"""The store and the hash-chained audit log, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from truthset import audit
from truthset.audit.chain import GENESIS, ChainHead, event_hash, verify_chain
from truthset.audit.log import AuditTamperError
from truthset.store.db import current_revision, head_revision
from truthset.store.models import AuditEvent, Base, User
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

SCHEMA = (Path(__file__).parent / "data" / "chest_schema.yaml").read_text()


def _populate(ws: Workspace, n_users: int = 6) -> None:
    with ws.unit("admin") as s:
        projects.create_project(s, key="chest", name="Chest", schema_text=SCHEMA)
    for k in range(n_users):
        with ws.unit("admin") as s:
            users.add_user(s, username=f"reader{k}", role="annotator")


def _verify(ws: Workspace, anchor: ChainHead | None = None) -> audit.VerifyResult:
    with ws.sessions() as s:
        return audit.verify(s, anchor=anchor)


def _tamper(ws: Workspace, *statements: str) -> None:
    """Run SQL as an attacker with DDL rights would: bypassing the append-only triggers."""
    with ws.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_events_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_events_no_delete")
        else:
            conn.exec_driver_sql(
                "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"
            )
        for sql in statements:
            conn.exec_driver_sql(sql)


def test_migrations_match_models(workspace: Workspace) -> None:
    assert current_revision(workspace.engine) == head_revision()
    with workspace.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_every_write_is_audited_in_order(workspace: Workspace) -> None:
    _populate(workspace, n_users=2)
    with workspace.sessions() as s:
        events = list(audit.iter_events(s))
    kinds = [(e["action"], e["entity_type"]) for e in events]
    assert ("create", "projects") in kinds
    assert ("create", "label_schemas") in kinds
    assert kinds.count(("create", "users")) == 2
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["prev_hash"] == GENESIS
    assert all(e["actor"] == "admin" for e in events)
    assert _verify(workspace).ok


def test_update_records_before_and_after_and_redacts_secrets(workspace: Workspace) -> None:
    with workspace.unit("admin") as s:
        users.add_user(s, username="carol", role="reviewer", password="correct horse battery")
    with workspace.unit("admin") as s:
        user = users.get_user(s, "carol")
        user.tier = 2
    with workspace.sessions() as s:
        events = list(audit.iter_events(s))
    import json

    update = events[-1]
    assert update["action"] == "update"
    assert json.loads(update["before"]) == {"tier": 1}
    assert json.loads(update["after"]) == {"tier": 2}
    created = json.loads(events[-2]["after"])
    assert created["password_hash"] == "[redacted]"
    assert all("correct horse" not in e["after"] and "argon2" not in e["after"] for e in events)


def test_rolled_back_transaction_leaves_no_event(workspace: Workspace) -> None:
    _populate(workspace, n_users=1)
    before = _verify(workspace).n_events
    with pytest.raises(RuntimeError), workspace.unit("admin") as s:
        users.add_user(s, username="ghost", role="annotator")
        raise RuntimeError("boom")
    with workspace.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(User)) == 1
    assert _verify(workspace).n_events == before


def test_orm_refuses_to_change_an_event(workspace: Workspace) -> None:
    _populate(workspace, n_users=1)
    with pytest.raises(AuditTamperError), workspace.unit("admin") as s:
        event = s.get(AuditEvent, 1)
        assert event is not None
        event.actor = "mallory"


def test_database_refuses_update_and_delete(workspace: Workspace) -> None:
    _populate(workspace, n_users=1)
    with pytest.raises(sa.exc.DBAPIError), workspace.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1")
    with pytest.raises(sa.exc.DBAPIError), workspace.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_events WHERE seq = 2")
    assert _verify(workspace).ok


def test_verify_names_an_edited_event(workspace: Workspace) -> None:
    _populate(workspace)
    _tamper(workspace, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
    result = _verify(workspace)
    assert not result.ok
    assert result.broken_seq == 3
    assert "altered" in (result.reason or "")


def test_verify_names_a_deleted_event(workspace: Workspace) -> None:
    _populate(workspace)
    _tamper(workspace, "DELETE FROM audit_events WHERE seq = 4")
    result = _verify(workspace)
    assert (result.ok, result.broken_seq) == (False, 4)
    assert "missing" in (result.reason or "")


def test_verify_names_reordered_events(workspace: Workspace) -> None:
    _populate(workspace)
    _tamper(
        workspace,
        "UPDATE audit_events SET seq = -1 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 5",
        "UPDATE audit_events SET seq = 5 WHERE seq = -1",
    )
    result = _verify(workspace)
    assert (result.ok, result.broken_seq) == (False, 3)


def test_truncated_tail_is_caught_by_the_stored_head_and_the_anchor(workspace: Workspace) -> None:
    _populate(workspace)
    intact = _verify(workspace)
    head = intact.head
    assert intact.ok and head is not None, intact
    _tamper(workspace, f"DELETE FROM audit_events WHERE seq = {head.seq}")
    result = _verify(workspace)
    assert (result.ok, result.broken_seq) == (False, head.seq)
    # Even with the head row rewritten too, the anchor exported earlier catches it.
    _tamper(
        workspace,
        f"UPDATE audit_head SET seq = {head.seq - 1}, hash = "
        f"(SELECT hash FROM audit_events WHERE seq = {head.seq - 1})",
    )
    assert _verify(workspace).ok
    anchored = _verify(workspace, anchor=head)
    assert (anchored.ok, anchored.broken_seq) == (False, head.seq)


def test_chain_verification_is_pure() -> None:
    events = []
    prev = GENESIS
    for seq in range(1, 4):
        fields = {"seq": seq, "at": "2026-01-01T00:00:00+00:00", "actor": "a", "action": "x",
                  "entity_type": "t", "entity_id": str(seq), "project_id": None,
                  "before": "null", "after": "{}", "prev_hash": prev}
        fields["hash"] = prev = event_hash(fields)
        events.append(fields)
    assert verify_chain(events).ok
    assert verify_chain(events, anchor=ChainHead(2, events[1]["hash"])).ok
    assert verify_chain(events, anchor=ChainHead(2, "f" * 64)).broken_seq == 2
    assert verify_chain([events[0], events[2]]).broken_seq == 2


def test_concurrent_writers_never_fork_the_chain(workspace: Workspace) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with workspace.unit("admin") as s:
        projects.create_project(s, key="chest", name="Chest", schema_text=SCHEMA)

    def add(k: int) -> None:
        with workspace.unit(f"writer{k}") as s:
            users.add_user(s, username=f"u{k}", role="annotator")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(add, range(40)))
    result = _verify(workspace)
    assert result.ok, result
    with workspace.sessions() as s:
        actors = {e["actor"] for e in audit.iter_events(s) if e["entity_type"] == "users"}
    assert actors == {f"writer{k}" for k in range(40)}


def test_a_savepoint_rolled_back_takes_its_events_with_it(workspace: Workspace) -> None:
    _populate(workspace, n_users=1)
    before = _verify(workspace).n_events
    with workspace.unit("admin") as s:
        users.add_user(s, username="kept", role="annotator")
        savepoint = s.begin_nested()
        users.add_user(s, username="undone", role="annotator")
        savepoint.rollback()
        audit.record(s, action="note", entity_type="users", after={"why": "kept"})
    with workspace.sessions() as s:
        events = list(audit.iter_events(s))[before:]
    created = [json.loads(e["after"])["username"] for e in events
               if e["action"] == "create" and e["entity_type"] == "users"]
    assert created == ["kept"]
    assert [e["action"] for e in events][-1] == "note"
    assert _verify(workspace).ok


def test_events_join_the_chain_when_the_transaction_commits(
        workspace: Workspace) -> None:
    _populate(workspace, n_users=1)
    before = _verify(workspace).n_events
    with workspace.unit("admin") as s:
        users.add_user(s, username="late", role="annotator")
        s.flush()
        # collected, not yet appended: the chain head has not moved inside the transaction
        assert audit.stored_head(s).seq == before
    assert _verify(workspace).n_events == before + 1
    assert _verify(workspace).ok


@pytest.mark.postgres
def test_the_chain_lock_is_held_only_for_the_append(workspace: Workspace) -> None:
    """A transaction that has written but not committed does not block another writer.

    Appending at the first flush held the ``audit_head`` row lock until commit, so every other
    writer waited for the slowest transaction; appending at commit holds it only for the append.
    """
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time by design")
    from concurrent.futures import ThreadPoolExecutor

    _populate(workspace, n_users=1)
    with workspace.unit("slow") as slow:
        users.add_user(slow, username="slow", role="annotator")
        slow.flush()  # written, uncommitted

        def other() -> None:
            with workspace.unit("fast") as s:
                s.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
                users.add_user(s, username="fast", role="annotator")

        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(other).result(timeout=30)  # raised LockNotAvailable before
    result = _verify(workspace)
    assert result.ok, result
    with workspace.sessions() as s:
        order = [json.loads(e["after"])["username"] for e in audit.iter_events(s)
                 if e["action"] == "create" and e["entity_type"] == "users"]
    assert order[-2:] == ["fast", "slow"]  # commit order
