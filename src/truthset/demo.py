"""``truthset demo``: a small, complete project built offline in seconds.

Real medical images that ship inside installed packages (nibabel's MR volume, pydicom's CT, MR
and ultrasound files) become items. Simulated readers of different skill grade each image's
diagnostic quality (an ordinal schema); the simulated grades are *made up*, drawn around a
hidden "true" grade so that the consensus can be scored. The readers work through the real
workflow services: a stored policy (five blinded reads, majority vote, adjudication of split
votes), a calibration batch each reader must pass (one trainee does not), gold items mixed into
the queues and scored, ``next_task``/``submit`` for every read, escalations taken by the senior
reader through the same queue. The reads are replayed over :data:`READ_DAYS` days through the
queue's clock, so the agreement-over-time chart has a point per day. Then agreement is
measured, a quality audit escalates the least-agreed items, and two signed releases and their
diff are written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.domain.errors import InputError
from truthset.quality.aggregation.registry import make_aggregator
from truthset.release import diff as release_diff
from truthset.release import service as releases
from truthset.store.models import Consensus, Item, Project, utcnow
from truthset.workflow import escalations, policies, queue
from truthset.workflow import readers as readers_mod
from truthset.workflow.annotations import current_labels
from truthset.workspace import imports, projects, users
from truthset.workspace.workspace import Workspace

PROJECT_KEY = "image-quality"
ACTOR = "demo"

SCHEMA_YAML = """\
name: diagnostic image quality
kind: classification
mode: ordinal
description: Is this image good enough to read? One grade per image.
classes:
  - name: excellent
    definition: No artefact; every structure of interest is clearly seen.
    risk: low
  - name: adequate
    definition: Minor artefact or noise; diagnosis not affected.
    risk: low
  - name: limited
    definition: Artefact, motion or noise that could hide a finding.
    risk: medium
  - name: non-diagnostic
    definition: The image cannot be used to rule a finding in or out; repeat it.
    risk: high
"""

GUIDELINE_MD = """\
# Grading diagnostic image quality

Grade the image as shown, at the default window. Judge only what a reader could rule in or out.

- **excellent**: nothing degrades the image.
- **adequate**: some noise or artefact, but you would report from it without a caveat.
- **limited**: you would report with a caveat ("motion limits assessment of …").
- **non-diagnostic**: you would ask for a repeat.

When torn between two grades, choose the worse one.
"""

#: Simulated readers: user name, tier, probability of giving the true grade.
READERS: tuple[tuple[str, int, float], ...] = (
    ("ana", 1, 0.92),
    ("ben", 1, 0.85),
    ("chloe", 1, 0.78),
    ("dev", 1, 0.68),
    ("eli", 1, 0.50),
)
STAFF: tuple[tuple[str, str, int], ...] = (
    ("rita", "reviewer", 2),
    ("sam", "adjudicator", 3),
    ("max", "manager", 1),
)
#: The demo's release approver (a manager who re-enters this password to sign).
APPROVER = ("quinn", "Quinn Approver")
APPROVER_PASSWORD = "demo-approver-password"
GUIDELINE_V2_NOTE = "Motion on more than one slice: grade 'limited' at best."
TRUE_GRADE_PRIOR = (0.3, 0.4, 0.2, 0.1)
#: A new reader who does not pass the calibration batch (and so never reads a real item).
TRAINEE = ("tia", 1, 0.25)
#: The senior reader who takes escalations, and how often their grade is the true one.
ADJUDICATOR = "sam"
ADJUDICATOR_SKILL = 0.95
N_CALIBRATION = 3
N_GOLD = 3
#: The simulated reads are replayed over this many days, ending a day before the demo runs
#: (each read stamped through the queue's clock), so agreement over time has several days.
READ_DAYS = 6
#: Five blinded reads per item, majority vote; a split vote (under 3 of 5) is adjudicated.
#: Every reader passes a calibration batch first; gold items are mixed into the queues.
DEMO_POLICY = """\
name: demo-consensus
workflow: consensus
k: 5
method: mv
target: 0.6
calibration: {threshold: 0.6}
gold: {rate: 0.15, threshold: 0.3, min_reads: 3}
escalation: {deadline_hours: 24}
"""


@dataclass(frozen=True)
class ReleaseSummary:
    """A release the demo made and wrote out."""

    name: str
    folder: Path
    n_items: int
    n_excluded: int
    manifest_sha256: str


@dataclass
class DemoResult:
    """What the demo made and measured."""

    folder: Path
    n_items: int
    n_reads: int
    release: ReleaseSummary
    readers: pd.DataFrame
    second_release: ReleaseSummary | None = None
    diff: dict[str, Any] = field(default_factory=dict)
    agreement: list[dict[str, Any]] = field(default_factory=list)
    consensus_accuracy: dict[str, float] = field(default_factory=dict)
    #: What the workflow did: reads, adjudications, escalations, readers turned away (and
    #: why), and each reader's record on the known-answer items.
    workflow: dict[str, Any] = field(default_factory=dict)


def _to_png(pixels: np.ndarray, path: Path, *, scale: int = 1) -> None:
    """Write a 2D (or RGB) array as an 8-bit PNG, stretched between its 1st and 99th
    percentiles."""
    array = np.asarray(pixels, dtype=np.float64)
    lo, hi = np.percentile(array, [1, 99])
    scaled = np.clip((array - lo) / max(hi - lo, 1e-9), 0, 1) * 255
    image = Image.fromarray(scaled.astype(np.uint8))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.LANCZOS)
    image.save(path, optimize=False)


def sample_images(folder: Path) -> dict[str, dict[str, str]]:
    """Write the demo's real sample images as PNG files; return each one's metadata."""
    import nibabel as nib
    import pydicom.examples

    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, dict[str, str]] = {}
    volume = nib.load(Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii")
    data = np.asarray(volume.dataobj)  # type: ignore[attr-defined]
    for z in range(4, data.shape[2] - 3):
        name = f"mr-head-slice{z:02d}.png"
        _to_png(np.rot90(data[:, :, z]), folder / name, scale=6)
        meta[name] = {"modality": "MR", "body_part": "HEAD", "site": "site-A",
                      "patient_pseudonym": "P-0001"}
    for name, ds, body in (("ct-small.png", pydicom.examples.ct, "CHEST"),
                           ("mr-small.png", pydicom.examples.mr, "HEAD")):
        _to_png(ds.pixel_array, folder / name, scale=4)
        meta[name] = {"modality": str(ds.Modality), "body_part": body, "site": "site-B",
                      "manufacturer": str(ds.get("Manufacturer", "")) or "unknown",
                      "patient_pseudonym": f"P-000{2 if body == 'CHEST' else 3}"}
    cine = pydicom.examples.ybr_color
    frames = cine.pixel_array  # RGB after pydicom's colour conversion
    for k in range(0, frames.shape[0], 3):
        name = f"us-cine-frame{k:02d}.png"
        Image.fromarray(np.asarray(frames[k], dtype=np.uint8)).save(folder / name)
        meta[name] = {"modality": "US", "body_part": "ABDOMEN", "site": "site-C",
                      "patient_pseudonym": "P-0004"}
    rng = np.random.default_rng(7)
    for info in meta.values():
        info["sex"] = str(rng.choice(["F", "M"]))
        info["age_band"] = str(rng.choice(["18-39", "40-64", "65-89"]))
    return meta


def _simulated_grade(rng: np.random.Generator, truth: int, accuracy: float, k: int) -> int:
    if rng.random() < accuracy:
        return truth
    # Readers who miss mostly slip to a neighbouring grade.
    options = [g for g in range(k) if g != truth]
    weights = np.array([1.0 / abs(g - truth) ** 2 for g in options])
    return int(rng.choice(options, p=weights / weights.sum()))


def run_demo(
    folder: str | Path, *, seed: int = 0, step: Callable[[str], None] | None = None
) -> DemoResult:
    """Build the demo workspace in ``folder`` and return what it made and measured."""
    say = step or (lambda _msg: None)
    root = Path(folder)
    if root.exists() and any(root.iterdir()):
        raise InputError("the demo folder exists and is not empty", source=str(root))
    rng = np.random.default_rng(seed)
    say("workspace")
    # The demo always uses its own embedded database, whatever the environment selects.
    saved = {k: os.environ.pop(k) for k in ("TRUTHSET_DATABASE_URL", "TRUTHSET_BLOB_URL")
             if k in os.environ}
    try:
        workspace = Workspace.init(root / "workspace")
    finally:
        os.environ.update(saved)
    with workspace:
        say("sample images")
        meta = sample_images(root / "sample-images")
        with workspace.unit(ACTOR) as s:
            project = projects.create_project(
                s, key=PROJECT_KEY, name="Diagnostic image quality (demo)",
                schema_text=SCHEMA_YAML, schema_source="demo schema", guideline_text=GUIDELINE_MD,
            )
            for name, tier, _acc in (*READERS, TRAINEE):
                users.add_user(s, username=name, role="annotator", tier=tier,
                               display_name=f"Reader {name.title()}")
            for name, role, tier in STAFF:
                users.add_user(s, username=name, role=role, tier=tier,
                               display_name=name.title())
            users.add_user(s, username=APPROVER[0], role="manager", tier=1,
                           display_name=APPROVER[1], password=APPROVER_PASSWORD)
        say("import items")
        with workspace.unit(ACTOR) as s:
            project = projects.get_project(s, PROJECT_KEY)
            summary = imports.import_items(s, workspace.blobs, project,
                                           [root / "sample-images"], metadata=meta)
        say("workflow: calibration, reads, gold, escalations")
        k = len(TRUE_GRADE_PRIOR)
        truth = {item: int(rng.choice(k, p=TRUE_GRADE_PRIOR)) for item in summary.ingested}
        order = [summary.ingested[i] for i in rng.permutation(len(summary.ingested))]
        calibration = sorted(order[:N_CALIBRATION])
        gold = sorted(order[N_CALIBRATION:N_CALIBRATION + N_GOLD])
        regular = sorted(order[N_CALIBRATION + N_GOLD:])
        with workspace.unit(ACTOR) as s:
            project = projects.get_project(s, PROJECT_KEY)
            classes = projects.rules(s, project).schema.class_names
            policies.add_gold(s, project, {i: classes[truth[i]] for i in calibration},
                              purpose="calibration")
            policies.add_gold(s, project, {i: classes[truth[i]] for i in gold})
            policies.set_policy(s, project, DEMO_POLICY, source="demo policy")
            queue.enqueue(s, project)
        skills = {name: accuracy for name, _tier, accuracy in (*READERS, TRAINEE)}
        start = utcnow() - timedelta(days=READ_DAYS + 1)
        pace = timedelta(days=READ_DAYS) / (len(READERS) * len(truth))  # about one per read
        work = _run_workflow(workspace, rng, truth, classes, skills,
                             clock=lambda n: start + n * pace)
        n_reads = work["reads"]
        say("consensus and agreement")
        truth_labels = pd.Series({i: classes[truth[i]] for i in regular})
        with workspace.unit(ACTOR) as s:
            project = projects.get_project(s, PROJECT_KEY)
            everything = current_labels(s, project)
            final = _final_labels(s, project)
        reads = everything[everything["item"].isin(regular)].reset_index(drop=True)
        table = reads[["item", "annotator", "label"]]
        mv_labels = make_aggregator("mv", classes=classes).fit_predict(table)
        ds_labels = make_aggregator("ds", classes=classes).fit_predict(table)
        consensus_accuracy = {
            name: float((labels.reindex(truth_labels.index) == truth_labels).mean())
            for name, labels in (("mv", mv_labels), ("ds", ds_labels),
                                 ("workflow (with adjudication)", final))
        }
        agreement = _agreement_summary(table, classes)
        reader_table = (
            reads.assign(
                vs_truth=reads["label"].to_numpy() == reads["item"].map(truth_labels).to_numpy(),
                vs_consensus=reads["label"].to_numpy() == reads["item"].map(final).to_numpy(),
            )
            .groupby("annotator")[["vs_truth", "vs_consensus"]]
            .mean()
            .reindex([n for n, _t, _a in READERS])
        )
        reader_table["simulated_skill"] = [a for _n, _t, a in READERS]
        say("release v1")
        known = {i: "known-answer item (calibration or gold): it scores readers and is not "
                    "part of the dataset" for i in (*calibration, *gold)}
        first = _release(workspace, root, "v1", exclude=known, limitations=[
            "Grades are simulated reads of real sample images; they are not clinical reads."])
        say("quality audit: escalate, adjudicate; guideline v2")
        changed = _quality_audit(workspace, truth, classes, n_changes=2)
        with workspace.unit(ACTOR) as s:
            project = projects.get_project(s, PROJECT_KEY)
            projects.add_guideline_version(s, project, body=GUIDELINE_MD + "\n" + GUIDELINE_V2_NOTE
                                           + "\n", change_note=GUIDELINE_V2_NOTE)
        say("release v2 and diff")
        dropped = [i for i in regular if i not in changed][-1]
        excluded = {**known, dropped: "image cropped on export; re-import pending"}
        second = _release(workspace, root, "v2", exclude=excluded, limitations=[
            "Grades are simulated reads of real sample images; they are not clinical reads."])
        with workspace.unit(ACTOR) as s:
            project = projects.get_project(s, PROJECT_KEY)
            diff = release_diff.diff_releases(s, releases.get_release(s, project, "v1"),
                                              releases.get_release(s, project, "v2"))
        (root / "releases" / "diff-v1-v2.txt").write_text(release_diff.diff_text(diff),
                                                          encoding="utf-8")
        (root / "releases" / "diff-v1-v2.json").write_text(
            json.dumps(diff, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return DemoResult(root, len(regular), n_reads, first, reader_table, second, diff,
                      agreement, consensus_accuracy, workflow=work)


def _release(workspace: Workspace, root: Path, name: str, *,
             exclude: dict[str, str] | None = None, limitations: list[str]) -> ReleaseSummary:
    """Create, sign (as the demo approver) and write out one release."""
    with workspace.unit(ACTOR) as s:
        project = projects.get_project(s, PROJECT_KEY)
        release = releases.create_release(
            s, project, workspace.blobs, name=name, actor=ACTOR, exclude=exclude,
            identifiers=releases.vault_identifiers(workspace.vault, PROJECT_KEY),
            limitations=limitations)
    with workspace.unit(APPROVER[0]) as s:
        project = projects.get_project(s, PROJECT_KEY)
        release = releases.get_release(s, project, name)
        outcome = releases.sign_release(s, workspace.blobs, release, username=APPROVER[0],
                                        password=APPROVER_PASSWORD,
                                        meaning="approved for training")
    if outcome.error is not None:
        raise outcome.error
    with workspace.unit(ACTOR) as s:
        project = projects.get_project(s, PROJECT_KEY)
        release = releases.get_release(s, project, name)
        folder = releases.write_folder(s, workspace.blobs, release, root / "releases" / name)
        items = releases.release_items(s, release)
    n_in = sum(1 for i in items if i.included)
    return ReleaseSummary(name, folder, n_in, len(items) - n_in, release.manifest_sha256)


def _run_workflow(workspace: Workspace, rng: np.random.Generator, truth: dict[str, int],
                  classes: tuple[str, ...], skills: dict[str, float], *,
                  clock: Callable[[int], datetime]) -> dict[str, Any]:
    """Every simulated reader asks the queue for work, reads what it hands out and submits it,
    round after round, until nobody gets a task; then the senior reader takes the escalations
    (also through the queue). The queue's clock for the ``n``-th action is ``clock(n)``.
    Returns what happened: reads, adjudications, refusals."""
    k = len(classes)
    reads = adjudications = 0
    refusals: dict[str, str] = {}
    readers = [*skills]
    while True:
        took = 0
        for name in readers:
            with workspace.unit(name) as s:
                project = projects.get_project(s, PROJECT_KEY)
                user = users.get_user(s, name)
                now = clock(reads + adjudications)
                nxt = queue.next_task(s, project, user, now=now)
                if nxt.task is None:
                    refusals[name] = nxt.reason
                    continue
                grade = _simulated_grade(rng, truth[nxt.task.external_id], skills[name], k)
                queue.submit(s, project, user, nxt.task.task_id, {"label": classes[grade]},
                             time_spent_s=float(np.round(rng.lognormal(3.0, 0.4), 1)), now=now)
                reads += 1
                took += 1
        if took:
            continue
        # Readers are done: the senior reader works the escalations (after calibrating).
        with workspace.unit(ADJUDICATOR) as s:
            project = projects.get_project(s, PROJECT_KEY)
            user = users.get_user(s, ADJUDICATOR)
            now = clock(reads + adjudications)
            nxt = queue.next_task(s, project, user, now=now)
            if nxt.task is None:
                break
            task = nxt.task
            grade = _simulated_grade(rng, truth[task.external_id], ADJUDICATOR_SKILL, k)
            if task.stage == "adjudicate":
                queue.adjudicate(s, project, user, task.task_id, {"label": classes[grade]},
                                 reason="senior read of the image after the split vote",
                                 time_spent_s=float(np.round(rng.lognormal(4.0, 0.3), 1)),
                                 now=now)
                adjudications += 1
            else:
                queue.submit(s, project, user, task.task_id, {"label": classes[grade]},
                             now=now)
    with workspace.sessions() as s:
        project = projects.get_project(s, PROJECT_KEY)
        escalated = len(escalations.list_escalations(s, project, status=None))
        gold_scores = readers_mod.all_reader_stats(s, project)
    return {"reads": reads, "adjudications": adjudications, "escalations": escalated,
            "not_working": {n: r for n, r in refusals.items()
                            if n not in {name for name, _t, _a in READERS}},
            "gold": gold_scores}


def _final_labels(s: Session, project: Project) -> pd.Series:
    """External id -> final label of every item the workflow finished."""
    rows = s.execute(select(Item.external_id, Consensus.label, Consensus.status)
                     .join(Consensus, Consensus.item_id == Item.id)
                     .where(Consensus.id.in_(Consensus.latest_ids(project.id)))).all()
    return pd.Series({e: (lab or {}).get("label") for e, lab, st in rows if st == "final"},
                     dtype=object)


def _quality_audit(workspace: Workspace, truth: dict[str, int], classes: tuple[str, ...], *,
                   n_changes: int) -> list[str]:
    """The manager escalates the finished items readers agreed on least, one at a time; the
    senior reader adjudicates each through the queue (simulated: the hidden true grade), until
    ``n_changes`` labels have changed. Returns the items whose label changed."""
    changed: list[str] = []
    with workspace.sessions() as s:
        project = projects.get_project(s, PROJECT_KEY)
        rows = s.execute(select(Item.external_id, Consensus.agreement, Consensus.method)
                         .join(Consensus, Consensus.item_id == Item.id)
                         .where(Consensus.project_id == project.id,
                                Consensus.status == "final")).all()
    order = sorted((a if a is not None else 1.0, e) for e, a, m in rows
                   if m != queue.ADJUDICATION_SOURCE)
    for agreement, external_id in order:
        if len(changed) >= n_changes:
            break
        with workspace.unit(STAFF[2][0]) as s:
            project = projects.get_project(s, PROJECT_KEY)
            before = _final_labels(s, project).get(external_id)
            queue.escalate_item(s, project, external_id,
                                reason=f"quality audit: reader agreement {agreement:.2f}")
        with workspace.unit(ADJUDICATOR) as s:
            project = projects.get_project(s, PROJECT_KEY)
            user = users.get_user(s, ADJUDICATOR)
            task = queue.next_task(s, project, user).task
            assert task is not None and task.external_id == external_id
            queue.adjudicate(s, project, user, task.task_id,
                             {"label": classes[truth[external_id]]},
                             reason="quality audit: senior read")
            if _final_labels(s, project).get(external_id) != before:
                changed.append(external_id)
    return changed


def _agreement_summary(table: pd.DataFrame, classes: tuple[str, ...]) -> list[dict[str, Any]]:
    from truthset.quality.agreement import agreement

    out = []
    for metric, level in (("krippendorff", "ordinal"), ("krippendorff", "nominal"),
                          ("fleiss", "nominal"), ("ac1", "nominal"), ("percent", "nominal")):
        result = agreement(table, metric=metric, level=level, ci=0.95, classes=classes,
                           random_state=0)
        out.append(result.to_dict())
    return out
