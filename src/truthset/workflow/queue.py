"""The task queue: who reads what next, submitting reads, reviews and adjudications.

One :class:`~truthset.store.models.Task` row is one *slot*: one reader's turn at one item in one
stage. The slots of an item are made by :func:`advance`, which asks the pure
:func:`truthset.workflow.engine.decide` what the item needs and creates exactly that many
slots, so an item never has more readers than its policy asks.

Concurrency (many API processes, one database):

- :func:`next_task` first locks the reader's own user row (``SELECT … FOR UPDATE``), so one
  reader's requests run one after another and the "not this item again" check cannot race; it
  then takes the best free slot with ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL), so
  concurrent readers never get the same slot and never wait on each other. Under
  ``routing: skill`` the slot the routing chooses is locked the same way (a slot locked or
  taken meanwhile gives way to the next choice). On SQLite every transaction starts with
  ``BEGIN IMMEDIATE`` and runs alone.
- Submits lock the reader, then the item, then the item's slots, all before the first write
  (which takes the audit head's lock): every transaction waits on rows before it holds the
  audit lock, never after, so lock waits cannot form a cycle.

A lease runs ``policy.lease_minutes``; an expired lease returns its slot to the pool (the next
reader takes it over) and its old holder can no longer submit.

Refused submits (not your task, twice, lease expired, payload that does not fit the schema)
raise a :class:`Refusal`; the caller's transaction rolls back and :func:`audit_refusal` (or the
:func:`audited_refusals` context manager) records the attempt in a transaction of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import ColumnElement, Exists, and_, case, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from truthset import audit
from truthset.domain.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
)
from truthset.domain.policy import (
    ROUTING_METHODS,
    Policy,
    PrelabelUse,
    Routing,
    Stage,
    WorkflowKind,
    qualifies,
)
from truthset.domain.schema import RiskLevel, SchemaKind
from truthset.quality.aggregation.base import Aggregator
from truthset.quality.aggregation.multilabel import MultiLabelAggregator
from truthset.quality.aggregation.registry import AGGREGATORS
from truthset.quality.shapes import ImageBounds, parse_objects
from truthset.store.models import (
    Annotation,
    Consensus,
    Escalation,
    GoldItem,
    Item,
    Project,
    Review,
    Task,
    TaskOutcome,
    User,
    utcnow,
)
from truthset.workflow import acceptance, skills
from truthset.workflow import readers as rd
from truthset.workflow.active_learning import NEUTRAL, item_priorities
from truthset.workflow.engine import (
    MODEL_READER,
    Decision,
    ItemState,
    ReviewOutcome,
    consensus_model,
    core_payload,
    decide,
    method_params,
    named_classes,
    reads_with_draft,
    schema_shape,
    stable_uniform,
)
from truthset.workflow.policies import CurrentPolicy, current_policy, reader_roles
from truthset.workflow.routing import REFIT_EVERY, Candidate, ReaderModel, pick
from truthset.workspace.projects import ProjectRules, rules

if TYPE_CHECKING:
    from truthset.workspace.workspace import Workspace

OPEN, LEASED, DONE, CANCELLED, SUPERSEDED = "open", "leased", "done", "cancelled", "superseded"
#: A slot its reader gave back unread (:func:`skip`) or flagged as unclear
#: (:func:`truthset.workflow.escalations.flag`); it stays with its reader as the record that
#: they passed on the item, and they are not offered the item again.
SKIPPED, FLAGGED = "skipped", "flagged"
#: Statuses of a slot that still needs (or is getting) work.
OUTSTANDING = (OPEN, LEASED)
#: Review decisions.
REVIEW_DECISIONS = ("accept", "correct", "reject", "escalate")
#: Annotation source of an adjudicator's label (not a read: consensus methods never see it).
ADJUDICATION_SOURCE = "adjudication"

_STAGE_RANK = {Stage.ADJUDICATE.value: 2, Stage.REVIEW.value: 1}
_RISK_PRIORITY = {RiskLevel.LOW: 1.0, RiskLevel.MEDIUM: 2.0, RiskLevel.HIGH: 3.0}


def _rules(session: Session, project: Project) -> ProjectRules:
    """The project's schema and guideline, read once per unit of work."""
    key = ("truthset.workflow.rules", project.id)
    cached = session.info.get(key)
    if cached is None:
        cached = session.info[key] = rules(session, project)
    return cached


def aware(moment: datetime | None) -> datetime | None:
    """``moment`` as timezone-aware UTC (SQLite hands back naive UTC times)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- refusals ------------------------------------------------------------------------------------
class Refusal(Exception):  # noqa: N818 - a mixin; the concrete errors end in Error
    """Mixin of the errors a refused task action raises; ``event`` is what gets audited."""

    event: dict[str, Any]


class TaskConflictError(Refusal, ConflictError):
    """Twice, expired lease, wrong stage."""


class TaskDeniedError(Refusal, PermissionDeniedError):
    """The task is not leased to the caller, or they would approve their own work."""


class TaskInputError(Refusal, InputError):
    """The payload, decision or reason does not fit."""


def _refuse(error: Refusal, task: Task | None, user: User, what: str) -> Refusal:
    error.event = {
        "action": "denied" if isinstance(error, PermissionDeniedError) else "refused",
        "entity_type": "tasks",
        "entity_id": None if task is None else task.id,
        "project_id": None if task is None else task.project_id,
        "after": {"attempt": what, "user": user.username, "reason": str(error),
                  "stage": None if task is None else task.stage},
    }
    return error


def refuse(error: Refusal, task: Task | None, user: User, what: str) -> Refusal:
    """Attach the audit event to a refused task action (``what``) and return the error to
    raise."""
    return _refuse(error, task, user, what)


def audit_refusal(session: Session, refusal: Refusal) -> None:
    """Record a refused attempt (call in a fresh transaction, after the refused one rolled
    back)."""
    event = refusal.event
    audit.record(session, action=event["action"], entity_type=event["entity_type"],
                 entity_id=event["entity_id"], project_id=event["project_id"],
                 after=event["after"])


@contextmanager
def audited_refusals(workspace: Workspace, actor: str) -> Iterator[None]:
    """Wrap a unit of work: a :class:`Refusal` escaping it is audited in a unit of its own,
    then re-raised."""
    try:
        yield
    except Refusal as exc:
        with workspace.unit(actor) as session:
            audit_refusal(session, exc)
        raise


# -- what a reader is shown ----------------------------------------------------------------------
@dataclass(frozen=True)
class TaskView:
    """A task as its reader sees it: never another reader's label in the annotate stage.

    ``context`` holds, for a review, the label under review; for an adjudication, every
    reader's label side by side and why it was escalated; under ``prelabels: draft``, the model
    draft an annotator starts from.
    """

    task_id: int
    project: str
    item_id: int
    external_id: str
    stage: str
    lease_expires_at: datetime | None
    schema_version: int
    guideline_version: int | None
    context: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        expires = aware(self.lease_expires_at)
        return {"task_id": self.task_id, "project": self.project, "item_id": self.item_id,
                "external_id": self.external_id, "stage": self.stage,
                "lease_expires_at": None if expires is None else expires.isoformat(),
                "schema_version": self.schema_version,
                "guideline_version": self.guideline_version, "context": self.context}


@dataclass(frozen=True)
class NextTask:
    """The answer to "what next?": a task, or none and why."""

    task: TaskView | None
    reason: str = ""


@dataclass(frozen=True)
class SubmitResult:
    """What a submit, review or adjudication did to its item."""

    task_id: int
    annotation_id: int | None
    item_status: str  # "pending" or "final"
    next_step: str  # the decision's action and reason, in words


# -- reading an item's state ---------------------------------------------------------------------
def _label(payload: dict[str, Any] | None) -> str | None:
    value = (payload or {}).get("label")
    return None if value is None else str(value)


@dataclass
class _ItemFacts:
    reads: list[tuple[int, str, str]]  # annotation id, reader, label
    draft: str | None
    draft_confidence: float | None
    review: ReviewOutcome | None
    review_annotation: int | None
    adjudication: tuple[int, str] | None
    subject: tuple[int, str] | None = None  # the read a reviewer judges: first read or draft
    draft_rejected: bool = False
    payloads: dict[int, dict[str, Any]] = field(default_factory=dict)  # annotation id -> payload
    draft_id: int | None = None
    # How the class posterior was computed (see _posterior); stored with a final decision.
    posterior_basis: dict[str, Any] | None = None

    def payload(self, annotation_id: int | None) -> dict[str, Any] | None:
        """The stored payload of one of the item's annotations."""
        return None if annotation_id is None else self.payloads.get(annotation_id)


def _facts(session: Session, item: Item) -> _ItemFacts:
    # One query for every annotation of the item with its task's stage and status.
    rows = session.execute(
        select(Annotation.id, User.username, Annotation.payload, Annotation.source,
               Annotation.parent_id, Task.stage, Task.status)
        .outerjoin(Task, Task.id == Annotation.task_id)
        .outerjoin(User, User.id == Annotation.author_id)
        .where(Annotation.item_id == item.id).order_by(Annotation.id)).all()
    done_reads = [(a, u, p) for a, u, p, src, parent, stage, status in rows
                  if stage == Stage.ANNOTATE.value and status == DONE and parent is None
                  and src == "human"]
    adjudications = [(a, p) for a, _u, p, _src, _parent, stage, status in rows
                     if stage == Stage.ADJUDICATE.value and status == DONE]
    drafts = [(a, p) for a, _u, p, src, _parent, _stage, _status in rows if src == "model"]
    payloads = {a: p for a, _u, p, *_rest in rows}
    reviewed = [a for a, _u, _p in done_reads] + [a for a, _p in drafts[-1:]]
    has_review = any(stage == Stage.REVIEW.value for *_r, stage, _status in rows) or (
        reviewed and session.scalar(select(Review.id).where(
            Review.annotation_id.in_(reviewed)).limit(1)) is not None)
    reviews: dict[int, Review] = {}
    if has_review:
        reviews = {r.annotation_id: r for r in session.scalars(
            select(Review).where(Review.annotation_id.in_(reviewed)).order_by(Review.id))}
    reads = [(a, u, _label(p) or "") for a, u, p in done_reads
             if not (a in reviews and reviews[a].decision == "reject")]
    draft_row = drafts[-1] if drafts else None
    draft_rejected = bool(draft_row and draft_row[0] in reviews
                          and reviews[draft_row[0]].decision == "reject")
    subject = (reads[0][0], reads[0][2]) if reads else (
        (draft_row[0], _label(draft_row[1]) or "") if draft_row and not draft_rejected
        else None)
    review: ReviewOutcome | None = None
    if subject is not None and subject[0] in reviews:
        rv = reviews[subject[0]]
        reviewer = session.get(User, rv.reviewer_id)
        name = reviewer.username if reviewer else "?"
        if rv.decision == "escalate":
            review = ReviewOutcome(name, None, escalated=True)
        elif rv.decision == "correct" and rv.corrected_annotation_id is not None:
            review = ReviewOutcome(name, _label(payloads.get(rv.corrected_annotation_id)),
                                   payload=payloads.get(rv.corrected_annotation_id))
        else:
            review = ReviewOutcome(name, subject[1], payload=payloads.get(subject[0]))
    draft = draft_row[1] if draft_row else None
    conf = (draft or {}).get("confidence")
    adj = adjudications[-1] if adjudications else None
    return _ItemFacts(
        reads=reads, draft=_label(draft) if draft is not None else None,
        draft_confidence=float(conf) if isinstance(conf, int | float) else None,
        review=review, review_annotation=subject[0] if subject else None,
        adjudication=(adj[0], _label(adj[1]) or "") if adj else None,
        subject=subject, draft_rejected=draft_rejected, payloads=payloads,
        draft_id=draft_row[0] if draft_row else None,
    )


def _workflow_reads(project: Project) -> list[ColumnElement[bool]]:
    """Conditions of a workflow read of ``project`` (joined with its task): a first annotation
    (no parent) of a done annotate or calibration slot."""
    return [Annotation.project_id == project.id,
            Task.stage.in_((Stage.ANNOTATE.value, Stage.CALIBRATE.value)),
            Task.status == DONE, Annotation.parent_id.is_(None)]


def project_reads(session: Session, project: Project,
                  item_ids: list[int] | None = None) -> pd.DataFrame:
    """Every workflow read of the project (annotate and calibration stages, known-answer items
    included), or of ``item_ids`` only: ``item, annotator, label`` with item ids as strings.
    Only the payload's ``label`` is read (in SQL: the consensus fit that reads this table runs
    at every submit)."""
    stmt = (select(Annotation.item_id, User.username, Annotation.payload["label"].as_string())
            .join(Task, Task.id == Annotation.task_id).join(User, User.id == Annotation.author_id)
            .where(*_workflow_reads(project)).order_by(Annotation.id))
    if item_ids is not None:
        stmt = stmt.where(Annotation.item_id.in_(item_ids))
    rows = session.execute(stmt).all()
    return pd.DataFrame([(str(i), u, None if lab is None else str(lab)) for i, u, lab in rows],
                        columns=["item", "annotator", "label"])


def _reads_table(session: Session, project: Project, policy: Policy,
                 item_ids: list[int] | None = None) -> pd.DataFrame:
    """:func:`project_reads`, with each item's model draft counted as a read (reader
    ``model``, first) under ``prelabels: draft``."""
    table = project_reads(session, project, item_ids)
    if policy.prelabels == PrelabelUse.DRAFT:
        stmt = select(Annotation.item_id, Annotation.payload).where(
            Annotation.project_id == project.id, Annotation.source == "model")
        if item_ids is not None:
            stmt = stmt.where(Annotation.item_id.in_(item_ids))
        extra = pd.DataFrame([(str(i), MODEL_READER, _label(p))
                              for i, p in session.execute(stmt).all()],
                             columns=["item", "annotator", "label"])
        table = pd.concat([extra, table], ignore_index=True).drop_duplicates(
            ["item", "annotator"], keep="last")
    return table


def consensus_fit(session: Session, project: Project, policy: Policy,
                  classes: tuple[str, ...]) -> Aggregator | None:
    """``policy.method`` (single-label classification) fitted on every workflow read of the
    project (:func:`project_reads`), plus the model drafts under ``prelabels: draft``, with the
    known answers clamped: ``probas_`` (item id as a string x class) is every read item's
    posterior; for ``onecoin``/``ds`` its reader parameters feed
    :meth:`truthset.workflow.routing.ReaderModel.from_fit`. ``None`` when the method cannot be
    fitted (no reads, or too few)."""
    table = _reads_table(session, project, policy)
    gold = pd.Series({str(g.item_id): _label(g.label) for g in session.scalars(
        select(GoldItem).where(GoldItem.project_id == project.id))}, dtype=object)
    try:
        return consensus_model(policy.method, classes, table, gold, **method_params(policy))
    except (ValueError, KeyError):  # no reads, or too few for the method (InputError too)
        return None


#: Project reads from which a submit's posterior (``onecoin``, ``ds``) is computed under the
#: kept reader model instead of a fit of the whole project (:func:`_posterior`): by then the
#: :data:`~truthset.workflow.routing.REFIT_EVERY` reads the kept model may lack are 10 % of
#: the data or less, while a fit of the project at every submit grows with it (measured in
#: ``docs/benchmarks.md`` §13: a paced load's submits took p99 261 ms with a fit at every
#: submit on a project of 700 reads).
KEPT_MODEL_READS = 300


def _read_count(session: Session, project: Project) -> int:
    """The project's workflow reads (:func:`_workflow_reads`)."""
    return session.scalar(select(func.count(Annotation.id))
                          .join(Task, Task.id == Annotation.task_id)
                          .where(*_workflow_reads(project))) or 0


def _posterior(session: Session, project: Project, cur: CurrentPolicy, item: Item,
               classes: tuple[str, ...], facts: _ItemFacts) -> dict[str, float] | None:
    """The policy method's posterior for ``item``; ``None`` for majority vote (decide() uses
    the vote shares) and when the method cannot be fitted.

    The method is fitted on the whole project's reads (:func:`consensus_fit`, known answers
    clamped) at every decision while the project has fewer than :data:`KEPT_MODEL_READS`
    reads. From then on ``onecoin`` and ``ds`` decide by Bayes' rule on the item's own reads
    under the project's kept reader model (:func:`reader_model`, refitted on the whole project
    every :data:`~truthset.workflow.routing.REFIT_EVERY` reads), so a submit costs the item's
    reads, not the project's; known-answer items and other methods still fit the project."""
    policy = cur.policy
    if policy.method == "mv" or not facts.reads:
        return None
    if schema_shape(_rules(session, project).schema) == "multi":
        return _multi_label_posterior(session, project, policy, item, classes)
    reads = _read_count(session, project)
    if (policy.method in ROUTING_METHODS and reads >= KEPT_MODEL_READS
            and session.scalar(select(GoldItem.id).where(GoldItem.item_id == item.id)) is None):
        kept = kept_reader_model(session, project, policy, cur.version, classes, reads)
        if kept is not None:
            readers, fitted_on = kept
            own = _reads_table(session, project, policy, [item.id])
            post = readers.posterior(list(zip(own["annotator"].astype(str), own["label"],
                                              strict=True)))
            facts.posterior_basis = {"posterior": "kept reader model",
                                     "model_fitted_on_reads": fitted_on,
                                     "project_reads": reads}
            return {str(c): float(v) for c, v in zip(readers.classes, post, strict=True)}
    fit = consensus_fit(session, project, policy, classes)
    if fit is None:  # too few reads for the method: fall back to the vote
        return None
    post = fit.probas_
    key = str(item.id)
    if key not in post.index:
        return None
    facts.posterior_basis = {"posterior": "fit of the project", "project_reads": reads}
    return {str(c): float(v) for c, v in post.loc[key].items()}


def _multi_label_posterior(session: Session, project: Project, policy: Policy, item: Item,
                           classes: tuple[str, ...]) -> dict[str, float] | None:
    """P(present) per class for ``item`` from the policy method fitted one class at a time on
    the whole project's multi-label reads (:class:`MultiLabelAggregator`)."""
    rows = session.execute(
        select(Annotation.item_id, User.username, Annotation.payload)
        .join(Task, Task.id == Annotation.task_id).join(User, User.id == Annotation.author_id)
        .where(Annotation.project_id == project.id, Task.stage == Stage.ANNOTATE.value,
               Task.status == DONE, Annotation.parent_id.is_(None))
        .order_by(Annotation.id)).all()
    records = [(str(i), u, list((p or {}).get("labels") or [])) for i, u, p in rows]
    if policy.prelabels == PrelabelUse.DRAFT:
        records = [(str(i), MODEL_READER, list((p or {}).get("labels") or []))
                   for i, p in session.execute(select(Annotation.item_id, Annotation.payload)
                                               .where(Annotation.project_id == project.id,
                                                      Annotation.source == "model"))] + records
    table = pd.DataFrame(records, columns=["item", "annotator", "label"]).drop_duplicates(
        ["item", "annotator"], keep="last")
    try:
        model = MultiLabelAggregator(AGGREGATORS[policy.method], classes=list(classes),
                                     **method_params(policy))
        model.fit(table)
    except (ValueError, KeyError, InputError):  # too few reads for the method: the vote
        return None
    key = str(item.id)
    if key not in model.probas_.index:
        return None
    return {str(c): float(v) for c, v in model.probas_.loc[key].fillna(0.0).items()}


def item_decision(session: Session, project: Project, item: Item,
                  current: CurrentPolicy | None = None) -> tuple[Decision, _ItemFacts]:
    """What ``item`` needs next under the project's policy, and the facts it was decided on."""
    cur = current or current_policy(session, project)
    policy = cur.policy
    schema = _rules(session, project).schema
    risks = {c.name: c.risk for c in schema.classes}
    facts = _facts(session, item)
    reads = tuple((u, lab) for _a, u, lab in facts.reads)
    draft = None if facts.draft_rejected else facts.draft
    if schema_shape(schema) != "single":
        draft_payload = None if facts.draft_rejected else facts.payload(facts.draft_id)
        payloads = tuple(facts.payloads[a] for a, _u, _lab in facts.reads)
        if draft_payload is not None and policy.prelabels == PrelabelUse.DRAFT:
            reads, payloads = ((MODEL_READER, ""), *reads), (draft_payload, *payloads)
        state = ItemState(
            reads=reads, review=facts.review, payloads=payloads, draft_payload=draft_payload,
            adjudication_payload=facts.payload(facts.adjudication[0]) if facts.adjudication
            else None,
            posterior=_posterior(session, project, cur, item, schema.class_names, facts)
            if schema_shape(schema) == "multi" else None,  # geometry: no class posterior
            u=stable_uniform("review", project.id, item.id),
            bounds=ImageBounds.from_media(item.media),
        )
        return decide(policy, risks, state, schema=schema), facts
    state = ItemState(
        reads=reads_with_draft(policy, reads, draft),
        draft=draft, review=facts.review,
        adjudication=facts.adjudication[1] if facts.adjudication else None,
        posterior=_posterior(session, project, cur, item, schema.class_names, facts),
        u=stable_uniform("review", project.id, item.id),
    )
    return decide(policy, risks, state), facts


# -- making slots --------------------------------------------------------------------------------
def _outstanding(session: Session, item: Item) -> list[Task]:
    return outstanding(session, item)


def outstanding(session: Session, item: Item) -> list[Task]:
    """The item's slots that still need (or are getting) work, oldest first."""
    return list(session.scalars(select(Task).where(
        Task.item_id == item.id, Task.status.in_(OUTSTANDING)).order_by(Task.id)))


def _active_scores(session: Session, project: Project, policy: Policy,
                   item_ids: list[int]) -> dict[int, float]:
    """Active-learning scores of ``item_ids`` (empty when the policy does not opt in)."""
    if policy.active_learning is None:
        return {}
    return item_priorities(session, project, weight_model=policy.active_learning.weight_model,
                           item_ids=item_ids)


def _read_priority(session: Session, project: Project, item: Item, decision: Decision,
                   facts: _ItemFacts, policy: Policy,
                   scores: dict[int, float] | None = None) -> float:
    """Priority of an item's read slots: uncertain consensus in [1, 2], else an uncertain
    draft's ``1 - confidence`` (when drafts route), else 0; plus, when the policy opts into
    active learning, ``weight`` times the item's score (``scores`` precomputed, or read)."""
    uncertain = decision.confidence is not None
    priority = (1.0 + (1.0 - float(decision.confidence or 0.0))) if uncertain else (
        1.0 - facts.draft_confidence if facts.draft_confidence is not None
        and policy.prelabels != PrelabelUse.IGNORE else 0.0)
    if policy.active_learning is not None:
        if scores is None:
            scores = _active_scores(session, project, policy, [item.id])
        priority += policy.active_learning.weight * scores.get(item.id, NEUTRAL)
    return priority


def advance(session: Session, project: Project, item: Item, *,
            current: CurrentPolicy | None = None, now: datetime | None = None) -> Decision:
    """Bring ``item``'s slots in line with what its policy says it needs next.

    ``read``: as many open annotate slots as reads still asked for; ``review``: one review
    slot; ``adjudicate``: one adjudication slot and an escalation with its deadline;
    ``final``: the consensus row is written, leftover slots are cancelled and escalations
    resolved. Call with the item locked (the services here do).
    """
    cur = current or current_policy(session, project)
    policy = cur.policy
    now = now or utcnow()
    decision, facts = item_decision(session, project, item, cur)
    pending = _outstanding(session, item)
    by_stage: dict[str, list[Task]] = {}
    for t in pending:
        by_stage.setdefault(t.stage, []).append(t)
    if decision.action == "read":
        priority = _read_priority(session, project, item, decision, facts, policy)
        for _ in range(decision.n - len(by_stage.get(Stage.ANNOTATE.value, []))):
            session.add(Task(project_id=project.id, item_id=item.id, stage=Stage.ANNOTATE.value,
                             status=OPEN, priority=priority))
    elif decision.action == "review":
        if not by_stage.get(Stage.REVIEW.value):
            risk = decision.risk or RiskLevel.LOW
            session.add(Task(project_id=project.id, item_id=item.id, stage=Stage.REVIEW.value,
                             status=OPEN, priority=_RISK_PRIORITY[risk]))
    elif decision.action == "adjudicate":
        if not by_stage.get(Stage.ADJUDICATE.value):
            task = Task(project_id=project.id, item_id=item.id, stage=Stage.ADJUDICATE.value,
                        status=OPEN, priority=4.0)
            session.add(task)
            session.flush()
            from_tier = (policy.stage_tier(Stage.REVIEW) if facts.review is not None
                         else policy.stage_tier(Stage.ANNOTATE))
            session.add(Escalation(
                project_id=project.id, item_id=item.id, task_id=task.id, from_tier=from_tier,
                to_tier=policy.stage_tier(Stage.ADJUDICATE), reason=decision.reason,
                due_at=now + timedelta(hours=policy.escalation.deadline_hours),
                status="open"))
    else:
        _finalise(session, project, item, decision, facts, cur, pending, now)
    session.flush()
    return decision


def _finalise(session: Session, project: Project, item: Item, decision: Decision,
              facts: _ItemFacts, cur: CurrentPolicy, pending: list[Task],
              now: datetime) -> None:
    for task in pending:
        task.status, task.completed_at = CANCELLED, now
    for esc in session.scalars(select(Escalation).where(Escalation.item_id == item.id,
                                                        Escalation.status == "open")):
        esc.status, esc.resolved_at = "resolved", now
    inputs = [a for a, _u, _lab in facts.reads]
    if facts.adjudication is not None:
        method, inputs = ADJUDICATION_SOURCE, [*inputs, facts.adjudication[0]]
    elif decision.rules.workflow in (WorkflowKind.SINGLE_REVIEW, WorkflowKind.TIERED):
        method = "review" if facts.review is not None else "single"
        if facts.review is not None and facts.review_annotation is not None:
            corrected = session.scalar(select(Review.corrected_annotation_id).where(
                Review.annotation_id == facts.review_annotation, Review.decision == "correct"))
            inputs = [corrected] if corrected is not None else [facts.review_annotation]
        else:
            inputs = inputs[:1] or ([facts.subject[0]] if facts.subject else [])
    else:
        method = decision.method or decision.rules.method
    parameters = {"policy": cur.policy.name, "policy_version": cur.version,
                  "workflow": decision.rules.workflow.value, "reason": decision.reason}
    if facts.posterior_basis is not None and method == decision.rules.method:
        parameters["posterior_basis"] = facts.posterior_basis
    if decision.payload is not None and method not in (ADJUDICATION_SOURCE, "review", "single"):
        parameters.update(decision.parameters)
    label = decision.payload if decision.payload is not None else {"label": decision.label}
    session.add(Consensus(
        project_id=project.id, item_id=item.id, method=method, parameters=parameters,
        label=label, posterior=dict(decision.posterior),
        confidence=decision.confidence, agreement=decision.agreement,
        input_annotation_ids=inputs, status="final"))


def escalate_item(session: Session, project: Project, external_id: str, *, reason: str,
                  now: datetime | None = None) -> Escalation:
    """Send an item to adjudication on a person's request (a quality audit, a complaint),
    whatever its state: an adjudication slot and an escalation with its deadline are made; the
    item's current label stands in the record but the item is unresolved until adjudicated.

    Raises
    ------
    InputError
        No such item, a known-answer item, or no reason given.
    ConflictError
        The item already waits for adjudication.
    """
    if not reason.strip():
        raise InputError("say why the item is escalated", field="reason")
    item = session.scalar(select(Item).where(Item.project_id == project.id,
                                              Item.external_id == external_id))
    if item is None:
        raise InputError(f"no item {external_id!r} in project {project.key!r}", field="item")
    if session.scalar(select(GoldItem.id).where(GoldItem.item_id == item.id)) is not None:
        raise InputError(f"item {external_id!r} is a known-answer item", field="item")
    session.execute(select(Item.id).where(Item.id == item.id).with_for_update())
    if any(t.stage == Stage.ADJUDICATE.value for t in _outstanding(session, item)):
        raise ConflictError(f"item {external_id!r} already waits for adjudication")
    policy = current_policy(session, project).policy
    now = now or utcnow()
    task = Task(project_id=project.id, item_id=item.id, stage=Stage.ADJUDICATE.value,
                status=OPEN, priority=4.0)
    session.add(task)
    session.flush()
    row = Escalation(project_id=project.id, item_id=item.id, task_id=task.id,
                     from_tier=policy.stage_tier(Stage.REVIEW),
                     to_tier=policy.stage_tier(Stage.ADJUDICATE), reason=reason.strip(),
                     due_at=now + timedelta(hours=policy.escalation.deadline_hours),
                     status="open")
    session.add(row)
    session.flush()
    return row


def enqueue(session: Session, project: Project, external_ids: list[str] | None = None, *,
            now: datetime | None = None) -> int:
    """Put items into the workflow (all items without slots, or those named); known-answer
    items are left out (they reach readers as calibration and gold). Returns how many items
    were queued.

    Raises
    ------
    InputError
        A named item does not exist, or the schema is a measurement schema (the workflow runs
        classification, box, polygon and mask schemas).
    """
    schema = _rules(session, project).schema
    if schema.kind == SchemaKind.MEASUREMENT:
        raise InputError("the workflow runs classification, box, polygon and mask schemas, "
                         "not measurements", field="schema")
    cur = current_policy(session, project)
    stmt = select(Item).where(Item.project_id == project.id, Item.status == "active",
                              ~exists().where(Task.item_id == Item.id),
                              ~exists().where(GoldItem.item_id == Item.id))
    if external_ids is not None:
        known = set(session.scalars(select(Item.external_id).where(
            Item.project_id == project.id, Item.external_id.in_(external_ids))))
        missing = [e for e in external_ids if e not in known]
        if missing:
            raise InputError(f"no item {missing[0]!r} in project {project.key!r}", field="item")
        stmt = stmt.where(Item.external_id.in_(external_ids))
    queued = []
    for item in session.scalars(stmt.order_by(Item.id)).all():
        advance(session, project, item, current=cur, now=now)
        queued.append(item.id)
    audit.record(session, action="enqueue", entity_type="items", project_id=project.id,
                 after={"policy_version": cur.version, "items": queued})
    return len(queued)


def reprioritise(session: Session, project: Project) -> int:
    """Recompute the priority of every outstanding ``annotate`` slot from what is known now
    (after a new model run: new drafts, their confidence and probabilities; new reads), as
    :func:`advance` would set it. Slots another transaction holds locked (being submitted)
    are skipped; their item's next :func:`advance` sets them anyway. Audited
    (``tasks.reprioritise``). Returns how many slots changed priority.
    """
    cur = current_policy(session, project)
    policy = cur.policy
    slots = session.scalars(select(Task).where(
        Task.project_id == project.id, Task.stage == Stage.ANNOTATE.value,
        Task.status.in_(OUTSTANDING),
        ~exists().where(GoldItem.item_id == Task.item_id))
        .order_by(Task.item_id, Task.id).with_for_update(skip_locked=True)).all()
    by_item: dict[int, list[Task]] = {}
    for task in slots:
        by_item.setdefault(task.item_id, []).append(task)
    scores = _active_scores(session, project, policy, list(by_item))
    changed = 0
    for item_id, tasks in by_item.items():
        item = session.get(Item, item_id)
        assert item is not None
        decision, facts = item_decision(session, project, item, cur)
        if decision.action != "read":
            continue
        priority = _read_priority(session, project, item, decision, facts, policy, scores)
        for task in tasks:
            if abs(task.priority - priority) > 1e-12:
                task.priority = priority
                changed += 1
    session.flush()
    audit.record(session, action="tasks.reprioritise", entity_type="tasks",
                 project_id=project.id,
                 after={"policy_version": cur.version, "slots": len(slots), "changed": changed,
                        "active_learning": policy.active_learning is not None})
    return changed


# -- leasing -------------------------------------------------------------------------------------
def _view(session: Session, project: Project, task: Task, policy: Policy) -> TaskView:
    item = session.get(Item, task.item_id)
    assert item is not None
    current = _rules(session, project)
    context: dict[str, Any] = {}
    # Multi-label and geometric schemas show payloads (objects) beside the labels.
    payloads = schema_shape(current.schema) != "single"
    if task.stage in (Stage.REVIEW.value, Stage.ADJUDICATE.value) or (
            policy.prelabels == PrelabelUse.DRAFT):
        facts = _facts(session, item)
        if task.stage == Stage.REVIEW.value and facts.subject is not None:
            context["under_review"] = {"annotation_id": facts.subject[0],
                                       "label": facts.subject[1]}
            if payloads:
                context["under_review"]["label"] = None
                context["under_review"]["payload"] = core_payload(
                    facts.payload(facts.subject[0]))
        elif task.stage == Stage.ADJUDICATE.value:
            context["reads"] = [{"annotation_id": a, "reader": u, "label": lab}
                                for a, u, lab in facts.reads]
            if payloads:
                for entry in context["reads"]:
                    entry["label"] = None
                    entry["payload"] = core_payload(facts.payload(entry["annotation_id"]))
            # The readers' skill figures: this item's readers only, and only to adjudicators.
            figures = skills.reader_skills(session, project, item,
                                           [entry["reader"] for entry in context["reads"]])
            for entry in context["reads"]:
                found = figures.get(entry["reader"])
                entry["skill"] = None if found is None else found.to_dict()
            if facts.review is not None:
                context["review"] = {"reviewer": facts.review.reviewer,
                                     "label": facts.review.label,
                                     "escalated": facts.review.escalated}
                if payloads:
                    context["review"]["label"] = None
                    context["review"]["payload"] = core_payload(facts.review.payload)
            esc = session.scalar(select(Escalation).where(Escalation.task_id == task.id))
            if esc is not None:
                context["escalation"] = {"reason": esc.reason,
                                         "due_at": aware(esc.due_at).isoformat()}  # type: ignore[union-attr]
            if payloads:
                context["consensus"] = _consensus_view(session, project, item)
        elif task.stage == Stage.ANNOTATE.value and payloads and facts.draft_id is not None:
            context["draft"] = {"label": None,
                                "payload": core_payload(facts.payload(facts.draft_id))}
        elif facts.draft is not None and task.stage == Stage.ANNOTATE.value:
            context["draft"] = {"label": facts.draft}
    return TaskView(task.id, project.key, item.id, item.external_id, task.stage,
                    aware(task.lease_expires_at), current.schema_version,
                    current.guideline_version, context)


def _consensus_view(session: Session, project: Project, item: Item) -> dict[str, Any] | None:
    """What the reads of an item under adjudication add up to (multi-label and geometric
    schemas): the consensus payload (fused objects with ``support`` and ``readers``, and the
    ``minority`` findings), how it was computed and why it did not become final; ``None``
    when there is no consensus of reads (a single read escalated by its reviewer)."""
    decision = item_decision(session, project, item)[0]
    if decision.payload is None or decision.method in (None, "review", "single",
                                                       ADJUDICATION_SOURCE):
        return None
    return {"method": decision.method, "payload": decision.payload,
            "agreement": decision.agreement, "confidence": decision.confidence,
            "target": decision.parameters.get("target", decision.rules.target),
            "posterior": dict(decision.posterior), "parameters": decision.parameters,
            "reason": decision.reason}


def _lease(session: Session, task: Task, user: User, policy: Policy, now: datetime) -> None:
    task.assignee_id = user.id
    task.status = LEASED
    task.lease_expires_at = now + timedelta(minutes=policy.lease_minutes)
    session.flush()


def _lock_user(session: Session, user: User) -> None:
    session.execute(select(User.id).where(User.id == user.id).with_for_update())


def _qualified_stages(session: Session, project: Project, user: User,
                      policy: Policy) -> list[Stage]:
    held = reader_roles(session, project, user)
    return [s for s in (Stage.ADJUDICATE, Stage.REVIEW, Stage.ANNOTATE)
            if any(qualifies(policy, s, role=r, tier=user.tier, specialty=user.specialty)
                   for r in held)]


def _known_answer_task(session: Session, project: Project, user: User, purpose: str,
                       stage: Stage, policy: Policy, now: datetime) -> Task | None:
    """A fresh slot for a known-answer item this reader has not had yet."""
    had = select(Task.item_id).where(Task.assignee_id == user.id)
    candidates = session.scalars(select(GoldItem.item_id).where(
        GoldItem.project_id == project.id, GoldItem.purpose == purpose,
        GoldItem.item_id.not_in(had))).all()
    if not candidates:
        return None
    # Calibration in a fixed order; gold in an order of its own for every reader.
    item_id = (min(candidates) if purpose == "calibration" else
               min(candidates, key=lambda i: stable_uniform("gold", user.id, i)))
    task = Task(project_id=project.id, item_id=item_id, stage=stage.value, status=OPEN,
                priority=0.0)
    session.add(task)
    session.flush()
    _lease(session, task, user, policy, now)
    return task


def _provisional_classes(session: Session, project: Project, item_id: int,
                         policy: Policy) -> set[str]:
    """The classes an item provisionally has: single-label, the majority of its reads (else
    the model draft's class, unless drafts are ignored); multi-label and geometric schemas,
    every class its reads name (else the draft's)."""
    item = session.get(Item, item_id)
    assert item is not None
    facts = _facts(session, item)
    use_draft = policy.prelabels != PrelabelUse.IGNORE and not facts.draft_rejected
    if schema_shape(_rules(session, project).schema) != "single":
        named = {c for a, _u, _lab in facts.reads for c in named_classes(facts.payload(a))}
        if not named and use_draft:
            named = set(named_classes(facts.payload(facts.draft_id)))
        return named
    if facts.reads:
        labels = pd.Series([lab for _a, _u, lab in facts.reads])
        return {str(labels.value_counts().index[0])}
    if facts.draft is not None and policy.prelabels != PrelabelUse.IGNORE:
        return {facts.draft}
    return set()


def next_task(session: Session, project: Project, user: User, *,
              now: datetime | None = None) -> NextTask:
    """The reader's next task, leased to them for ``policy.lease_minutes``.

    In order: the task they already hold (an unexpired lease); their calibration batch while
    it is unfinished; then, at the policy's gold rate, a gold item they have not read; else the
    best free slot of a stage they qualify for (role, tier, specialty), skipping items they
    already have a slot on and items whose provisional class they are suspended for. Best:
    items with an overdue escalation first, then adjudications, reviews, reads; within a stage,
    the higher priority (uncertain items) first, then the oldest. Under ``routing: skill``
    (single-label classification), when the best free slot is a read, the read is chosen among
    the free reads by how likely this reader's read is to settle the item
    (:mod:`truthset.workflow.routing`; see :func:`_route`).
    """
    now = now or utcnow()
    _lock_user(session, user)
    cur = current_policy(session, project)
    policy = cur.policy
    stages = _qualified_stages(session, project, user, policy)
    if not stages:
        return NextTask(None, "you qualify for no stage of this project's policy (role, tier "
                              "or specialty)")
    held = session.scalar(select(Task).where(
        Task.project_id == project.id, Task.assignee_id == user.id, Task.status == LEASED,
        Task.lease_expires_at > now).order_by(Task.id).limit(1))
    if held is not None:
        return NextTask(_view(session, project, held, policy), "your current task")
    if policy.calibration is not None:
        status = rd.status_of(session, project, user)
        if status is not None and status.status == rd.FAILED:
            return NextTask(None, status.message)
        if status is None or status.status != rd.PASSED:
            task = _known_answer_task(session, project, user, "calibration", Stage.CALIBRATE,
                                      policy, now)
            if task is not None:
                return NextTask(_view(session, project, task, policy), "calibration")
            has_batch = session.scalar(select(GoldItem.id).where(
                GoldItem.project_id == project.id, GoldItem.purpose == "calibration").limit(1))
            if has_batch is None:
                return NextTask(None, "the policy asks for calibration but the project has no "
                                      "calibration items yet; ask a manager")
            result = rd.score_calibration(session, project, user, policy)
            if result.status != rd.PASSED:
                return NextTask(None, result.message)
    if policy.gold is not None and policy.gold.rate > 0 and Stage.ANNOTATE in stages:
        taken = session.scalar(select(func.count(Task.id)).where(
            Task.project_id == project.id, Task.assignee_id == user.id)) or 0
        if stable_uniform("gold-rate", project.id, user.id, taken) < policy.gold.rate:
            task = _known_answer_task(session, project, user, "gold", Stage.ANNOTATE, policy,
                                      now)
            if task is not None:
                return NextTask(_view(session, project, task, policy), "")
    task = _claim(session, project, user, stages, policy, now, cur.version)
    if task is None:
        return NextTask(None, "no task is waiting for you right now")
    return NextTask(_view(session, project, task, policy), "")


def _free_slots(project: Project, user: User, stages: list[Stage],
                now: datetime) -> list[ColumnElement[bool]]:
    """Conditions of a slot ``user`` may take now: the project's, of a stage they qualify for,
    free (open, or its lease expired), on an item they have no slot on (any status but
    cancelled/superseded), and not escalated above their tier."""
    other = aliased(Task)
    mine = exists().where(other.item_id == Task.item_id, other.assignee_id == user.id,
                          other.id != Task.id,
                          other.status.in_((OPEN, LEASED, DONE, SKIPPED, FLAGGED)))
    free = or_(Task.status == OPEN, and_(Task.status == LEASED, Task.lease_expires_at < now))
    # An escalation raised past its first tier (overdue) needs a reader of that tier.
    above = exists().where(Escalation.item_id == Task.item_id, Escalation.status == "open",
                           Escalation.to_tier > user.tier)
    return [Task.project_id == project.id, Task.stage.in_([s.value for s in stages]), free,
            ~mine, ~above]


def _overdue(now: datetime) -> Exists:
    """The slot's item has an open escalation past its deadline."""
    return exists().where(Escalation.item_id == Task.item_id, Escalation.status == "open",
                          Escalation.due_at < now)


def _claim(session: Session, project: Project, user: User, stages: list[Stage],
           policy: Policy, now: datetime, version: int = 0) -> Task | None:
    """Lock and lease the best free slot for ``user``: queue order, except that under
    ``routing: skill`` a best slot that is a read (not overdue) lets :func:`_route` choose
    among the reads."""
    filters = _free_slots(project, user, stages, now)
    overdue = _overdue(now)
    rank = case(_STAGE_RANK, value=Task.stage, else_=0)
    order = (overdue.desc(), rank.desc(), Task.priority.desc(), Task.id)
    suspended = set(rd.suspended_classes(session, project, user))
    routed = (policy.routing == Routing.SKILL and Stage.ANNOTATE in stages
              and schema_shape(_rules(session, project).schema) == "single")
    skip: list[int] = []
    for _attempt in range(200):
        not_skipped = [Task.id.not_in(skip)] if skip else []
        if routed:
            # Look (without locking) at what queue order would give: only a read is routed.
            best = session.execute(select(Task.id, Task.item_id, Task.stage,
                                          overdue.label("overdue"))
                                   .where(*filters, *not_skipped).order_by(*order)
                                   .limit(1)).first()
            if best is None:
                return None
            if suspended and _provisional_classes(session, project, best.item_id,
                                                  policy) & suspended:
                skip.append(best.id)
                continue
            routed = False  # routed once per call; after that, queue order
            if best.stage == Stage.ANNOTATE.value and not best.overdue:
                chosen = _route(session, project, user, policy, version, suspended, skip,
                                now)
                if chosen is not None:
                    _lease(session, chosen, user, policy, now)
                    return chosen
        task = session.scalar(select(Task).where(*filters, *not_skipped).order_by(*order)
                              .limit(1).with_for_update(skip_locked=True, of=Task))
        if task is None:
            return None
        if suspended and _provisional_classes(session, project, task.item_id,
                                              policy) & suspended:
            skip.append(task.id)
            continue
        _lease(session, task, user, policy, now)
        return task
    return None


#: Seconds after which routing's kept reader model is fitted anew even without new reads.
ROUTING_MODEL_SECONDS = 60.0
_reader_models: dict[tuple[str, int, str, int], tuple[ReaderModel, int, int, float]] = {}
_reader_models_lock = threading.Lock()


def reader_model(session: Session, project: Project, policy: Policy, version: int,
                 classes: tuple[str, ...]) -> ReaderModel | None:
    """The reader model ``routing: skill`` chooses with: each reader's likelihood from the
    policy's consensus method fitted on the project's reads (:func:`consensus_fit`).

    The fit is kept in this process and reused until the project has
    :data:`~truthset.workflow.routing.REFIT_EVERY` more reads, its known answers change, the
    policy version changes, or :data:`ROUTING_MODEL_SECONDS` pass (readers' skills move
    slowly); an item's posterior is computed from its own reads under it (routing's
    candidates, and the decision at each submit: :func:`_posterior`). ``None`` when the method
    cannot be fitted yet or has no reader model.
    """
    kept = kept_reader_model(session, project, policy, version, classes)
    return None if kept is None else kept[0]


def kept_reader_model(session: Session, project: Project, policy: Policy, version: int,
                      classes: tuple[str, ...], reads: int | None = None
                      ) -> tuple[ReaderModel, int] | None:
    """:func:`reader_model` and the number of project reads it was fitted on (``reads``: the
    project's read count when the caller has it)."""
    reads = _read_count(session, project) if reads is None else reads
    golds = session.scalar(select(func.count(GoldItem.id)).where(
        GoldItem.project_id == project.id)) or 0
    key = (session.get_bind().engine.url.render_as_string(hide_password=True), project.id,
           str(project.created_at), version)
    now = time.monotonic()
    with _reader_models_lock:
        kept = _reader_models.get(key)
    if (kept is not None and 0 <= reads - kept[1] < REFIT_EVERY and golds == kept[2]
            and now - kept[3] < ROUTING_MODEL_SECONDS):
        return kept[0], kept[1]
    fit = consensus_fit(session, project, policy, classes)
    if fit is None:
        return None
    try:
        model = ReaderModel.from_fit(fit, classes)
    except TypeError:
        return None
    with _reader_models_lock:
        if len(_reader_models) >= 256:  # many projects in one process: forget the oldest
            del _reader_models[min(_reader_models, key=lambda k: _reader_models[k][3])]
        _reader_models[key] = (model, reads, golds, now)
    return model, reads


#: Free read slots (one per item) ``routing: skill`` chooses among.
ROUTING_WINDOW = 200


def _route(session: Session, project: Project, user: User, policy: Policy, version: int,
           suspended: set[str], skip: list[int], now: datetime) -> Task | None:
    """``routing: skill``: the annotate slot :func:`truthset.workflow.routing.pick` chooses
    for ``user``, locked with ``FOR UPDATE SKIP LOCKED``; ``None`` leaves the choice to queue
    order.

    The candidates are the first :data:`ROUTING_WINDOW` free annotate slots ``user`` may take
    (not overdue, not ``skip``), in queue order, one per item and no known-answer item, plus
    the best fresh item (no done read yet) when the window missed it. The reader model is
    :func:`reader_model` (fitted on the project's reads, refitted every
    :data:`~truthset.workflow.routing.REFIT_EVERY` new reads); each candidate's posterior is
    computed from its own reads under it, and its read count counts them (a draft counted as
    a read under ``prelabels: draft``); the base rules give ``target`` and the reads an item
    needs before it may settle (``m``/``k``; ``by_risk`` overrides are not consulted). No
    reader model (too few reads), fewer than two candidates, or nothing lockable: ``None``.
    A chosen slot whose item's provisional class ``user`` is suspended for, or that another
    reader locked or took meanwhile, gives way to the next choice.
    """
    filters = [*_free_slots(project, user, [Stage.ANNOTATE], now), ~_overdue(now),
               ~exists().where(GoldItem.item_id == Task.item_id)]
    if skip:
        filters.append(Task.id.not_in(skip))
    window = select(Task.id, Task.item_id).where(*filters).order_by(Task.priority.desc(),
                                                                     Task.id)
    rows = list(session.execute(window.limit(ROUTING_WINDOW)).all())
    done = aliased(Task)
    fresh = session.execute(window.where(~exists().where(
        done.item_id == Task.item_id, done.stage == Stage.ANNOTATE.value,
        done.status == DONE)).limit(1)).first()
    slots: dict[int, int] = {}  # item id -> its best slot, in queue order
    for slot_id, item_id in [*rows, *([fresh] if fresh is not None else [])]:
        slots.setdefault(int(item_id), int(slot_id))
    if len(slots) < 2:
        return None
    classes = _rules(session, project).schema.class_names
    readers = reader_model(session, project, policy, version, classes)
    if readers is None:
        return None
    own: dict[str, list[tuple[str, str | None]]] = {}
    for item, annotator, label in _reads_table(session, project, policy,
                                               list(slots)).itertuples(index=False):
        own.setdefault(str(item), []).append((str(annotator), label))
    candidates = [Candidate(slot_id, len(own.get(str(item_id), [])),
                            readers.posterior(own[str(item_id)]) if own.get(str(item_id))
                            else None)
                  for item_id, slot_id in slots.items()]
    rules = policy.for_risk(None)
    item_of: dict[Hashable, int] = {slot_id: item_id for item_id, slot_id in slots.items()}
    for _attempt in range(20):
        if not candidates:
            return None
        chosen = candidates.pop(pick(candidates, readers, user.username, target=rules.target,
                                     min_reads=rules.first_reads))
        if suspended and _provisional_classes(session, project, item_of[chosen.key],
                                              policy) & suspended:
            continue
        locked = session.scalar(
            select(Task).where(Task.id == chosen.key, *filters)
            .with_for_update(skip_locked=True, of=Task)
            .execution_options(populate_existing=True))
        if locked is not None:
            return locked
    return None


def release_expired(session: Session, project: Project, *, now: datetime | None = None) -> int:
    """Return every slot whose lease ran out to the pool (open, no holder). Returns how many.

    :func:`next_task` already hands expired slots out; this makes it visible in listings.
    """
    now = now or utcnow()
    expired = session.scalars(select(Task).where(
        Task.project_id == project.id, Task.status == LEASED, Task.lease_expires_at < now)
        .with_for_update(skip_locked=True)).all()
    for task in expired:
        task.status, task.assignee_id, task.lease_expires_at = OPEN, None, None
    session.flush()
    return len(expired)


# -- submitting ----------------------------------------------------------------------------------
def held_task(session: Session, project: Project, user: User, task_id: int, what: str,
              now: datetime) -> tuple[Task, Item]:
    """Lock reader, item and the item's slots, and check that ``task_id`` is leased to
    ``user`` and not finished or expired (whatever its stage). Returns the task and its item.

    Raises
    ------
    NotFoundError
        No such task in the project.
    TaskDeniedError, TaskConflictError
        Not the caller's task; already finished; lease expired.
    """
    return _locked_task(session, project, user, task_id, None, what, now)


def _locked_task(session: Session, project: Project, user: User, task_id: int,
                 stage: str | None, what: str, now: datetime) -> tuple[Task, Item]:
    """Lock reader, item and the item's slots (in that order), then check the lease."""
    _lock_user(session, user)
    item_id = session.scalar(select(Task.item_id).where(Task.id == task_id,
                                                         Task.project_id == project.id))
    if item_id is None:
        raise NotFoundError(f"no task {task_id} in project {project.key!r}")
    item = session.scalars(select(Item).where(Item.id == item_id).with_for_update()).one()
    slots = session.scalars(select(Task).where(Task.item_id == item_id).with_for_update()
                            .execution_options(populate_existing=True)).all()
    found = next(t for t in slots if t.id == task_id)
    if found.assignee_id != user.id:
        raise _refuse(TaskDeniedError(f"task {task_id} is not leased to you"), found, user, what)
    if found.status in (DONE, SKIPPED, FLAGGED):
        done = {DONE: "submitted", SKIPPED: "skipped", FLAGGED: "flagged"}[found.status]
        raise _refuse(TaskConflictError(f"task {task_id} was already {done}"), found, user,
                      what)
    if found.status != LEASED:
        raise _refuse(TaskConflictError(f"task {task_id} is {found.status}"), found, user, what)
    expires = aware(found.lease_expires_at)
    if expires is None or expires < now:
        raise _refuse(TaskConflictError(
            f"your lease on task {task_id} expired at {expires:%Y-%m-%d %H:%M} UTC; ask for "
            "a new task" if expires else f"task {task_id} has no lease"), found, user, what)
    if stage is not None and found.stage != stage and not (stage == Stage.ANNOTATE.value
                                     and found.stage == Stage.CALIBRATE.value):
        raise _refuse(TaskConflictError(
            f"task {task_id} is a {found.stage} task; use the {found.stage} action"),
            found, user, what)
    return found, item


def _finish(session: Session, task: Task, user: User, outcome: str, version: int,
            time_spent_s: float | None, now: datetime) -> None:
    task.status, task.completed_at = DONE, now
    session.add(TaskOutcome(project_id=task.project_id, task_id=task.id, item_id=task.item_id,
                            user_id=user.id, stage=task.stage, outcome=outcome,
                            policy_version=version, time_spent_s=time_spent_s))


def _time(value: float | None, task: Task, user: User, what: str) -> float | None:
    if value is not None and not 0 <= value <= 86400:
        raise _refuse(TaskInputError("time spent must be between 0 and 86400 seconds",
                                     field="time_spent_s"), task, user, what)
    return value


def _clean(session: Session, project: Project, payload: Any, task: Task, user: User,
           what: str, item: Item) -> dict[str, Any]:
    """The payload checked against the schema and, for geometric schemas, every object
    against the item's image (``objects.<k>.<field>`` named)."""
    schema = _rules(session, project).schema
    try:
        clean = schema.validate_payload(payload)
        if schema.kind in (SchemaKind.BOX, SchemaKind.POLYGON, SchemaKind.MASK):
            parse_objects(clean, bounds=ImageBounds.from_media(item.media))
        return clean
    except InputError as exc:
        raise _refuse(TaskInputError(exc.reason, field=exc.field or "payload"), task, user,
                      what) from None


def _annotation(session: Session, project: Project, task: Task, user: User,
                payload: dict[str, Any], time_spent_s: float | None, *, now: datetime,
                source: str = "human", parent: int | None = None) -> Annotation:
    """Store a read made at ``now`` (the service's clock, as the task's completion time)."""
    current = _rules(session, project)
    row = Annotation(project_id=project.id, item_id=task.item_id, task_id=task.id,
                     author_id=user.id, source=source, payload=payload,
                     schema_version=current.schema_version,
                     guideline_version=current.guideline_version, time_spent_s=time_spent_s,
                     parent_id=parent, created_at=now)
    session.add(row)
    session.flush()
    acceptance.record_read(session, project, row)  # what the reader did with a model draft
    return row


def submit(session: Session, project: Project, user: User, task_id: int, payload: Any, *,
           time_spent_s: float | None = None, now: datetime | None = None) -> SubmitResult:
    """Submit the reader's label for an annotate (or calibration) task they hold.

    ``now`` is the service's clock (default: the current time): the lease is checked against
    it and the read and the task's completion are stamped with it (as in :func:`review` and
    :func:`adjudicate`), so a simulation can replay reads made over days.

    Raises
    ------
    TaskDeniedError
        The task is not leased to the caller.
    TaskConflictError
        Already submitted, the lease expired, or it is a review/adjudication task.
    TaskInputError
        The payload does not fit the schema (the field is named).
    """
    now = now or utcnow()
    what = "submit"
    task, item = _locked_task(session, project, user, task_id, Stage.ANNOTATE.value, what, now)
    clean = _clean(session, project, payload, task, user, what, item)
    spent = _time(time_spent_s, task, user, what)
    cur = current_policy(session, project)
    gold = session.scalar(select(GoldItem).where(GoldItem.item_id == item.id))
    row = _annotation(session, project, task, user, clean, spent, now=now)
    if gold is not None:
        _finish(session, task, user, "calibration" if gold.purpose == "calibration" else "gold",
                cur.version, spent, now)
        session.flush()
        if gold.purpose == "gold":
            rd.check_gold(session, project, user, cur.policy)
        return SubmitResult(task.id, row.id, "known", "scored")
    _finish(session, task, user, "read", cur.version, spent, now)
    session.flush()
    decision = advance(session, project, item, current=cur, now=now)
    return SubmitResult(task.id, row.id, "final" if decision.action == "final" else "pending",
                        f"{decision.action}: {decision.reason}")


def skip(session: Session, project: Project, user: User, task_id: int, *,
         now: datetime | None = None) -> SubmitResult:
    """Give back a task the reader holds without reading it.

    The slot is closed as ``skipped`` (it stays with the reader as the record that they passed)
    and a fresh open slot of the same stage, priority and age takes its place in the pool, so
    the item still gets the reads it needs from somebody else (an open escalation follows the
    new slot). The reader is **not offered the item again**, in any stage: a reader who passes
    on a case is not the one to read it later; an item nobody qualified is left to read shows
    in the queue overview (:func:`queue_overview`, oldest open slot). A known-answer slot made
    for this reader is closed without a replacement; calibration tasks cannot be skipped.

    Raises
    ------
    TaskDeniedError
        The task is not leased to the caller.
    TaskConflictError
        Already finished, the lease expired, or it is a calibration task.
    """
    now = now or utcnow()
    what = "skip"
    task, item = _locked_task(session, project, user, task_id, None, what, now)
    if task.stage == Stage.CALIBRATE.value:
        raise _refuse(TaskConflictError("calibration tasks cannot be skipped; read each "
                                        "calibration case"), task, user, what)
    task.status, task.completed_at, task.lease_expires_at = SKIPPED, now, None
    known = session.scalar(select(GoldItem.id).where(GoldItem.item_id == item.id))
    if known is None:
        fresh = Task(project_id=project.id, item_id=item.id, stage=task.stage, status=OPEN,
                     priority=task.priority, created_at=task.created_at)
        session.add(fresh)
        session.flush()
        for esc in session.scalars(select(Escalation).where(Escalation.task_id == task.id,
                                                            Escalation.status == "open")):
            esc.task_id = fresh.id
    audit.record(session, action="skip", entity_type="tasks", entity_id=task.id,
                 project_id=project.id, after={"user": user.username, "stage": task.stage})
    session.flush()
    return SubmitResult(task.id, None, "pending",
                        "skipped: the task went back to the pool for another reader")


def review(session: Session, project: Project, user: User, task_id: int, decision: str, *,
           payload: Any = None, comment: str = "", time_spent_s: float | None = None,
           now: datetime | None = None) -> SubmitResult:
    """Decide a review task: ``accept`` the read, ``correct`` it (``payload`` is the corrected
    label, stored as a new revision), ``reject`` it (the item is read again by someone else),
    or ``escalate`` it to adjudication. ``reject`` and ``escalate`` need a ``comment``.

    Raises
    ------
    TaskDeniedError
        Not leased to the caller, or the read under review is their own.
    TaskConflictError
        Already decided, lease expired, or not a review task.
    TaskInputError
        Unknown decision, a correction without a fitting payload, or a missing comment.
    """
    now = now or utcnow()
    what = f"review:{decision}"
    task, item = _locked_task(session, project, user, task_id, Stage.REVIEW.value, what, now)
    if decision not in REVIEW_DECISIONS:
        raise _refuse(TaskInputError(f"decision must be one of {', '.join(REVIEW_DECISIONS)}",
                                     field="decision"), task, user, what)
    if decision in ("reject", "escalate") and not comment.strip():
        raise _refuse(TaskInputError(f"say why you {decision} it", field="comment"), task,
                      user, what)
    spent = _time(time_spent_s, task, user, what)
    facts = _facts(session, item)
    if facts.subject is None:
        raise _refuse(TaskConflictError("there is no read to review on this item"), task, user,
                      what)
    annotation = session.get(Annotation, facts.subject[0])
    assert annotation is not None
    if annotation.author_id == user.id:
        raise _refuse(TaskDeniedError("nobody may review their own work"), task, user, what)
    corrected: Annotation | None = None
    if decision == "correct":
        clean = _clean(session, project, payload, task, user, what, item)
        same = (core_payload(clean) == core_payload(facts.payload(facts.subject[0]))
                if schema_shape(_rules(session, project).schema) != "single"
                else _label(clean) == facts.subject[1])
        if same:
            raise _refuse(TaskInputError("a correction must change the label; accept it "
                                         "instead", field="label"), task, user, what)
        corrected = _annotation(session, project, task, user, clean, spent, now=now,
                                parent=annotation.id)
        session.flush()
    session.add(Review(project_id=project.id, annotation_id=annotation.id, reviewer_id=user.id,
                       decision=decision, comment=comment,
                       corrected_annotation_id=corrected.id if corrected else None))
    acceptance.record_review(session, project, annotation, decision)  # on a model draft
    cur = current_policy(session, project)
    _finish(session, task, user, decision, cur.version, spent, now)
    session.flush()
    result = advance(session, project, item, current=cur, now=now)
    return SubmitResult(task.id, corrected.id if corrected else None,
                        "final" if result.action == "final" else "pending",
                        f"{result.action}: {result.reason}")


def adjudicate(session: Session, project: Project, user: User, task_id: int, payload: Any, *,
               reason: str, time_spent_s: float | None = None,
               now: datetime | None = None) -> SubmitResult:
    """Give the final label of an escalated item, with the reason (required).

    Raises
    ------
    TaskDeniedError
        Not leased to the caller, or they read the item themselves.
    TaskConflictError
        Already decided, lease expired, or not an adjudication task.
    TaskInputError
        The payload does not fit the schema, or no reason was given.
    """
    now = now or utcnow()
    what = "adjudicate"
    task, item = _locked_task(session, project, user, task_id, Stage.ADJUDICATE.value, what,
                              now)
    if not reason.strip():
        raise _refuse(TaskInputError("an adjudication needs a reason", field="reason"), task,
                      user, what)
    clean = _clean(session, project, payload, task, user, what, item)
    spent = _time(time_spent_s, task, user, what)
    authors = set(session.scalars(select(Annotation.author_id).where(
        Annotation.item_id == item.id, Annotation.source == "human")))
    if user.id in authors:
        raise _refuse(TaskDeniedError("nobody may adjudicate an item they labelled"), task,
                      user, what)
    row = _annotation(session, project, task, user, {**clean, "reason": reason.strip()}, spent,
                      now=now, source=ADJUDICATION_SOURCE)
    cur = current_policy(session, project)
    _finish(session, task, user, "adjudicate", cur.version, spent, now)
    session.flush()
    result = advance(session, project, item, current=cur, now=now)
    return SubmitResult(task.id, row.id, "final" if result.action == "final" else "pending",
                        f"{result.action}: {result.reason}")


# -- listings ------------------------------------------------------------------------------------
def queue_summary(session: Session, project: Project,
                  now: datetime | None = None) -> pd.DataFrame:
    """Slots per stage and status (``leased`` split into running and ``expired``)."""
    now = now or utcnow()
    rows = session.execute(select(Task.stage, Task.status, Task.lease_expires_at).where(
        Task.project_id == project.id)).all()
    frame = pd.DataFrame(
        [(s, "expired" if st == LEASED and (aware(e) or now) < now else st) for s, st, e in rows],
        columns=["stage", "status"])
    if frame.empty:
        return pd.DataFrame(columns=["stage", "status", "n"])
    return frame.value_counts().rename("n").reset_index().sort_values(["stage", "status"])


def queue_overview(session: Session, project: Project,
                   now: datetime | None = None) -> dict[str, Any]:
    """The queue at a glance: slots per stage and status (:func:`queue_summary`), per stage the
    outstanding slots and the age of the oldest one (open or leased, from when it was made),
    and the open and overdue escalations."""
    now = now or utcnow()
    summary = queue_summary(session, project, now)
    counts = [{"stage": str(r.stage), "status": str(r.status), "n": int(r.n)}
              for r in summary.itertuples()]
    stages = []
    for stage, n, oldest in session.execute(
            select(Task.stage, func.count(Task.id), func.min(Task.created_at))
            .where(Task.project_id == project.id, Task.status.in_(OUTSTANDING))
            .group_by(Task.stage).order_by(Task.stage)).all():
        made = aware(oldest)
        stages.append({"stage": stage, "outstanding": int(n), "oldest_created_at": made,
                       "oldest_age_hours": round((now - made).total_seconds() / 3600, 2)
                       if made is not None else None})
    escalations = session.execute(select(
        func.count(Escalation.id),
        func.count(case((Escalation.due_at < now, Escalation.id)))).where(
        Escalation.project_id == project.id, Escalation.status == "open")).one()
    return {"as_of": now, "counts": counts, "stages": stages,
            "escalations": {"open": int(escalations[0]), "overdue": int(escalations[1])}}
