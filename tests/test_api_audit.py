"""The audit log viewer's API: server-side filters (actor, action, entity, time) with cursor
pages in either order, checked against a plain Python filter of every stored event, on SQLite
and PostgreSQL; bad filters are 422 naming the field and write nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from test_api_support import Seeded, bearer, client, seed
from truthset import audit
from truthset.audit.query import AuditFilter, parse_instant, stored_form
from truthset.domain.errors import InputError
from truthset.store.models import Item
from truthset.workflow.annotations import record_annotation
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace


@pytest.fixture
def seeded(workspace: Workspace, tmp_path: Path) -> Seeded:
    """The API seed, then labels by two readers in two separate moments (distinct times)."""
    out = seed(workspace, tmp_path)
    for name, label in (("annotator", "nodule"), ("annotator2", "normal")):
        time.sleep(0.01)
        with workspace.unit(name) as s:
            project = projects.get_project(s, "alpha")
            author = users.get_user(s, name)
            for item in s.query(Item).filter(Item.project_id == project.id).order_by(Item.id):
                record_annotation(s, project, item=item, author=author,
                                  payload={"label": label})
        with workspace.unit(name) as s:
            audit.record(s, action="export", entity_type="release", entity_id="r1",
                         project_id=projects.get_project(s, "alpha").id)
    return out


def _stored(ws: Workspace) -> list[dict[str, Any]]:
    with ws.sessions() as s:
        return list(audit.iter_events(s))


def _walk(ws: Workspace, token: str, params: dict[str, Any], *, limit: int,
          order: str) -> list[int]:
    """Every seq the API returns for ``params``, page by page."""
    c = client(ws)
    seen: list[int] = []
    cursor = None
    for _ in range(1000):
        query = {**params, "limit": limit, "order": order}
        if cursor:
            query["cursor"] = cursor
        r = c.get("/api/v1/audit/events", params=query, headers=bearer(token))
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= limit
        seen += [e["seq"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pages never ended")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_filters_and_pages_match_a_plain_filter_of_every_event(
    workspace: Workspace, seeded: Seeded
) -> None:
    events = _stored(workspace)
    with workspace.sessions() as s:
        alpha = projects.get_project(s, "alpha").id
    times = sorted({_instant(e["at"]) for e in events})
    assert len(times) >= 4, times
    t1, t2 = times[len(times) // 3], times[2 * len(times) // 3]
    east = timezone(timedelta(hours=2))
    cases: list[tuple[dict[str, Any], Any]] = [
        ({}, lambda e: True),
        ({"project": "alpha"}, lambda e: e["project_id"] == alpha),
        ({"actor": "annotator2"}, lambda e: e["actor"] == "annotator2"),
        ({"action": "create", "entity_type": "annotations"},
         lambda e: e["action"] == "create" and e["entity_type"] == "annotations"),
        ({"action": "export", "entity_id": "r1", "project": "alpha"},
         lambda e: e["action"] == "export" and e["entity_id"] == "r1"
         and e["project_id"] == alpha),
        ({"since": t1.isoformat()}, lambda e: _instant(e["at"]) >= t1),
        ({"until": t2.isoformat()}, lambda e: _instant(e["at"]) < t2),
        # The same instants written with another offset, and a space for the "T".
        ({"since": t1.astimezone(east).isoformat(), "until": t2.astimezone(east).isoformat(
            sep=" ")}, lambda e: t1 <= _instant(e["at"]) < t2),
        ({"actor": "annotator", "since": t1.isoformat(), "project": "alpha"},
         lambda e: e["actor"] == "annotator" and _instant(e["at"]) >= t1
         and e["project_id"] == alpha),
        ({"since": "2000-01-01", "until": "2000-01-02"}, lambda e: False),
        ({"actor": "nobody-at-all"}, lambda e: False),
    ]
    token = seeded.tokens["root"]
    for params, keep in cases:
        expected = [e["seq"] for e in events if keep(e)]
        assert _walk(workspace, token, params, limit=4, order="asc") == expected, params
        assert _walk(workspace, token, params, limit=3, order="desc") == expected[::-1], params
    # Something was found for the filters meant to find something.
    assert any(e["action"] == "export" for e in events)
    assert [e for e in events if e["actor"] == "annotator2"]


def test_project_auditors_see_only_their_project_and_need_it_named(
    workspace: Workspace, seeded: Seeded
) -> None:
    c = client(workspace)
    h = bearer(seeded.tokens["auditor"])
    with workspace.sessions() as s:
        alpha = projects.get_project(s, "alpha").id
    r = c.get("/api/v1/audit/events", params={"project": "alpha", "action": "create",
                                             "limit": 500}, headers=h)
    assert r.status_code == 200
    assert r.json()["items"] and {e["project_id"] for e in r.json()["items"]} == {alpha}
    r = c.get("/api/v1/audit/events", params={"action": "create"}, headers=h)
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-01"}, "until"),
        ({"since": "2024-05-02", "until": "2024-05-01T23:59:59Z"}, "until"),
        ({"actor": "x" * 101}, "actor"),
        ({"entity_id": "   "}, None),  # blank: no filter, not an error
        ({"order": "sideways"}, "order"),
        ({"action": "create", "cursor": "garbage!"}, "cursor"),
    ],
)
def test_bad_filters_are_422_naming_the_field_and_write_nothing(
    workspace: Workspace, seeded: Seeded, params: dict[str, str], field: str | None
) -> None:
    before = _stored(workspace)[-1]["seq"]
    r = client(workspace).get("/api/v1/audit/events", params=params,
                              headers=bearer(seeded.tokens["root"]))
    if field is None:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 422, r.text
        assert r.json()["field"] == field, r.json()
        assert r.json()["detail"]
    assert _stored(workspace)[-1]["seq"] == before


# --- the filter itself -----------------------------------------------------------------------
def test_parse_instant_reads_iso_8601_as_utc() -> None:
    noon = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    for text in ("2024-05-01T12:00:00Z", "2024-05-01T14:00:00+02:00", "2024-05-01T12:00",
                 "2024-05-01 12:00:00.000000+00:00", "2024-05-01T07:00-05:00"):
        assert parse_instant(text, "since") == noon, text
    assert parse_instant("2024-05-01", "until") == datetime(2024, 5, 1, tzinfo=UTC)
    for bad in ("", "today", "2024-02-30", "12:00", "2024-05-01T25:00Z"):
        with pytest.raises(InputError) as err:
            parse_instant(bad, "until")
        assert err.value.field == "until"


def test_a_filter_refuses_since_after_until_and_blank_or_long_values() -> None:
    with pytest.raises(InputError) as err:
        AuditFilter.parse(since="2024-05-02", until="2024-05-01")
    assert err.value.field == "until"
    assert AuditFilter.parse(since="2024-05-01", until="2024-05-01").since is not None
    assert AuditFilter.parse(actor="  ", action="").actor is None
    with pytest.raises(InputError) as err:
        AuditFilter(action="")
    assert err.value.field == "action"
    with pytest.raises(InputError) as err:
        AuditFilter.parse(entity_type="t" * 65)
    assert err.value.field == "entity_type"


_MOMENTS = st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30),
                        timezones=st.timezones())


@given(_MOMENTS, _MOMENTS)
@example(datetime(1946, 6, 2, 1, 0, tzinfo=ZoneInfo("America/Louisville")),  # a skipped hour
         datetime(1946, 6, 2, 6, 0, tzinfo=UTC))
def test_stored_form_sorts_as_text_in_time_order(a: datetime, b: datetime) -> None:
    """The ``at`` column is text; a range filter on it is right only if text order is time
    order, whatever offset a time was given in."""
    sa, sb = stored_form(a), stored_form(b)
    # Compared as UTC instants: Python never calls two aware times in different zones equal when
    # one is an ambiguous or skipped local time (PEP 495), even at the same instant.
    ua, ub = a.astimezone(UTC), b.astimezone(UTC)
    assert (sa < sb) == (ua < ub) and (sa == sb) == (ua == ub)
    assert parse_instant(a.isoformat(), "since") == ua
    assert len(sa) == len("2024-05-01T12:00:00.000000+00:00")
