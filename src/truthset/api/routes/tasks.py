"""The workflow over HTTP: policy, the task queue, reviews, adjudications, reader statistics
and escalations.

Blinding: a task in the annotate stage shows its item and nothing any other reader said; a
review shows the one read under review; an adjudication shows every read side by side. Refused
task actions (not your task, twice, expired lease, bad payload) are audited in a transaction of
their own after the request's is rolled back (:func:`install_refusal_handler`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from truthset.api.deps import Ctx, CtxDep
from truthset.api.errors import error_body
from truthset.api.routes.common import KEY_PATTERN, PREFIX, load_project
from truthset.auth.policy import Action
from truthset.domain.errors import InputError, NotFoundError, PermissionDeniedError
from truthset.jobs.handlers import overdue_check_status
from truthset.store.models import User
from truthset.workflow import analysis, escalations, policies, queue
from truthset.workflow import readers as rd
from truthset.workspace.users import get_user

log = logging.getLogger("truthset.api")

router = APIRouter(prefix=PREFIX + "/projects/{key}", tags=["workflow"])

Key = Annotated[str, Path(pattern=KEY_PATTERN, description="Project key.")]
TaskId = Annotated[int, Path(ge=1, le=2**62, description="Task id.")]
Username = Annotated[str, Path(min_length=1, max_length=100, description="User name.")]


# -- bodies ------------------------------------------------------------------------------------
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyIn(_In):
    """A workflow policy as YAML text (see docs/workflow.md)."""

    text: str = Field(min_length=1, max_length=100_000)


class PolicyOut(BaseModel):
    """The policy in force (version 0: the built-in default)."""

    version: int
    policy: dict[str, Any]
    cautions: list[str] = Field(
        default_factory=list,
        description="Settings that are valid but seldom what is meant (Policy.cautions).")


class EnqueueIn(_In):
    """Items to put into the workflow (external ids); ``null``: every item not yet queued."""

    items: list[Annotated[str, Field(min_length=1, max_length=255)]] | None = Field(
        default=None, max_length=100_000)


class EnqueueOut(BaseModel):
    """How many items were queued."""

    queued: int


class TaskOut(BaseModel):
    """A task leased to you. ``context``: the read under review (review), every read and the
    escalation (adjudicate), or the model draft (annotate, under ``prelabels: draft``).

    Multi-label and geometric (box, polygon, mask) projects add each read's ``payload``
    (its ``labels`` or ``objects``; ``label`` is then ``null``) and, for an adjudication,
    ``consensus``: the fused objects with how many readers saw each (``support``,
    ``readers``), the findings too few readers saw (``minority``), the agreement figure and
    target, and why the item was escalated (see docs/api.md)."""

    task_id: int
    project: str
    item_id: int
    external_id: str
    stage: str
    lease_expires_at: datetime | None
    schema_version: int
    guideline_version: int | None
    context: dict[str, Any]


class NextTaskOut(BaseModel):
    """Your next task, or ``null`` and why."""

    task: TaskOut | None
    reason: str


class SubmitIn(_In):
    """A label for an annotate or calibration task."""

    payload: dict[str, Any]
    time_spent_s: float | None = Field(default=None, ge=0, le=86400)


class ReviewIn(_In):
    """A review decision; ``payload`` is the corrected label (``correct`` only); ``comment``
    is required for ``reject`` and ``escalate``."""

    decision: str = Field(pattern="^(accept|correct|reject|escalate)$")
    payload: dict[str, Any] | None = None
    comment: str = Field(default="", max_length=10_000)
    time_spent_s: float | None = Field(default=None, ge=0, le=86400)


class AdjudicationIn(_In):
    """The final label of an escalated item and the reason for it (required). Geometric
    projects send ``{"objects": [...]}``: every object is checked against the schema and the
    item's image (422 naming ``payload``'s ``objects.<k>.<field>``)."""

    payload: dict[str, Any]
    reason: str = Field(min_length=1, max_length=10_000)
    time_spent_s: float | None = Field(default=None, ge=0, le=86400)


class FlagIn(_In):
    """Why the item is unclear (required; it goes to the adjudicator with the item)."""

    reason: str = Field(min_length=1, max_length=escalations.MAX_REASON)


class SubmitOut(BaseModel):
    """What the action did to its item."""

    task_id: int
    annotation_id: int | None
    item_status: str
    next_step: str


class QueueCountOut(BaseModel):
    """Slots of one stage in one status (``expired``: a lease that ran out)."""

    stage: str
    status: str
    n: int


class QueueStageOut(BaseModel):
    """Outstanding (open or leased) slots of one stage and the age of the oldest."""

    stage: str
    outstanding: int
    oldest_created_at: datetime | None
    oldest_age_hours: float | None


class QueueEscalationsOut(BaseModel):
    """Open escalations and how many of them are past their deadline."""

    open: int
    overdue: int


class QueueOverviewOut(BaseModel):
    """The queue at a glance."""

    as_of: datetime
    counts: list[QueueCountOut]
    stages: list[QueueStageOut]
    escalations: QueueEscalationsOut


class CostRowOut(BaseModel):
    """Cost and estimated quality of the final labels of one policy version or one class."""

    group: str
    items: int
    labels_per_item: float
    minutes_per_item: float
    est_accuracy: float | None
    adjudicated: float
    in_other_classes: int | None = Field(
        None, description="Class rows: how many of the row's items count in another class row "
                          "too (multi-label and geometric projects); null on policy rows.")


class KnownAnswerCostOut(BaseModel):
    """Reads spent on gold and calibration items, and their reader-minutes."""

    reads: int
    minutes: float


class CostOut(BaseModel):
    """Cost per final label, by policy version and by class."""

    by_policy: list[CostRowOut]
    by_class: list[CostRowOut]
    known_answer: KnownAnswerCostOut
    class_counting: str = Field(
        description="final_class: each item counts in its one final class (single-label and "
                    "ordinal); each_class_present: in every class present in its final label "
                    "(multi-label, geometric; '(no class)' when none), so class rows may add up "
                    "to more items than the policy rows.")


class DisagreementClassOut(BaseModel):
    """Disagreement on one class. Single-label: ``contradicted`` is the share of ordered pairs
    of reads on one item where the first says the class and the second another. Box,
    polygon, mask, multi-label: the first marks the class on the item and the second does
    not; ``agreement`` is the pairs' matched F1 pooled over their objects of the class (masks:
    mean Dice; multi-label: positive specific agreement), named by ``metric``."""

    model_config = ConfigDict(populate_by_name=True)

    class_name: str = Field(alias="class")
    reads: int
    items: int
    contradicted: float | None
    confused_with: str | None
    agreement: float | None = None
    metric: str | None = None


class DisagreementPairOut(BaseModel):
    """Two readers over their shared items: percent agreement and Cohen's kappa
    (single-label), or the pooled matched F1 / mean Dice (``metric``) overall and
    ``per_class`` (``null``: neither marked the class); least agreeing first."""

    reader_a: str
    reader_b: str
    shared: int
    agreement: float | None
    kappa: float | None
    metric: str | None = None
    per_class: dict[str, float | None] = Field(default_factory=dict)


class GuidelineCandidateOut(BaseModel):
    """An item readers split on: ``entropy`` of its labels (single-label) or
    ``disagreement`` = 1 − its mean pairwise matched F1 / Dice (``metric``); ``labels``:
    class -> reads (readers) naming it; ``final``: the current consensus class (single-label)
    or class -> objects of the consensus label."""

    item_id: int
    item: str | None
    reads: int
    labels: dict[str, int]
    entropy: float | None = None
    disagreement: float | None = None
    metric: str | None = None
    final: Any = None


class DisagreementOut(BaseModel):
    """Disagreement per class, per reader pair, and the candidate guideline examples."""

    by_class: list[DisagreementClassOut]
    by_pair: list[DisagreementPairOut]
    candidates: list[GuidelineCandidateOut]


class EscalationOut(BaseModel):
    """An escalated item with its deadline."""

    id: int
    item_id: int
    item: str
    from_tier: int
    to_tier: int
    reason: str
    status: str
    due_at: datetime
    overdue: bool
    hours_overdue: float
    assignee: str | None


class ReaderSummaryOut(BaseModel):
    """One reader against known answers: ``accuracy`` is the mean score of their reads
    (single-label: the share correct; see ``ReaderStatsOut.scoring``)."""

    reader: str
    n_gold: int
    accuracy: float | None
    min_sensitivity: float | None
    calibration: str | None
    suspended: str


class ReaderStatsOut(BaseModel):
    """One reader in detail: overall score (``accuracy``), per-class sensitivity and
    specificity (boxes and polygons: ``precision`` and ``objects`` instead of a specificity;
    masks: also ``dice``), confusion matrix (single-label schemas), trend; ``scoring`` says
    what each figure is for the project's schema."""

    reader: str
    n_gold: int
    accuracy: float | None
    per_class: list[dict[str, Any]]
    confusion: dict[str, Any]
    trend: list[dict[str, Any]]
    calibration: str | None
    suspensions: dict[str, str]
    scoring: dict[str, str] = Field(default_factory=dict)


class FeedbackOut(BaseModel):
    """Your own record and the messages addressed to you (never which items were gold)."""

    stats: ReaderStatsOut
    messages: list[str]


# -- helpers -----------------------------------------------------------------------------------
def _me(ctx: Ctx) -> User:
    user = ctx.session.get(User, ctx.principal.user_id)
    if user is None:  # pragma: no cover - authenticated users exist
        raise NotFoundError("no such user")
    return user


def _submit_out(result: queue.SubmitResult) -> SubmitOut:
    return SubmitOut(task_id=result.task_id, annotation_id=result.annotation_id,
                     item_status=result.item_status, next_step=result.next_step)


def _none(value: Any) -> Any:
    return None if value != value else value  # NaN -> None


# -- policy and queue --------------------------------------------------------------------------
@router.get("/policy", response_model=PolicyOut)
def read_policy(key: Key, ctx: CtxDep) -> PolicyOut:
    """The workflow policy in force."""
    project, _ = load_project(ctx, key, Action.PROJECT_READ)
    current = policies.current_policy(ctx.session, project)
    return PolicyOut(version=current.version, policy=current.policy.to_dict(),
                     cautions=current.policy.cautions())


@router.put("/policy", response_model=PolicyOut)
def write_policy(key: Key, body: PolicyIn, ctx: CtxDep) -> PolicyOut:
    """Store a new policy version (validated against the schema and the project's readers)."""
    project, _ = load_project(ctx, key, Action.PROJECT_UPDATE)
    row = policies.set_policy(ctx.session, project, body.text, source="policy")
    return PolicyOut(version=row.version, policy=row.definition,
                     cautions=policies.current_policy(ctx.session, project).policy.cautions())


@router.post("/tasks/enqueue", response_model=EnqueueOut)
def enqueue_items(key: Key, body: EnqueueIn, ctx: CtxDep) -> EnqueueOut:
    """Put items into the workflow under the current policy."""
    project, _ = load_project(ctx, key, Action.PROJECT_UPDATE)
    return EnqueueOut(queued=queue.enqueue(ctx.session, project, body.items))


@router.post("/tasks/next", response_model=NextTaskOut)
def next_task(key: Key, ctx: CtxDep) -> NextTaskOut:
    """Lease your next task (or get back the one you hold): calibration first, gold mixed in,
    then the best free slot you qualify for."""
    project, _ = load_project(ctx, key, Action.TASK_WORK)
    result = queue.next_task(ctx.session, project, _me(ctx))
    task = None if result.task is None else TaskOut(**result.task.to_dict())
    return NextTaskOut(task=task, reason=result.reason)


@router.post("/tasks/{task_id}/submit", response_model=SubmitOut)
def submit_task(key: Key, task_id: TaskId, body: SubmitIn, ctx: CtxDep) -> SubmitOut:
    """Submit your label for an annotate or calibration task you hold."""
    project, _ = load_project(ctx, key, Action.TASK_WORK)
    return _submit_out(queue.submit(ctx.session, project, _me(ctx), task_id, body.payload,
                                    time_spent_s=body.time_spent_s))


@router.post("/tasks/{task_id}/reviews", response_model=SubmitOut, status_code=201)
def review_task(key: Key, task_id: TaskId, body: ReviewIn, ctx: CtxDep) -> SubmitOut:
    """Decide a review task you hold: accept, correct, reject or escalate."""
    project, _ = load_project(ctx, key, Action.REVIEW)
    return _submit_out(queue.review(ctx.session, project, _me(ctx), task_id, body.decision,
                                    payload=body.payload, comment=body.comment,
                                    time_spent_s=body.time_spent_s))


@router.post("/tasks/{task_id}/adjudications", response_model=SubmitOut, status_code=201)
def adjudicate_task(key: Key, task_id: TaskId, body: AdjudicationIn,
                    ctx: CtxDep) -> SubmitOut:
    """Give the final label of an escalated item you hold, with the reason."""
    project, _ = load_project(ctx, key, Action.ADJUDICATE)
    return _submit_out(queue.adjudicate(ctx.session, project, _me(ctx), task_id, body.payload,
                                        reason=body.reason, time_spent_s=body.time_spent_s))


@router.get("/queue", response_model=QueueOverviewOut)
def queue_overview(key: Key, ctx: CtxDep) -> QueueOverviewOut:
    """Slots per stage and status, the oldest outstanding slot's age per stage, and the open
    and overdue escalations (managers, administrators, auditors)."""
    project, _ = load_project(ctx, key, Action.STATS_READ)
    return QueueOverviewOut.model_validate(queue.queue_overview(ctx.session, project))


def _cost_rows(frame: Any) -> list[CostRowOut]:
    shared = "in_other_classes" in frame.columns
    return [CostRowOut(group=str(group), items=int(row["items"]),
                       labels_per_item=float(row["labels_per_item"]),
                       minutes_per_item=float(row["minutes_per_item"]),
                       est_accuracy=_none(float(row["est_accuracy"])),
                       adjudicated=float(row["adjudicated"]),
                       in_other_classes=int(row["in_other_classes"]) if shared else None)
            for group, row in frame.iterrows()]


@router.get("/cost", response_model=CostOut)
def cost(key: Key, ctx: CtxDep) -> CostOut:
    """Cost per final label: items, labels and reader-minutes per item, estimated accuracy and
    the adjudicated share, by policy version and by class (on multi-label and geometric
    projects an item counts in every class present in its final label); and the known-answer
    overhead (managers, administrators, auditors)."""
    project, _ = load_project(ctx, key, Action.STATS_READ)
    report = analysis.cost_report(ctx.session, project)
    known = report["known_answer"].iloc[0]
    return CostOut(by_policy=_cost_rows(report["by_policy"]),
                   by_class=_cost_rows(report["by_class"]),
                   known_answer=KnownAnswerCostOut(reads=int(known["reads"]),
                                                   minutes=float(known["minutes"])),
                   class_counting=report["class_counting"])


def _records(frame: Any) -> list[dict[str, Any]]:
    return [{k: _none(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


@router.get("/disagreement", response_model=DisagreementOut)
def disagreement(
    key: Key, ctx: CtxDep,
    top: Annotated[int, Query(ge=1, le=500, description="Candidate examples to list.")] = 10,
) -> DisagreementOut:
    """Where readers disagree: per class, per reader pair (least agreeing first) and the items
    they split on most, candidate guideline examples (managers, administrators, auditors).
    Box, polygon and mask projects compare readers by matched F1 at the policy's
    ``iou_threshold`` or Dice, class by class."""
    project, _ = load_project(ctx, key, Action.STATS_READ)
    return DisagreementOut(
        by_class=[DisagreementClassOut.model_validate(r) for r in _records(
            analysis.disagreement_by_class(ctx.session, project))],
        by_pair=[DisagreementPairOut.model_validate(r) for r in _records(
            analysis.disagreement_by_pair(ctx.session, project))],
        candidates=[GuidelineCandidateOut.model_validate(r) for r in _records(
            analysis.guideline_candidates(ctx.session, project, n=top))])


@router.post("/tasks/{task_id}/skip", response_model=SubmitOut)
def skip_task(key: Key, task_id: TaskId, ctx: CtxDep) -> SubmitOut:
    """Give back a task you hold without reading it: the slot returns to the pool for another
    reader and you are not offered this item again."""
    project, _ = load_project(ctx, key, Action.TASK_WORK)
    return _submit_out(queue.skip(ctx.session, project, _me(ctx), task_id))


@router.post("/tasks/{task_id}/flag", response_model=SubmitOut)
def flag_task(key: Key, task_id: TaskId, body: FlagIn, ctx: CtxDep) -> SubmitOut:
    """Flag a task you hold as unclear, with the reason: no read is recorded and the item goes
    to adjudication."""
    project, _ = load_project(ctx, key, Action.TASK_WORK)
    return _submit_out(escalations.flag(ctx.session, project, _me(ctx), task_id, body.reason))


# -- readers -----------------------------------------------------------------------------------
def _stats_out(stats: rd.ReaderStats) -> ReaderStatsOut:
    return ReaderStatsOut(**stats.to_dict())


@router.get("/readers", response_model=list[ReaderSummaryOut])
def list_reader_stats(key: Key, ctx: CtxDep) -> list[ReaderSummaryOut]:
    """Every reader with known-answer reads: accuracy, calibration, suspensions."""
    project, _ = load_project(ctx, key, Action.STATS_READ)
    frame = rd.all_reader_stats(ctx.session, project)
    return [ReaderSummaryOut(**{k: _none(v) for k, v in row.items()})
            for row in frame.to_dict(orient="records")]


@router.get("/readers/me", response_model=FeedbackOut)
def my_feedback(key: Key, ctx: CtxDep) -> FeedbackOut:
    """Your own accuracy, per-class sensitivity/specificity, confusion matrix, trend and the
    messages addressed to you (calibration, suspensions)."""
    project, _ = load_project(ctx, key, Action.TASK_WORK)
    feedback = rd.reader_feedback(ctx.session, project, _me(ctx))
    return FeedbackOut(stats=_stats_out(feedback.stats), messages=feedback.messages)


@router.get("/readers/{username}", response_model=ReaderStatsOut)
def reader_detail(key: Key, username: Username, ctx: CtxDep) -> ReaderStatsOut:
    """One reader in detail."""
    project, _ = load_project(ctx, key, Action.STATS_READ)
    return _stats_out(rd.reader_stats(ctx.session, project, get_user(ctx.session, username)))


# -- escalations -------------------------------------------------------------------------------
class OverdueCheckOut(BaseModel):
    """The periodic check that raises overdue escalations: how often, when it last ran, when
    it is next due, and whether anyone is keeping time for it."""

    enabled: bool = Field(description="false: escalation_check_minutes is 0 (off).")
    period_minutes: float
    last_started_at: str | None = Field(None, description="ISO 8601 UTC; null: never ran.")
    last_finished_at: str | None = None
    status: str = Field("", description="succeeded, failed, or running.")
    runner: str = Field("", description="inprocess (the server), procrastinate or cli.")
    runs: int = 0
    raised: int = Field(0, description="This project's escalations the last run raised.")
    error: str = ""
    next_due_at: str | None = Field(
        None, description="ISO 8601 UTC start of the next period slot; null when off.")
    late: bool = Field(
        False, description="On, but it never ran or last started more than two periods ago: "
                           "no truthset serve or worker is keeping time.")
    as_of: str = Field(description="The server's clock when this was read (ISO 8601 UTC).")
    open: int = Field(description="Open escalations now.")
    overdue: int = Field(description="Open escalations past their deadline now.")


@router.get("/escalations/check", response_model=OverdueCheckOut)
def overdue_check(key: Key, ctx: CtxDep) -> OverdueCheckOut:
    """When overdue escalations were last raised without a person (the periodic check every
    ``escalation_check_minutes`` of the workspace settings), when the check is next due,
    whether it is late, and how many escalations are open and overdue now."""
    project, _ = load_project(ctx, key, Action.CONSENSUS_READ)
    return OverdueCheckOut(**overdue_check_status(
        ctx.session, project, float(ctx.workspace.config.escalation_check_minutes)))


@router.get("/escalations", response_model=list[EscalationOut])
def list_escalations(
    key: Key, ctx: CtxDep,
    status: Annotated[str | None, Query(pattern="^(open|resolved|all)$",
                                        description="open (default), resolved or all.")] = None,
    overdue: Annotated[bool, Query(description="Only those past their deadline.")] = False,
) -> list[EscalationOut]:
    """Escalated items with deadlines, oldest deadline first (overdue ones head the
    adjudicators' queue)."""
    project, _ = load_project(ctx, key, Action.CONSENSUS_READ)
    chosen = None if status == "all" else (status or "open")
    frame = escalations.list_escalations(ctx.session, project, status=chosen,
                                         overdue_only=overdue)
    return [EscalationOut(**{k: _none(v) for k, v in row.items() if k != "created_at"})
            for row in frame.to_dict(orient="records")]


# -- refusals ----------------------------------------------------------------------------------
def install_refusal_handler(app: FastAPI) -> None:
    """Audit refused task actions (in a transaction of their own, the request's having been
    rolled back) and answer 403, 409 or 422 like any other such error."""

    @app.exception_handler(queue.Refusal)
    def _refused(request: Request, exc: Exception) -> JSONResponse:
        workspace = request.app.state.workspace
        principal = getattr(request.state, "principal", None)
        try:
            with workspace.unit(principal.actor if principal else "anonymous") as session:
                queue.audit_refusal(session, exc)  # type: ignore[arg-type]
        except Exception:  # pragma: no cover - the refusal is still answered
            log.exception("could not audit a refused task action")
        if isinstance(exc, PermissionDeniedError):
            return JSONResponse(error_body("forbidden", str(exc)), status_code=403)
        if isinstance(exc, InputError):
            return JSONResponse(error_body("invalid_input", str(exc), exc.field),
                                status_code=422)
        return JSONResponse(error_body("conflict", str(exc)), status_code=409)
