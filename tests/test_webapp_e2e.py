"""End-to-end: the web application in real headless Chromium against a live server.

Issue 7 item 7 on one item: reader A signs in, draws a box and a brush mask on a de-identified
CT (DICOM) and submits; reader B labels the same item differently; the adjudicator sees both
readers' objects overlaid (legend, toggles) and the fused consensus, starts from reader A's
objects, edits them with the eraser and gives the final label with a reason; the final label and
its provenance are checked through the API. Classification projects: two blinded readers
disagree and the adjudicator resolves it; a reviewer corrects a read. Also skip/flag, releases,
dashboards, the audit log, DICOMweb loading, three planes and a 3D brush, lost sessions, and
the jobs page (a running job followed, cancelled and started; no controls for others).
Screenshots of the pages go to ``docs/screenshots/`` when ``TRUTHSET_SCREENSHOTS=1``.

Needs the ``playwright`` package and Debian's ``chromium`` (never a downloaded browser); skips
cleanly without them.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from truthset.jobs.schedule import run_due
from truthset.jobs.service import JobContext, JobKind, register_kind
from truthset.store.models import utcnow
from truthset.workflow.escalations import OVERDUE_CHECK
from webapp_support import (
    BOX_SCHEMA,
    CONSENSUS_POLICY,
    PASSWORD,
    REVIEW_POLICY,
    add_series_project,
    add_workflow_project,
    build_box_project,
    live_server,
    require_browser,
    start_workflow,
)

pytestmark = pytest.mark.slow

SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One browser context for the module (its HTTP cache keeps the bundle between sign-ins;
    each sign-in starts without cookies in a new tab)."""
    path = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield launched.new_context(viewport={"width": 1400, "height": 880})
        finally:
            launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    workspace = build_box_project(tmp_path_factory.mktemp("e2e"))
    start_workflow(workspace, key="lesions", policy=CONSENSUS_POLICY)  # two readers, boxes
    items = {key: add_workflow_project(workspace, key=key, policy=policy)
             for key, policy in (("findings", CONSENSUS_POLICY), ("triage", REVIEW_POLICY),
                                 ("unclear", CONSENSUS_POLICY))}
    items["boxreview"] = add_workflow_project(workspace, key="boxreview", policy=REVIEW_POLICY,
                                              schema=BOX_SCHEMA)
    items["volumes"] = add_series_project(workspace)
    items["skilled"] = add_read_project(workspace)
    with workspace, live_server(workspace) as live:
        live.items = items  # type: ignore[attr-defined]
        yield live


def add_read_project(workspace: Any) -> int:
    """Project ``skilled``: two items (the CT and pydicom's MR) read through the queue by ana
    and ben, who agree on the CT (final by the vote) and disagree on the MR (waiting for the
    adjudicator); returns the MR's item id."""
    import pydicom.examples

    from truthset.workflow import queue
    from truthset.workspace import projects, users
    from truthset.workspace.medical import Source, ingest_medical

    agreed = add_workflow_project(workspace, key="skilled", policy=CONSENSUS_POLICY)
    with workspace.unit("test") as s:
        project = projects.get_project(s, "skilled")
        path = Path(str(pydicom.examples.get_path("mr")))
        ingest_medical(s, workspace.blobs, workspace.vault, project,
                       [Source(name=path.name, data=path.read_bytes())])
        queue.enqueue(s, project, None)
    split = 0
    for name, on_mr in (("ana", "nodule"), ("ben", "mass")):
        for _ in range(2):
            with workspace.unit(name) as s:
                project, user = projects.get_project(s, "skilled"), users.get_user(s, name)
                task = queue.next_task(s, project, user).task
                assert task is not None
                split = split if task.item_id == agreed else task.item_id
                queue.submit(s, project, user, task.task_id,
                             {"label": "nodule" if task.item_id == agreed else on_mr})
    return split


def shot(page: Any, name: str) -> None:
    """Save a screenshot of the page for the docs (only when asked: it rewrites files)."""
    if os.environ.get("TRUTHSET_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"))


def shot_of(locator: Any, name: str) -> None:
    """Save a screenshot of one element for the docs (only when asked)."""
    if os.environ.get("TRUTHSET_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(SHOTS / f"{name}.png"))


def sign_in(browser: Any, server: Any, user: str, path: str) -> Any:
    """A new tab signed in as ``user`` on ``path`` (no cookies of an earlier user)."""
    for old in browser.pages:
        old.close()
    browser.clear_cookies()
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + path)
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.errors = errors  # type: ignore[attr-defined]
    return page


def drag(page: Any, points: list[tuple[float, float]]) -> None:
    """Press the left button at the first point, move through the others, release."""
    page.mouse.move(*points[0])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=3)
    page.mouse.up()


def viewport_centre(page: Any) -> tuple[float, float]:
    box = page.locator("#viewer .viewport").bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def api(server: Any, user: str) -> httpx.Client:
    """An API client signed in as ``user`` (cookie session; reads only)."""
    client = httpx.Client(base_url=server.url + "/api/v1")
    client.post("/auth/login", json={"username": user, "password": PASSWORD}).raise_for_status()
    return client


def overlay_pixels(page: Any) -> list[int]:
    """The RGBA bytes of the read-only overlay layer over the main image."""
    return page.evaluate("""() => {
        const c = document.querySelector('#viewer canvas.overlay');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
    }""")


def test_two_readers_disagree_on_boxes_and_masks_and_the_adjudicator_resolves_it(
    browser: Any, server: Any
) -> None:
    # Reader A: box + brush mask, submit with Enter.
    page = sign_in(browser, server, "ana", "/annotate?project=lesions")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    cx, cy = viewport_centre(page)
    page.keyboard.press("1")
    page.keyboard.press("b")
    drag(page, [(cx - 90, cy - 60), (cx - 40, cy - 10), (cx + 10, cy + 40)])
    page.keyboard.press("m")
    drag(page, [(cx + 40, cy - 60), (cx + 55, cy - 50), (cx + 70, cy - 40)])
    page.wait_for_timeout(400)  # the draft is saved a moment after the last change
    shot(page, "annotate")

    # A reload keeps the unsaved drawing.
    page.reload()
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    draft = page.evaluate("() => localStorage.getItem('truthset.draft.ana.lesions.annotate.1')")
    assert draft and '"type":"box"' in draft and '"type":"mask"' in draft
    page.keyboard.press("Enter")
    page.wait_for_selector("#queue-empty", timeout=10000)
    assert page.evaluate("() => localStorage.getItem('truthset.draft.ana.lesions.annotate.1')") \
        is None
    assert not page.errors

    # Reader B: a different class and a different box.
    page_b = sign_in(browser, server, "ben", "/annotate?project=lesions")
    page_b.wait_for_selector(".work[data-ready='1']", timeout=20000)
    cx, cy = viewport_centre(page_b)
    page_b.keyboard.press("2")
    page_b.keyboard.press("b")
    drag(page_b, [(cx - 20, cy - 20), (cx + 40, cy + 30), (cx + 70, cy + 60)])
    page_b.wait_for_timeout(300)
    page_b.click("#submit")
    page_b.wait_for_selector("#queue-empty", timeout=10000)
    assert not page_b.errors

    # Through the API: both reads, with their authors, versions and shapes.
    client = api(server, "max")
    try:
        reads = client.get("/projects/lesions/items/1/annotations").json()["items"]
    finally:
        client.close()
    by_author = {r["author"]: r for r in reads}
    assert set(by_author) == {"ana", "ben"}
    ana = by_author["ana"]["payload"]["objects"]
    assert {o["type"] for o in ana} == {"box", "mask"}
    assert all(o["label"] == "nodule" for o in ana)
    mask = next(o for o in ana if o["type"] == "mask")
    assert mask["rle"]["size"] == [128, 128] and sum(mask["rle"]["counts"]) == 128 * 128
    painted = sum(mask["rle"]["counts"][1::2])
    assert painted > 20  # painted pixels
    from pycocotools import mask as coco_mask

    area = coco_mask.area(coco_mask.frPyObjects(mask["rle"], 128, 128))
    assert int(area) == painted  # COCO reads the same pixels
    box = next(o for o in ana if o["type"] == "box")
    assert all(0 <= v <= 128 for v in box["bbox"]) and box["bbox"][2] > 5
    assert [o["label"] for o in by_author["ben"]["payload"]["objects"]] == ["mass"]
    for read in reads:
        assert read["schema_version"] == 1 and read["guideline_version"] == 1
        assert read["time_spent_s"] is not None and read["time_spent_s"] > 0

    # The adjudicator: both readers' objects side by side and overlaid, the fused consensus.
    page = sign_in(browser, server, "sam", "/adjudicate?project=lesions")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    assert page.locator("#reader-cards .reader-card").count() == 2
    assert page.locator("[data-reader=ana] .reader-label").inner_text() == \
        "1× box nodule, 1× mask nodule"
    assert page.locator("[data-reader=ben] .reader-label").inner_text() == "1× box mass"
    assert page.locator("#reader-cards .viewer-host.mini canvas").count() >= 2
    assert "under target" in page.inner_text("#escalation-reason") or \
        "target" in page.inner_text("#consensus")
    layers = page.locator("#overlay-legend .legend-item").evaluate_all(
        "els => els.map(e => e.dataset.layer)")
    assert {"ana", "ben"} <= set(layers)
    page.wait_for_timeout(300)
    both = overlay_pixels(page)
    page.locator("#overlay-legend [data-layer=ben] input").uncheck()
    without_ben = overlay_pixels(page)
    page.locator("#overlay-legend [data-layer=ben] input").check()
    assert both != without_ben and overlay_pixels(page) == both  # ben's box goes and comes back
    shot(page, "adjudicate")

    # Start from ana's objects, erase part of her mask, give the final label with a reason.
    page.evaluate("() => document.activeElement.blur()")  # keys went to the legend's box
    page.keyboard.press("Alt+1")
    page.wait_for_timeout(400)
    cx, cy = viewport_centre(page)
    page.keyboard.press("e")
    started = page.evaluate(
        "() => JSON.parse(localStorage.getItem('truthset.draft.sam.lesions.adjudicate.1'))")
    assert {o["type"] for o in started["payload"]["objects"]} == {"box", "mask"}
    # Where ana's mask is on screen: the middle of the filled area of her colour on the overlay.
    mx, my = page.evaluate("""() => {
        const c = document.querySelector('#viewer canvas.overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const red = (x, y) => { const i = 4 * (y * c.width + x);
            return d[i + 3] > 0 && d[i] > 150 && d[i + 1] < 140 && d[i + 2] < 140; };
        let sx = 0, sy = 0, n = 0;
        for (let y = 2; y < c.height - 2; y++) for (let x = 2; x < c.width - 2; x++)
            if (red(x, y) && red(x - 2, y) && red(x + 2, y) && red(x, y - 2) && red(x, y + 2)) {
                sx += x; sy += y; n++; }
        const r = c.getBoundingClientRect(), k = c.width / r.width;
        return [r.left + sx / n / k, r.top + sy / n / k];
    }""")
    drag(page, [(mx - 2, my), (mx + 2, my)])
    page.wait_for_timeout(400)
    page.click("#finalise")  # no reason yet: refused in the page, nothing sent
    page.wait_for_selector(".notice.error:has-text('reason')", timeout=5000)
    page.fill("#adjudication-reason", "Ana's nodule; the upper edge she painted is a vessel.")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#queue-empty", timeout=10000)
    assert not page.errors

    client = api(server, "max")
    try:
        final = client.get("/projects/lesions/items/1/consensus").json()
        reads = client.get("/projects/lesions/items/1/annotations").json()["items"]
    finally:
        client.close()
    assert final["status"] == "final" and final["method"] == "adjudication"
    by_id = {r["id"]: r for r in reads}
    inputs = [by_id[i] for i in final["input_annotation_ids"]]
    assert [(r["author"], r["source"]) for r in inputs] == [
        ("ana", "human"), ("ben", "human"), ("sam", "adjudication")]
    decision = inputs[-1]
    assert decision["payload"]["reason"] == \
        "Ana's nodule; the upper edge she painted is a vessel."
    assert decision["guideline_version"] == 1 and decision["time_spent_s"] > 0
    objects = final["label"]["objects"]
    assert "reason" not in final["label"]
    final_box = next(o for o in objects if o["type"] == "box")
    assert final_box["label"] == "nodule"
    assert final_box["bbox"] == pytest.approx(box["bbox"], abs=0.05)  # ana's box, kept
    final_mask = next(o for o in objects if o["type"] == "mask")
    kept = sum(final_mask["rle"]["counts"][1::2])
    assert 0 < kept < painted  # ana's mask, part of it erased
    ana_pixels = coco_mask.decode(coco_mask.frPyObjects(mask["rle"], 128, 128))
    final_pixels = coco_mask.decode(coco_mask.frPyObjects(final_mask["rle"], 128, 128))
    assert not (final_pixels & ~ana_pixels.astype(bool)).any()  # nothing painted outside hers


def label_and_submit(browser: Any, server: Any, user: str, project: str, key: str) -> None:
    """Sign in as ``user``, take the next task of ``project``, press ``key``, submit."""
    page = sign_in(browser, server, user, f"/annotate?project={project}")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    page.keyboard.press(key)
    page.keyboard.press("Enter")
    page.wait_for_selector("#queue-empty", timeout=10000)
    assert not page.errors
    page.close()


def test_disagreement_is_adjudicated_in_the_browser(browser: Any, server: Any) -> None:
    item = server.items["findings"]
    label_and_submit(browser, server, "ana", "findings", "2")  # nodule
    label_and_submit(browser, server, "ben", "findings", "3")  # mass

    page = sign_in(browser, server, "sam", "/adjudicate?project=findings")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    cards = page.locator("#reader-cards .reader-card")
    assert cards.count() == 2
    assert page.locator("[data-reader=ana] .reader-label").inner_text() == "nodule"
    assert page.locator("[data-reader=ben] .reader-label").inner_text() == "mass"
    # Each card carries the reader's figures (nothing scored or final yet in this project).
    assert page.locator("[data-reader=ana] [data-figure=gold]").inner_text() == \
        "Known answers: none read yet"
    assert "under target" in page.inner_text("#escalation-reason")
    page.keyboard.press("Alt+2")  # start from ben's label
    assert "chosen" in (page.locator("button.class[data-cls=mass]").get_attribute("class") or "")
    shot(page, "adjudicate-classes")
    page.click("#finalise")  # no reason yet: refused in the page, nothing sent
    page.wait_for_selector(".notice.error", timeout=5000)
    page.fill("#adjudication-reason", "30 mm across on the lung window: a mass.")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#queue-empty", timeout=10000)
    assert not page.errors

    client = api(server, "max")
    try:
        final = client.get(f"/projects/findings/items/{item}/consensus").json()
        reads = client.get(f"/projects/findings/items/{item}/annotations").json()["items"]
    finally:
        client.close()
    assert final["status"] == "final" and final["method"] == "adjudication"
    assert final["label"] == {"label": "mass"}
    by_id = {r["id"]: r for r in reads}
    inputs = [by_id[i] for i in final["input_annotation_ids"]]
    assert [(r["author"], r["source"]) for r in inputs] == [
        ("ana", "human"), ("ben", "human"), ("sam", "adjudication")]
    decision = inputs[-1]
    assert decision["payload"]["label"] == "mass"
    assert decision["payload"]["reason"] == "30 mm across on the lung window: a mass."
    assert decision["guideline_version"] == 1 and decision["time_spent_s"] > 0


def test_adjudicator_sees_each_readers_figures(browser: Any, server: Any) -> None:
    # ana and ben agreed on the CT (final) and split on the MR: sam sees, on each reader's card,
    # their agreement with the final consensus of their other item, from the task itself
    # (adjudicators cannot read reader statistics).
    page = sign_in(browser, server, "sam", "/adjudicate?project=skilled")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    for reader, label in (("ana", "nodule"), ("ben", "mass")):
        card = page.locator(f"[data-reader={reader}]")
        assert card.locator(".reader-label").inner_text() == label
        assert card.locator("[data-figure=consensus]").inner_text() == \
            "Final consensus: agreed on 1 of 1 other item (100%)"
        assert card.locator("[data-figure=gold]").inner_text() == "Known answers: none read yet"
    assert not page.errors
    client = api(server, "sam")
    try:
        assert client.get("/projects/skilled/readers").status_code == 403
    finally:
        client.close()


def test_reviewer_corrects_a_read_in_the_browser(browser: Any, server: Any) -> None:
    item = server.items["triage"]
    label_and_submit(browser, server, "ana", "triage", "1")  # normal

    page = sign_in(browser, server, "rita", "/review?project=triage")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    assert page.inner_text("#under-review") == "normal"
    page.keyboard.press("2")
    page.fill("#review-comment", "Small round opacity in the left lung.")
    shot(page, "review")
    page.click("#correct")
    page.wait_for_selector("#queue-empty", timeout=10000)
    assert not page.errors

    client = api(server, "max")
    try:
        final = client.get(f"/projects/triage/items/{item}/consensus").json()
        reads = client.get(f"/projects/triage/items/{item}/annotations").json()["items"]
    finally:
        client.close()
    assert final["status"] == "final" and final["label"] == {"label": "nodule"}
    corrected = next(r for r in reads if r["id"] == final["input_annotation_ids"][0])
    assert corrected["author"] == "rita" and corrected["parent_id"] is not None


def test_reviewer_edits_the_annotators_boxes(browser: Any, server: Any) -> None:
    """Review of a box read: the annotator's box is drawn on the image and loaded for editing;
    an unchanged correction is refused in the page; the reviewer adds the box the annotator
    missed and corrects with a comment; the final label is the edited objects."""
    item = server.items["boxreview"]
    page = sign_in(browser, server, "ana", "/annotate?project=boxreview")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    cx, cy = viewport_centre(page)
    page.keyboard.press("1")
    page.keyboard.press("b")
    drag(page, [(cx - 60, cy - 60), (cx - 30, cy - 30), (cx - 10, cy - 10)])
    page.wait_for_timeout(300)
    page.keyboard.press("Enter")
    page.wait_for_selector("#queue-empty", timeout=10000)
    assert not page.errors
    page.close()

    page = sign_in(browser, server, "rita", "/review?project=boxreview")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    assert page.inner_text("#under-review") == "1× box nodule"
    assert any(overlay_pixels(page)[3::4])  # ana's box is drawn over the image
    page.fill("#review-comment", "A second, smaller mass below.")
    page.evaluate("() => document.activeElement.blur()")
    page.click("#correct")  # nothing changed yet: refused in the page
    page.wait_for_selector(".notice.error:has-text('must change the objects')", timeout=5000)
    cx, cy = viewport_centre(page)
    page.keyboard.press("2")
    page.keyboard.press("b")
    drag(page, [(cx + 20, cy + 20), (cx + 40, cy + 40), (cx + 60, cy + 60)])
    page.wait_for_timeout(300)
    page.click("#correct")
    page.wait_for_selector("#queue-empty", timeout=10000)
    assert not page.errors

    client = api(server, "max")
    try:
        final = client.get(f"/projects/boxreview/items/{item}/consensus").json()
        reads = client.get(f"/projects/boxreview/items/{item}/annotations").json()["items"]
    finally:
        client.close()
    by_author = {r["author"]: r for r in reads}
    assert final["status"] == "final" and final["method"] == "review"
    assert sorted(o["label"] for o in final["label"]["objects"]) == ["mass", "nodule"]
    corrected = by_author["rita"]
    assert corrected["parent_id"] == by_author["ana"]["id"]
    kept = next(o for o in corrected["payload"]["objects"] if o["label"] == "nodule")
    original = by_author["ana"]["payload"]["objects"][0]
    assert kept["bbox"] == pytest.approx(original["bbox"], abs=0.05)

    # The manager's cost panel counts the item in both classes its final label shows, and
    # says the class rows may add up to more items than the policy rows.
    page = sign_in(browser, server, "max", "/dashboard?project=boxreview")
    page.wait_for_selector("#cost .cost-classes tbody tr", timeout=20000)
    heads = page.locator("#cost .cost-classes thead th").all_inner_texts()
    assert heads[0] == "class present" and heads[-1] == "also in other classes"
    cells = [r.locator("td").all_inner_texts()
             for r in page.locator("#cost .cost-classes tbody tr").all()]
    assert [(c[0], c[1], c[-1]) for c in cells] == [("nodule", "1", "1"), ("mass", "1", "1")]
    assert "may add up to more items than the policy rows" in page.inner_text(
        "#cost-class-note")
    assert not page.errors
    page.close()


def test_skip_and_flag_in_the_browser(browser: Any, server: Any) -> None:
    item = server.items["unclear"]
    # Ana skips: the task goes back to the pool and she is not offered the item again.
    page = sign_in(browser, server, "ana", "/annotate?project=unclear")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    page.keyboard.press("s")
    page.wait_for_selector("#queue-empty", timeout=10000)
    assert not page.errors
    page.close()
    # Ben flags it as unclear with a reason: no read, the item goes to adjudication.
    page = sign_in(browser, server, "ben", "/annotate?project=unclear")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    page.click("#flag")
    page.fill("#reason-input", "Motion artefact over the lung base.")
    page.click("#reason-ok")
    page.wait_for_selector("#queue-empty", timeout=10000)
    assert not page.errors
    page.close()

    client = api(server, "max")
    try:
        reads = client.get(f"/projects/unclear/items/{item}/annotations").json()["items"]
        escalated = client.get("/projects/unclear/escalations").json()
    finally:
        client.close()
    assert reads == []
    assert [e["reason"] for e in escalated] == [
        "unclear at annotate: Motion artefact over the lung base."]

    # The manager's dashboards show the queue, cost and per-class agreement panels.
    page = sign_in(browser, server, "max", "/dashboard?project=unclear")
    page.wait_for_selector("#queue-escalations:has-text('open escalations: 1')", timeout=20000)
    page.wait_for_selector("#dashboards .panel:has-text('Queue') table", timeout=20000)
    page.wait_for_selector("#dashboards .panel:has-text('Cost per final label')", timeout=20000)
    page.wait_for_selector(
        "#dashboards .panel:has-text('Agreement per class') p:has-text('no labels yet')",
        timeout=20000)
    assert not page.errors
    page.close()


def test_releases_dashboards_and_audit_pages(browser: Any, server: Any) -> None:
    # The manager freezes and signs a release of the adjudicated project in the browser.
    page = sign_in(browser, server, "max", "/releases?project=findings")
    page.wait_for_selector("#release-list", timeout=10000)
    page.click("summary:has-text('New release')")
    page.fill("#release-name", "v1")
    page.fill("#release-exclude-unresolved", "still in the workflow")
    page.click("button:has-text('Freeze release')")
    page.wait_for_selector("[data-release=v1]", timeout=15000)
    page.fill("#sign-password", "not my password")
    page.click("#sign")
    page.wait_for_selector(".notice.error:has-text('Wrong password')", timeout=10000)
    page.fill("#sign-password", PASSWORD)
    page.select_option("#sign-meaning", "approved for training")
    page.click("#sign")
    page.wait_for_selector(".releases-table:has-text('approved for training')", timeout=10000)
    page.click("#verify-release")
    page.wait_for_selector("text=verified", timeout=15000)
    shot(page, "releases")

    # The overdue check last ran 40 minutes ago (more than two 15-minute periods): late.
    stale = utcnow() - timedelta(minutes=40)
    assert run_due(server.workspace, OVERDUE_CHECK, now=stale).ran
    page.goto(server.url + "/dashboard?project=findings")
    page.wait_for_selector("#overdue-check[data-state='late']", timeout=20000)
    warning = page.inner_text("#overdue-warning")
    assert re.search(r"The overdue check is late: it last ran 4[01] min ago, more than two "
                     r"periods \(2 × 15 min\)\. No truthset serve or worker is keeping time",
                     warning), warning
    last = page.inner_text("#overdue-last")
    assert re.fullmatch(re.escape("Overdue escalations last checked ") + "4[01]" + re.escape(
        f" min ago ({stale:%Y-%m-%d %H:%M:%S} UTC) by the server: succeeded; raised in this "
        "project at that check: 0."), last), last
    shot_of(page.locator("#dashboards .panel:has(#overdue-check)"), "dashboard-overdue-check")
    # It runs now: no warning; the next check is due on the next quarter hour.
    assert run_due(server.workspace, OVERDUE_CHECK).ran
    page.reload()
    page.wait_for_selector("#overdue-check[data-state='ok']", timeout=20000)
    assert page.locator("#overdue-warning").count() == 0
    assert re.fullmatch(r"Overdue escalations last checked just now \(\d{4}-\d\d-\d\d "
                        r"\d\d:\d\d:\d\d UTC\) by the server: succeeded; raised in this "
                        r"project at that check: 0\.", page.inner_text("#overdue-last"))
    shown = re.fullmatch(r"Checked every 15 min; next check due (\d{4}-\d\d-\d\d "
                         r"\d\d:\d\d:\d\d) UTC \((in \d+ min|in under a minute)\)\.",
                         page.inner_text("#overdue-next"))
    assert shown, page.inner_text("#overdue-next")
    due = datetime.strptime(shown[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert due.minute % 15 == 0 and due.second == 0
    assert timedelta(0) < due - utcnow() <= timedelta(minutes=15)
    page.wait_for_selector("#dashboards .panel:has-text('Agreement between readers') table",
                           timeout=20000)
    page.wait_for_selector("#dashboards .panel:has-text('Escalations') table", timeout=20000)
    # Agreement over time: one period (today) with the two disagreeing reads.
    page.wait_for_selector("#agreement-trend[data-periods='1'] table", timeout=20000)
    assert page.locator("#agreement-trend svg.trend .trend-point").count() == 1
    # Leaderboard against the adjudicated label: ben said mass (final), ana nodule.
    page.wait_for_selector(".leaderboard", timeout=20000)
    board = {row[0]: row for row in (
        r.locator("td").all_inner_texts() for r in page.locator(".leaderboard tbody tr").all())}
    assert board["ben"][2] == "100% of 1" and board["ana"][2] == "0% of 1"
    assert page.locator("#confusion svg rect").count() == 9
    assert page.locator("#dashboards .panel").count() >= 4
    shot(page, "dashboard")
    # Switched off in the server's settings: a plain warning, no next check.
    config = server.workspace.config
    server.workspace.config = replace(config, escalation_check_minutes=0)
    try:
        page.reload()
        page.wait_for_selector("#overdue-check[data-state='off']", timeout=20000)
        assert page.inner_text("#overdue-warning") == (
            "⚠ The overdue check is off (escalation_check_minutes: 0): overdue escalations are "
            "raised a tier only by hand (truthset escalations KEY --raise-overdue).")
        assert page.locator("#overdue-next").count() == 0
    finally:
        server.workspace.config = config
    assert not page.errors
    page.close()

    # The auditor reads the project's audit trail, filtered by the server, page by page.
    audit_ui(browser, server)


def audit_ui(browser: Any, server: Any) -> None:
    """The audit page filters through the API, keeps the filters in the address (a reload or
    a shared link shows the same view), loads more by cursor, names a bad filter, and verifies
    the chain."""
    page = sign_in(browser, server, "audrey", "/audit?project=findings&limit=5")
    page.wait_for_selector(".audit-table tbody tr", timeout=10000)
    page.fill("#f-actor", "sam")
    page.click("#audit-apply")
    page.wait_for_url("**actor=sam**", timeout=5000)
    page.wait_for_selector("#audit-count:has-text('matching')", timeout=5000)
    actors = page.locator(".audit-table tbody tr td:nth-child(3)").all_inner_texts()
    assert actors and set(actors) == {"sam"}

    # The same view after a reload (a shared link): the form and the rows.
    page.reload()
    page.wait_for_selector(".audit-table tbody tr", timeout=10000)
    assert page.input_value("#f-actor") == "sam"
    assert set(page.locator(".audit-table tbody tr td:nth-child(3)").all_inner_texts()) \
        == {"sam"}

    # Every event of the project, five at a time, newest first, to the end.
    page.fill("#f-actor", "")
    page.click("#audit-apply")
    page.wait_for_function("() => !location.search.includes('actor=')", timeout=5000)
    page.wait_for_selector("#audit-more:visible", timeout=5000)
    for _ in range(40):
        if not page.locator("#audit-more").is_visible():
            break
        before = page.locator(".audit-table tbody tr").count()
        page.click("#audit-more")
        page.wait_for_function(
            f"() => document.querySelectorAll('.audit-table tbody tr').length > {before}",
            timeout=5000)
    seqs = [int(t) for t in page.locator(".audit-table tbody tr td:nth-child(1)")
            .all_inner_texts()]
    client = api(server, "audrey")
    try:
        expected = client.get("/audit/events", params={"project": "findings", "limit": 500,
                                                       "order": "desc"}).json()["items"]
    finally:
        client.close()
    assert seqs == [e["seq"] for e in expected][: len(seqs)] and len(seqs) > 5
    assert seqs == sorted(set(seqs), reverse=True)

    # A time range and the action and entity filters together; then one entity's history.
    first = expected[-1]
    page.goto(server.url + "/audit?project=findings&entity_type=consensus&action=create"
              f"&since={first['at'][:19]}Z")
    page.wait_for_selector("#audit-count:has-text('matching')", timeout=10000)
    entities = page.locator(".audit-table tbody tr td:nth-child(5)").all_inner_texts()
    assert entities and all(e.startswith("consensus ") for e in entities)
    assert set(page.locator(".audit-table tbody tr td:nth-child(4)").all_inner_texts()) \
        == {"create"}
    page.fill("#f-action", "")
    page.locator(".audit-table tbody tr td:nth-child(5) button").first.click()
    page.wait_for_url("**entity_id=**", timeout=5000)
    # The table is redrawn from the new filter (the old count already said "matching").
    page.wait_for_function("""(entity) => {
        const cells = [...document.querySelectorAll('.audit-table tbody tr td:nth-child(5)')];
        return cells.length > 0 && cells.every((c) => c.innerText.trim() === entity);
    }""", arg=entities[0], timeout=5000)
    assert set(page.locator(".audit-table tbody tr td:nth-child(5)").all_inner_texts()) \
        == {entities[0]}

    # A bad filter in a link is named, not ignored.
    page.goto(server.url + "/audit?project=findings&since=yesterday")
    page.wait_for_selector("#audit-error:has-text('since')", timeout=10000)
    assert page.get_attribute("#f-since", "aria-invalid") is not None

    # The chain verifies.
    page.goto(server.url + "/audit?project=findings&action=create")
    page.wait_for_selector(".audit-table tbody tr", timeout=10000)
    page.click("#verify")
    page.wait_for_selector("#chain-result:has-text('Chain intact')", timeout=15000)
    shot(page, "audit")
    assert not page.errors
    page.close()


def test_sign_in_page_tells_wrong_passwords_plainly(browser: Any, server: Any) -> None:
    browser.clear_cookies()
    page = browser.new_page()
    page.set_viewport_size({"width": 1000, "height": 640})
    page.goto(server.url + "/annotate")
    page.wait_for_selector("#username")
    shot(page, "login")
    page.fill("#username", "ana")
    page.fill("#password", "wrong password entirely")
    page.click("#sign-in")
    page.wait_for_selector(".form-error:has-text('Wrong user name or password')")
    page.close()


def test_series_scrolls_and_opens_in_three_planes(browser: Any, server: Any) -> None:
    page = sign_in(browser, server, "ben", "/annotate?project=volumes")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    assert "Image 1 / 12" in page.inner_text(".viewer-status")
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    page.wait_for_selector(".viewer-status:has-text('Image 4 / 12')", timeout=5000)
    page.keyboard.press("v")
    page.wait_for_selector("#viewer[data-mpr='1']", timeout=20000)
    planes = page.locator("#mpr-views .mpr-view")
    assert planes.count() == 3
    assert sorted(planes.evaluate_all("els => els.map(e => e.dataset.plane)")) == [
        "axial", "coronal", "sagittal"]
    assert planes.locator("canvas").count() >= 3
    page.wait_for_timeout(500)
    shot(page, "mpr")
    page.keyboard.press("v")
    assert page.locator("#mpr-views").count() == 0
    assert not page.errors
    page.close()


def test_series_loads_through_dicomweb(browser: Any, server: Any) -> None:
    """The viewer finds the series by QIDO-RS, reads its metadata and fetches every frame it
    shows by WADO-RS (multipart), with the session cookie; never the item's media file."""
    import io

    import numpy as np
    from PIL import Image

    seen: list[tuple[str, int]] = []

    def log(response: Any) -> None:
        seen.append((response.url, response.status))

    browser.on("response", log)
    try:
        page = sign_in(browser, server, "ben", "/annotate?project=volumes")
        page.wait_for_selector(".work[data-ready='1']", timeout=20000)
        viewport = page.locator("#viewer .viewport")
        first = viewport.get_attribute("data-image-id") or ""
        page.wait_for_timeout(300)
        shown = np.asarray(Image.open(io.BytesIO(viewport.screenshot())).convert("L"))
        for _ in range(3):
            page.keyboard.press("ArrowDown")
        page.wait_for_selector(".viewer-status:has-text('Image 4 / 12')", timeout=5000)
        fourth = viewport.get_attribute("data-image-id") or ""
        page.wait_for_timeout(300)
        scrolled = np.asarray(Image.open(io.BytesIO(viewport.screenshot())).convert("L"))
        assert not page.errors
        page.close()
    finally:
        browser.remove_listener("response", log)

    root = f"{server.url}/dicomweb/projects/volumes/studies/"
    assert first.startswith(f"wadors:{root}") and first.endswith("/frames/1")
    assert fourth.startswith(f"wadors:{root}") and fourth != first
    frames = [url for url, _ in seen if url.startswith(root) and "/frames/" in url]
    assert {first[len("wadors:"):], fourth[len("wadors:"):]} <= set(frames)
    assert all(status == 200 for url, status in seen if url.startswith(root))
    assert any(url.endswith("/metadata") for url, _ in seen if url.startswith(root))
    assert any("/instances" in url and "/frames/" not in url and not url.endswith("/metadata")
               for url, _ in seen if url.startswith(root))  # the QIDO-RS search
    assert not [url for url, _ in seen if "/media/" in url]
    # The image was drawn (not a blank canvas), and scrolling showed another slice.
    assert shown.std() > 5 and scrolled.std() > 5
    assert np.abs(shown.astype(int) - scrolled.astype(int)).mean() > 0.5


def test_expired_session_and_network_failure_lose_nothing(browser: Any, server: Any) -> None:
    page = sign_in(browser, server, "ana", "/annotate?project=volumes")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    cx, cy = viewport_centre(page)
    page.keyboard.press("b")
    drag(page, [(cx - 40, cy - 40), (cx, cy), (cx + 30, cy + 30)])
    page.wait_for_timeout(400)

    # The server cannot be reached: told plainly, nothing lost.
    page.route("**/api/v1/projects/volumes/items/*/annotations", lambda route: route.abort())
    page.keyboard.press("Enter")
    page.wait_for_selector(".notice.error:has-text('Cannot reach the server')", timeout=10000)
    page.unroute("**/api/v1/projects/volumes/items/*/annotations")

    # The session ends (cookie gone): sent to sign in, then back to the drawing.
    page.context.clear_cookies()
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Your session has expired", timeout=10000)
    assert "/login" in page.url and "expired=1" in page.url
    page.fill("#username", "ana")
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    page.wait_for_selector(".notice.ok:has-text('Restored your unsaved work')", timeout=10000)
    page.keyboard.press("Enter")
    page.wait_for_selector("#queue-empty", timeout=10000)
    assert not page.errors
    client = api(server, "max")
    try:
        item = server.items["volumes"]
        reads = client.get(f"/projects/volumes/items/{item}/annotations").json()["items"]
    finally:
        client.close()
    assert [r["author"] for r in reads] == ["ana"]
    assert [o["type"] for o in reads[0]["payload"]["objects"]] == ["box"]


def test_brush_paints_a_3d_mask_in_three_planes(browser: Any, server: Any) -> None:
    """On a CT series the brush paints the volume from the sagittal plane (a stroke across
    slices); the read is one 3D mask [slices, rows, columns] whose voxels lie on the stroke,
    kept over a reload and decoded by the server's own codec."""
    from truthset.quality.payloads import decode_mask

    page = sign_in(browser, server, "ben", "/annotate?project=volumes")
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    page.keyboard.press("1")
    page.keyboard.press("v")
    page.wait_for_selector("#viewer[data-mpr='1'] #mpr-views[data-editable='1']", timeout=20000)
    page.keyboard.press("m")
    page.wait_for_selector("#mpr-views[data-tool='brush']", timeout=5000)
    page.wait_for_timeout(500)
    view = page.locator("#mpr-views .mpr-view[data-plane='sagittal']").bounding_box()
    cx, cy = view["x"] + view["width"] / 2, view["y"] + view["height"] / 2
    # A vertical stroke on the sagittal plane runs head to foot: across the slices.
    drag(page, [(cx, cy - view["height"] * 0.12), (cx, cy), (cx, cy + view["height"] * 0.12)])
    page.wait_for_timeout(300)
    shot(page, "mpr-brush")
    page.keyboard.press("v")
    page.wait_for_function("() => !document.querySelector('#mpr-views')", timeout=5000)
    page.wait_for_timeout(400)
    key = f"truthset.draft.ben.volumes.annotate.{server.items['volumes']}"
    draft = page.evaluate(f"() => localStorage.getItem('{key}')")
    assert draft and '"shape":[12,64,64]' in draft

    # A reload keeps the 3D stroke (restored into the slices), and submit sends it.
    page.reload()
    page.wait_for_selector(".work[data-ready='1']", timeout=20000)
    page.wait_for_selector(".notice.ok:has-text('Restored your unsaved work')", timeout=10000)
    page.keyboard.press("Enter")
    page.wait_for_selector("#queue-empty", timeout=10000)
    assert not page.errors
    page.close()

    client = api(server, "max")
    try:
        reads = client.get(f"/projects/volumes/items/{server.items['volumes']}/annotations"
                           ).json()["items"]
    finally:
        client.close()
    [read] = [r for r in reads if r["author"] == "ben"]
    [obj] = read["payload"]["objects"]
    assert obj["type"] == "mask" and obj["label"] == "nodule"
    assert obj["mask"]["shape"] == [12, 64, 64]
    volume = decode_mask(obj["mask"])
    assert '"runs":' in draft and volume.sum() > 20
    slices = np.flatnonzero(volume.any(axis=(1, 2)))
    columns = np.flatnonzero(volume.any(axis=(0, 1)))
    assert len(slices) >= 3, slices  # painted through several slices
    assert columns.min() >= 20 and columns.max() <= 44, columns  # around the sagittal plane
    # The same voxels as the draft that was on screen before the reload.
    kept = json.loads(draft)["payload"]["objects"][0]["mask"]
    assert np.array_equal(decode_mask(kept), volume)


# -- background jobs ------------------------------------------------------------------------------
#: Steps the test allows the ``e2e-stepped`` job to take (one ``release()`` per step).
_STEPS = threading.Semaphore(0)
_STEPPED_TOTAL = 8


def _stepped(ctx: JobContext) -> dict[str, Any]:
    """A job that reports ``k / 8`` and then waits (at most 30 s) until the test lets it take
    the next step: its progress moves exactly when the test says, and a cancellation is seen
    at the next report, as in the real kinds."""
    for k in range(_STEPPED_TOTAL):
        ctx.progress(k, _STEPPED_TOTAL, f"{k} of {_STEPPED_TOTAL} steps done")
        _STEPS.acquire(timeout=30)
    return {"steps": _STEPPED_TOTAL}


register_kind(JobKind("e2e-stepped", _stepped, lambda _params: None, "test: steps on demand"))


def _queue_stepped(workspace: Any, project: str) -> int:
    from truthset.jobs import service as jobs
    from truthset.workspace import projects

    with workspace.unit("max") as s:
        return jobs.enqueue(workspace, s, "e2e-stepped", {"project": project},
                            project=projects.get_project(s, project), actor="max").id


def _set_hidden(page: Any, hidden: bool) -> None:
    """Tell the page its tab is hidden (or visible again), as a browser does."""
    page.evaluate("""(hidden) => {
        if (hidden) {
            Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
        } else {
            delete document.hidden;
        }
        document.dispatchEvent(new Event('visibilitychange'));
    }""", hidden)


def test_jobs_page_follows_cancels_and_starts_jobs(browser: Any, server: Any) -> None:
    from truthset.auth import memberships
    from truthset.prelabel import service as prelabel
    from truthset.workspace import projects, users

    ws = server.workspace
    with ws.unit("max") as s:
        prelabel.register_model(s, projects.get_project(s, "triage"), name="thr", version="1",
                                kind="classical", classes=["normal", "nodule"],
                                config={"thresholds": {"nodule": [0.5, 1.0]},
                                        "positive": "nodule", "negative": "normal"})
    first = _queue_stepped(ws, "triage")
    row = f"tr[data-job='{first}']"
    try:
        # An annotator has no Jobs page in the navigation; at its address, the API's refusal.
        page = sign_in(browser, server, "ana", "/jobs?project=triage")
        page.wait_for_selector("#jobs-error:has-text('Not allowed')", timeout=20000)
        assert page.inner_text("#jobs-error") == \
            "Not allowed: 'ana' may not stats.read in this project"
        assert page.locator("nav a[data-nav=jobs]").count() == 0
        assert page.locator(".job-cancel").count() == 0
        assert page.locator("#job-start").count() == 0
        assert not page.errors
        page.close()

        # The auditor follows the running job but has no control over it.
        page = sign_in(browser, server, "audrey", "/jobs?project=triage")
        page.wait_for_selector(f"{row}[data-status='running']", timeout=20000)
        assert page.locator(".job-cancel").count() == 0
        assert page.locator("#job-start").count() == 0
        assert not page.errors
        page.close()

        # The manager sees its progress advance, step by step as the job reports it.
        page = sign_in(browser, server, "max", "/dashboard?project=triage")
        page.wait_for_selector("#dashboards .panel", timeout=20000)
        page.click("nav a[data-nav=jobs]")
        page.wait_for_selector(f"{row} .job-count:text-is('0 / 8')", timeout=20000)
        assert page.get_attribute("#jobs", "data-polling") == "on"
        for done in (1, 2):
            _STEPS.release()
            page.wait_for_selector(f"{row} .job-count:text-is('{done} / 8')", timeout=20000)
            assert page.eval_on_selector(f"{row} progress", "p => [p.value, p.max]") == [done, 8]
            assert page.inner_text(f"{row} .job-message") == f"{done} of 8 steps done"
        client = api(server, "max")
        try:
            shown = client.get(f"/projects/triage/jobs/{first}").json()
        finally:
            client.close()
        for cell, key in (("created", "created_at"), ("started", "started_at")):
            at = datetime.fromisoformat(shown[key]).astimezone(UTC)
            assert page.inner_text(f"{row} .job-{cell}") == f"{at:%Y-%m-%d %H:%M:%S} UTC"
        assert page.inner_text(f"{row} .job-finished") == "—"
        assert page.inner_text(f"{row} .job-by") == "max"

        # A hidden tab asks nothing; shown again, it catches up at once.
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/jobs" in r.url else None)
        _set_hidden(page, True)
        page.wait_for_selector("#jobs[data-polling='paused']", timeout=5000)
        asked.clear()
        _STEPS.release()
        page.wait_for_timeout(2500)
        assert asked == [] and page.inner_text(f"{row} .job-count") == "2 / 8"
        _set_hidden(page, False)
        page.wait_for_selector(f"{row} .job-count:text-is('3 / 8')", timeout=10000)
        shot(page, "jobs")

        # Cancel: the running job is asked to stop, stops at its next report, and the page
        # stops asking once nothing runs.
        page.click(f"{row} .job-cancel")
        page.wait_for_selector(f"{row} .job-status:text-is('running — cancelling')",
                               timeout=10000)
        assert page.locator(f"{row} .job-cancel").is_hidden()
        _STEPS.release()
        page.wait_for_selector(f"{row}[data-status='cancelled']", timeout=20000)
        page.wait_for_selector("#jobs[data-polling='off']", timeout=20000)
        client = api(server, "max")
        try:
            cancelled = client.get(f"/projects/triage/jobs/{first}").json()
        finally:
            client.close()
        assert (cancelled["status"], cancelled["cancel_requested"]) == ("cancelled", True)
        assert cancelled["progress"] == {"done": 4, "total": 8}
        ended = datetime.fromisoformat(cancelled["finished_at"]).astimezone(UTC)
        assert page.inner_text(f"{row} .job-finished") == f"{ended:%Y-%m-%d %H:%M:%S} UTC"

        # Starting jobs: the registered model is offered; a bad export name is refused by the
        # API, naming the parameter; a good one runs to its result.
        page.select_option("#job-kind", "prelabel")
        client = api(server, "max")
        try:
            (model,) = client.get("/projects/triage/prelabel/models").json()
        finally:
            client.close()
        assert page.inner_text("#job-model option") == \
            f"thr v1 (classical; {', '.join(model['classes'])})"
        page.select_option("#job-kind", "export")
        page.fill("#job-export-name", "../reads.csv")
        page.click("#job-submit")
        page.wait_for_selector("#job-start-error:has-text('params.name')", timeout=10000)
        page.fill("#job-export-name", "triage-reads.csv")
        page.click("#job-submit")
        page.wait_for_selector("tr[data-job][data-status='succeeded'] .job-result"
                               ":has-text('exports/triage-reads.csv')", timeout=20000)
        exported = int(page.get_attribute(
            "tr[data-status='succeeded']:has(.job-result:has-text('triage-reads.csv'))",
            "data-job"))
        client = api(server, "max")
        try:
            job = client.get(f"/projects/triage/jobs/{exported}").json()
        finally:
            client.close()
        assert (job["kind"], job["status"], job["created_by"]) == ("export", "succeeded", "max")
        assert job["params"] == {"name": "triage-reads.csv", "format": "csv",
                                 "project": "triage"}
        assert (ws.root / "exports" / "triage-reads.csv").is_file()

        # A manager who lost the role meanwhile: the API refuses the cancel, said plainly.
        # (Queued elsewhere while nothing ran: the page was not asking; Refresh asks now.)
        second = _queue_stepped(ws, "triage")
        page.click("#jobs-refresh")
        page.wait_for_selector(f"tr[data-job='{second}'] .job-cancel:visible", timeout=20000)
        with ws.unit("test") as s:
            memberships.remove_member(s, projects.get_project(s, "triage"),
                                      users.get_user(s, "max"), "manager")
        try:
            page.click(f"tr[data-job='{second}'] .job-cancel")
            page.wait_for_selector("#jobs-error:has-text('Not allowed')", timeout=10000)
            assert page.inner_text("#jobs-error").startswith("Not allowed: 'max' may not ")
        finally:
            with ws.unit("test") as s:
                memberships.add_member(s, projects.get_project(s, "triage"),
                                       users.get_user(s, "max"), "manager")
        for _ in range(_STEPPED_TOTAL):
            _STEPS.release()
        from truthset.jobs.service import wait_for

        assert wait_for(ws, second, timeout_s=30).status == "succeeded"
        assert not page.errors
        page.close()
    finally:
        for _ in range(2 * _STEPPED_TOTAL):  # never leave a job waiting on the test
            _STEPS.release()
