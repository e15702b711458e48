"""Dashboard figures: agreement per day/week and readers against the consensus (service and
HTTP), on SQLite and PostgreSQL, checked against worked examples, the ``krippendorff`` package
and scikit-learn."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import select, update

from test_api_support import Seeded, bearer, client, seed
from truthset.domain.errors import InputError
from truthset.store.models import Annotation, Consensus, Item
from truthset.workflow import monitoring
from truthset.workflow.annotations import record_annotation
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

#: Monday 6 May 2024 (UTC) and the days after it.
MONDAY = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)

#: item -> [(reader, label, when)]: week one (6–12 May, Sunday 12 included), week two (13 May–).
READS = {
    "w1a": [("r0", "normal", MONDAY), ("r1", "normal", MONDAY + timedelta(hours=1))],
    "w1b": [("r0", "nodule", MONDAY), ("r1", "normal", MONDAY + timedelta(days=1))],
    "w1c": [("r0", "nodule", MONDAY), ("r1", "nodule", MONDAY + timedelta(days=6, hours=14))],
    "w2a": [("r0", "effusion", MONDAY + timedelta(days=7)),
            ("r1", "effusion", MONDAY + timedelta(days=7)),
            ("r2", "effusion", MONDAY + timedelta(days=8))],
    # Read by r0 in week one, finished by r1 in week two: it belongs to week two.
    "w2b": [("r0", "nodule", MONDAY), ("r1", "normal", MONDAY + timedelta(days=9))],
    # A single read (week two): counted, not comparable.
    "w2c": [("r2", "normal", MONDAY + timedelta(days=9))],
}

#: The final consensus of some items (w2c has none; w1b's is the reader-r1 label).
FINAL = {"w1a": "normal", "w1b": "normal", "w1c": "nodule", "w2a": "effusion",
         "w2b": "nodule"}


def _build(ws: Workspace) -> None:
    schema = (Path(__file__).parent / "data" / "chest_schema.yaml").read_text()
    with ws.unit("admin") as s:
        p = projects.create_project(s, key="chest", name="Chest", schema_text=schema)
        for name in ("r0", "r1", "r2"):
            users.add_user(s, username=name, role="annotator")
        for external in READS:
            s.add(Item(project_id=p.id, external_id=external, kind="image"))
        s.flush()
        for external, reads in READS.items():
            item = s.scalar(select(Item).where(Item.external_id == external))
            assert item is not None
            for k, (reader, label, when) in enumerate(reads):
                row = record_annotation(s, p, item=item, author=users.get_user(s, reader),
                                        payload={"label": label}, time_spent_s=10.0 + k)
                s.execute(update(Annotation).where(Annotation.id == row.id)
                          .values(created_at=when))
            if external in FINAL:
                s.add(Consensus(project_id=p.id, item_id=item.id, method="mv",
                                label={"label": FINAL[external]}, status="final"))
        # w2c once had a consensus that was later requeued: not final, so not compared.
        w2c = s.scalar(select(Item).where(Item.external_id == "w2c"))
        assert w2c is not None
        s.add(Consensus(project_id=p.id, item_id=w2c.id, method="requeued",
                        label={"label": None}, status="requeued"))


def _alpha(reads: list[list[str | None]]) -> float:
    """Krippendorff's nominal alpha by the ``krippendorff`` package (rows: readers)."""
    codes = {"normal": 0, "nodule": 1, "effusion": 2}
    data = np.array([[np.nan if v is None else codes[v] for v in row] for row in reads])
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))


def test_agreement_per_week_and_day(workspace: Workspace) -> None:
    _build(workspace)
    with workspace.sessions() as s:
        chest = projects.get_project(s, "chest")
        weeks = monitoring.agreement_over_time(s, chest, period="week", metric="percent",
                                               ci=None)
        alphas = monitoring.agreement_over_time(s, chest, period="week", ci=None)
        days = monitoring.agreement_over_time(s, chest, period="day", metric="percent",
                                              ci=None)
        boot = monitoring.agreement_over_time(s, chest, period="week", n_boot=200)
        again = monitoring.agreement_over_time(s, chest, period="week", n_boot=200)
        with pytest.raises(InputError) as err:
            monitoring.agreement_over_time(s, chest, period="month")
        assert err.value.field == "period"
        with pytest.raises(InputError) as err:
            monitoring.agreement_over_time(s, chest, metric="nope")
        assert err.value.field == "metric"

    assert [w.start for w in weeks] == [MONDAY.replace(hour=0),
                                        MONDAY.replace(hour=0) + timedelta(days=7)]
    assert [w.end - w.start for w in weeks] == [timedelta(days=7)] * 2
    # Week one: w1a, w1b, w1c (w1c finished on Sunday evening); 2 of 3 items agree.
    assert (weeks[0].n_items, weeks[0].n_reads) == (3, 6)
    assert weeks[0].result.value == pytest.approx(2 / 3)
    # Week two: w2a (3 alike: 3 agreeing pairs of 3), w2b (1 pair, disagrees), w2c (single).
    # Percent agreement averages the per-item pair agreement over the comparable items.
    assert (weeks[1].n_items, weeks[1].n_reads, weeks[1].result.n_items) == (3, 6, 2)
    assert weeks[1].result.value == pytest.approx((1.0 + 0.0) / 2)
    # Alpha per week equals the reference implementation's on the same reads.
    assert alphas[0].result.value == pytest.approx(_alpha(
        [["normal", "nodule", "nodule"], ["normal", "normal", "nodule"]]))
    assert alphas[1].result.value == pytest.approx(_alpha(
        [["effusion", "nodule", None], ["effusion", "normal", None],
         ["effusion", None, "normal"]]))
    # Days: one entry per day with a finished item, in order.
    assert [d.start.date().isoformat() for d in days] == [
        "2024-05-06", "2024-05-07", "2024-05-12", "2024-05-14", "2024-05-15"]
    assert [d.n_items for d in days] == [1, 1, 1, 1, 2]
    single = days[-1]  # w2b (disagree) and w2c (single)
    assert single.result.value == pytest.approx(0.0)
    one = days[2]
    assert one.result.value == pytest.approx(1.0)
    # Intervals: present, ordered, around the value, and the same on a second run.
    for period in boot:
        assert period.result.ci is not None
        low, high = period.result.ci
        assert low <= high
    assert [p.to_dict() for p in boot] == [p.to_dict() for p in again]


def test_a_period_without_comparable_reads_says_why(workspace: Workspace) -> None:
    _build(workspace)
    with workspace.sessions() as s:
        chest = projects.get_project(s, "chest")
        days = monitoring.agreement_over_time(s, chest, period="day", metric="percent",
                                              ci=None)
    assert all(d.n_items >= 1 and d.result.value is not None for d in days)
    # A day whose only item has a single read is listed, with no value and the reason.
    with workspace.unit("admin") as s:
        chest = projects.get_project(s, "chest")
        item = Item(project_id=chest.id, external_id="late", kind="image")
        s.add(item)
        s.flush()
        row = record_annotation(s, chest, item=item, author=users.get_user(s, "r0"),
                                payload={"label": "normal"})
        s.execute(update(Annotation).where(Annotation.id == row.id)
                  .values(created_at=MONDAY + timedelta(days=30)))
    with workspace.sessions() as s:
        last = monitoring.agreement_over_time(s, projects.get_project(s, "chest"),
                                              period="day", metric="percent", ci=None)[-1]
    assert last.n_items == 1 and last.result.value is None
    assert last.result.reason and "at least two" in last.result.reason


def test_readers_against_the_consensus(workspace: Workspace) -> None:
    _build(workspace)
    with workspace.sessions() as s:
        classes, rows = monitoring.readers_against_consensus(
            s, projects.get_project(s, "chest"), n_boot=200)
    assert classes == ["normal", "nodule", "effusion"]
    by = {r.reader: r for r in rows}
    for reader, r in by.items():
        mine = [(item, label) for item, reads in READS.items()
                for who, label, _ in reads if who == reader]
        compared = [(label, FINAL[item]) for item, label in mine if item in FINAL]
        assert r.reads == len(mine)
        assert r.compared == len(compared)
        assert r.agreed == sum(a == b for a, b in compared)
        assert r.agreement.value == pytest.approx(r.agreed / r.compared)
        said, truth = zip(*compared, strict=True)
        if len(set(said) | set(truth)) > 1:
            assert r.kappa == pytest.approx(cohen_kappa_score(said, truth, labels=classes))
        matrix = np.zeros((3, 3), dtype=int)
        for a, b in compared:
            matrix[classes.index(a), classes.index(b)] += 1
        assert r.confusion == matrix.tolist()
        assert r.agreement.ci is not None and r.agreement.ci[0] <= r.agreement.ci[1]
    # r0: w1a ✓, w1b ✗ (nodule vs normal), w1c ✓, w2a ✓, w2b ✓ -> 4/5; r1: 4/5 too but the
    # order is by agreement, then name; r2: w2a ✓, w2c has no final consensus -> 1/1.
    assert [r.reader for r in rows] == ["r2", "r0", "r1"]
    assert (by["r2"].reads, by["r2"].compared) == (2, 1)
    assert by["r0"].median_time_s == pytest.approx(10.0)
    assert by["r1"].median_time_s == pytest.approx(11.0)


def test_no_labels_is_a_named_input_error(workspace: Workspace) -> None:
    schema = (Path(__file__).parent / "data" / "chest_schema.yaml").read_text()
    with workspace.unit("admin") as s:
        projects.create_project(s, key="empty", name="Empty", schema_text=schema)
    with workspace.sessions() as s:
        empty = projects.get_project(s, "empty")
        for call in (monitoring.agreement_over_time, monitoring.readers_against_consensus):
            with pytest.raises(InputError) as err:
                call(s, empty)
            assert err.value.field == "project"


# --- over HTTP -------------------------------------------------------------------------------
@pytest.fixture
def seeded(workspace: Workspace, tmp_path: Path) -> Seeded:
    return seed(workspace, tmp_path)


def test_trend_and_leaderboard_routes(workspace: Workspace, seeded: Seeded) -> None:
    c = client(workspace)
    h = {name: bearer(token) for name, token in seeded.tokens.items()}
    base = "/api/v1/projects/alpha/agreement"
    r = c.get(f"{base}/trend", headers=h["manager"])
    assert r.status_code == 422 and r.json()["field"] == "project"
    with workspace.unit("test") as s:
        alpha = projects.get_project(s, "alpha")
        items = list(s.scalars(select(Item).where(Item.project_id == alpha.id)
                               .order_by(Item.id)))
        for reader, labels in (("annotator", ["normal", "nodule"]),
                               ("annotator2", ["normal", "effusion"])):
            for item, label in zip(items, labels, strict=True):
                record_annotation(s, alpha, item=item, author=users.get_user(s, reader),
                                  payload={"label": label})
        s.add(Consensus(project_id=alpha.id, item_id=items[1].id, method="adjudication",
                        label={"label": "nodule"}, status="final"))
    assert c.get(f"{base}/trend", headers=h["annotator"]).status_code == 403
    assert c.get(f"{base}/readers", headers=h["annotator"]).status_code == 403
    r = c.get(f"{base}/trend?period=fortnight", headers=h["manager"])
    assert r.status_code == 422 and r.json()["field"] == "period"
    r = c.get(f"{base}/trend?metric=nope", headers=h["manager"])
    assert r.status_code == 422 and r.json()["field"] == "metric"
    body = c.get(f"{base}/trend?period=day&metric=percent&n_boot=100",
                 headers=h["adjudicator"]).json()
    assert body["period"] == "day" and body["metric"] == "percent"
    [today] = body["periods"]
    assert (today["n_items"], today["n_reads"], today["n_compared"]) == (2, 4, 2)
    assert today["value"] == pytest.approx(0.5)
    assert today["ci"] is not None
    start = datetime.fromisoformat(today["start"])
    assert start.tzinfo is not None and start <= datetime.now(UTC) < start + timedelta(days=1)
    board = c.get(f"{base}/readers", headers=h["auditor"]).json()
    assert board["classes"] == ["normal", "nodule", "effusion"]
    rows = {r["reader"]: r for r in board["readers"]}
    assert rows["annotator"]["agreed"] == 1 and rows["annotator"]["compared"] == 1
    assert rows["annotator2"]["agreed"] == 0
    assert rows["annotator2"]["confusion"] == [[0, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert [r["reader"] for r in board["readers"]] == ["annotator", "annotator2"]
