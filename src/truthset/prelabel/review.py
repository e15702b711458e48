"""Turning models back on the labels: likely label errors, noise rates, re-review, priority.

- :func:`detect_label_errors` ranks a project's final labels by how likely they are wrong,
  from out-of-sample model probabilities (a table: ``item`` + one column per class) and the
  readers' agreement (confident learning, :mod:`truthset.quality.label_errors`), and estimates
  each class's label-noise rate with a confidence interval — on all items or on one split
  (``item.attributes["split"]``, e.g. ``test``: is our test set telling the truth?).
- :func:`send_to_review` records the top likely errors and opens a ``review`` task for each
  (items that already have an open review task are not queued twice).
- :func:`item_priorities` is the active-learning hook: a priority per item from the latest
  draft's uncertainty and the readers' disagreement (:func:`truthset.quality.priority`); it
  lives in :mod:`truthset.workflow.active_learning`, which the task queue uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError
from truthset.quality.label_errors import noise_rates, rank_label_issues
from truthset.store.models import Consensus, Item, LabelIssue, Project, Task
from truthset.workflow.active_learning import item_priorities as active_item_priorities
from truthset.workspace.projects import rules


@dataclass(frozen=True)
class LabelErrorReport:
    """Ranked likely errors and per-class noise rates."""

    issues: pd.DataFrame  # item, item_id, given, suggested, self_confidence, agreement, score
    noise: pd.DataFrame  # class, n, noise_rate, ci_low, ci_high
    split: str | None
    n_items: int


def _final_labels(session: Session, project: Project) -> pd.DataFrame:
    rows = session.execute(
        select(Item.id, Item.external_id, Item.attributes, Consensus.label, Consensus.agreement,
               Consensus.input_annotation_ids, Consensus.status)
        .join(Consensus, Consensus.item_id == Item.id)
        .where(Consensus.id.in_(Consensus.latest_ids(project.id)))
    ).all()
    return pd.DataFrame(
        [(i, e, (a or {}).get("split"), (lab or {}).get("label"), agr, len(ids or []))
         for i, e, a, lab, agr, ids, status in rows if status == "final"],
        columns=["item_id", "item", "split", "label", "agreement", "n_readers"])


def detect_label_errors(
    session: Session,
    project: Project,
    probabilities: pd.DataFrame,
    *,
    split: str | None = None,
    weight_model: float = 0.7,
    n_boot: int = 200,
    seed: int = 0,
) -> LabelErrorReport:
    """Rank likely label errors among the project's final (consensus) labels.

    Parameters
    ----------
    probabilities:
        Out-of-sample probabilities: an ``item`` column (external id) and one column per
        schema class, rows summing to 1.
    split:
        Only items whose ``attributes["split"]`` equals this.

    Raises
    ------
    InputError
        Missing class columns, unknown items, bad probabilities, or no final labels.
    """
    classes = list(rules(session, project).schema.class_names)
    if "item" not in probabilities.columns:
        raise InputError("the probability table needs an item column", field="item")
    missing = [c for c in classes if c not in probabilities.columns]
    if missing:
        raise InputError(f"the probability table has no column for class {missing[0]!r}",
                         field=missing[0])
    probs = probabilities.assign(item=probabilities["item"].astype(str)).drop_duplicates(
        "item", keep="last").set_index("item")
    finals = _final_labels(session, project)
    if split is not None:
        finals = finals[finals["split"] == split]
    unknown = sorted(set(probs.index) - set(_all_items(session, project)))
    if unknown:
        raise InputError(f"no item {unknown[0]!r} in project {project.key!r}", field="item")
    finals = finals[finals["item"].isin(probs.index) & finals["label"].isin(classes)]
    if len(finals) < 2:
        raise InputError("fewer than two items have both a final label and probabilities"
                         + (f" in split {split!r}" if split else ""))
    try:
        matrix = probs.loc[finals["item"], classes].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"probabilities must be numbers: {exc}") from None
    index = {c: k for k, c in enumerate(classes)}
    y = finals["label"].map(index).to_numpy(dtype=np.int64)
    ranked = rank_label_issues(y, matrix, agreement=finals["agreement"].to_numpy(dtype=float),
                               n_readers=finals["n_readers"].to_numpy(), ids=list(
                                   finals["item"]), weight_model=weight_model).table
    item_ids = dict(zip(finals["item"], finals["item_id"], strict=True))
    ranked = ranked.assign(
        item=ranked["id"], item_id=ranked["id"].map(item_ids),
        given=[classes[int(g)] for g in ranked["given"]],
        suggested=[classes[int(s)] for s in ranked["suggested"]]).drop(columns="id")
    noise = noise_rates(y, matrix, n_boot=n_boot, seed=seed).to_frame(classes)
    return LabelErrorReport(ranked, noise, split, len(finals))


def _all_items(session: Session, project: Project) -> list[str]:
    return list(session.scalars(select(Item.external_id).where(Item.project_id == project.id)))


def send_to_review(session: Session, project: Project, report: LabelErrorReport, *,
                   top: int = 20) -> list[LabelIssue]:
    """Record the ``top`` flagged items as label issues and open a review task for each.

    Raises
    ------
    InputError
        ``top`` is not positive.
    """
    if top < 1:
        raise InputError("top must be at least 1", field="top")
    flagged = report.issues[report.issues["is_issue"]].head(top)
    open_review = set(session.scalars(select(Task.item_id).where(
        Task.project_id == project.id, Task.stage == "review",
        Task.status.in_(("open", "leased")))))
    rows: list[LabelIssue] = []
    for rec in flagged.itertuples():
        task = None
        if int(rec.item_id) not in open_review:
            task = Task(project_id=project.id, item_id=int(rec.item_id), stage="review",
                        status="open", priority=2.0 + float(rec.score))
            session.add(task)
            session.flush()
        agreement = None if pd.isna(rec.agreement) else float(rec.agreement)
        row = LabelIssue(project_id=project.id, item_id=int(rec.item_id),
                         given_label=str(rec.given), suggested_label=str(rec.suggested),
                         score=float(rec.score), self_confidence=float(rec.self_confidence),
                         agreement=agreement, method="confident_learning",
                         status="sent" if task else "flagged",
                         task_id=task.id if task else None)
        session.add(row)
        rows.append(row)
    session.flush()
    audit.record(session, action="label_errors.review", entity_type="label_issues",
                 project_id=project.id,
                 after={"sent": sum(r.task_id is not None for r in rows), "flagged": len(rows),
                        "split": report.split})
    return rows


def item_priorities(session: Session, project: Project, *, weight_model: float = 0.5,
                    item_ids: Sequence[int] | None = None) -> dict[int, float]:
    """Active-learning priority in [0, 1] per item: the latest draft's uncertainty (entropy of
    its class probabilities) mixed with the current readers' disagreement.

    The one implementation is :func:`truthset.workflow.active_learning.item_priorities` (the
    queue uses it when the policy sets ``active_learning``); this is kept for callers of the
    prelabel service.
    """
    return active_item_priorities(session, project, weight_model=weight_model,
                                  item_ids=item_ids)
