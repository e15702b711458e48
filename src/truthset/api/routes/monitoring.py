"""What the dashboards plot: agreement over time and readers against the consensus."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from truthset.api.deps import CtxDep
from truthset.api.routes.common import KEY_PATTERN, PREFIX, load_project
from truthset.auth.policy import Action
from truthset.workflow import monitoring

router = APIRouter(prefix=PREFIX + "/projects/{key}", tags=["quality"])

Key = Annotated[str, Path(pattern=KEY_PATTERN, description="Project key.")]


class PeriodAgreementOut(BaseModel):
    """Agreement on the items finished in one period ``[start, end)`` (UTC)."""

    start: str
    end: str
    n_items: int
    n_reads: int
    n_compared: int
    value: float | None
    ci: tuple[float, float] | None
    reason: str | None


class AgreementTrendOut(BaseModel):
    """Agreement per day or week, oldest first."""

    metric: str
    level: str
    period: str
    periods: list[PeriodAgreementOut]


class ReaderVsConsensusOut(BaseModel):
    """One reader against the final consensus."""

    reader: str
    reads: int
    compared: int
    agreed: int
    agreement: float | None
    ci: tuple[float, float] | None
    kappa: float | None
    median_time_s: float | None
    confusion: list[list[int]]


class ReadersAgreementOut(BaseModel):
    """Every reader against the final consensus; ``classes`` orders the confusion matrices
    (rows: the reader's label, columns: the consensus)."""

    classes: list[str]
    readers: list[ReaderVsConsensusOut]


@router.get("/agreement/trend", response_model=AgreementTrendOut)
def agreement_trend(
    key: Key, ctx: CtxDep,
    period: Annotated[Literal["day", "week"], Query(description="Group by UTC day or by week "
                                                    "(starting Monday).")] = "week",
    metric: Annotated[str, Query(max_length=32, description="krippendorff, fleiss, ac1 or "
                                 "percent.")] = "krippendorff",
    level: Annotated[str, Query(max_length=16)] = "nominal",
    ci: Annotated[bool, Query(description="Bootstrap a 95% interval per period.")] = True,
    n_boot: Annotated[int, Query(ge=100, le=5000, description="Bootstrap resamples.")] = 500,
) -> AgreementTrendOut:
    """The readers' agreement on the items finished in each day or week (an item counts in
    the period of its last current read), with a 95% bootstrap interval per period."""
    project, _ = load_project(ctx, key, Action.AGREEMENT_READ)
    rows = monitoring.agreement_over_time(ctx.session, project, period=period, metric=metric,
                                          level=level, ci=0.95 if ci else None, n_boot=n_boot)
    return AgreementTrendOut(metric=metric, level=level, period=period,
                             periods=[PeriodAgreementOut(**r.to_dict()) for r in rows])


@router.get("/agreement/readers", response_model=ReadersAgreementOut)
def readers_agreement(
    key: Key, ctx: CtxDep,
    ci: Annotated[bool, Query(description="Bootstrap a 95% interval per reader.")] = True,
) -> ReadersAgreementOut:
    """Reader leaderboard: each reader's agreement with the final consensus (95% bootstrap
    interval), Cohen's kappa against it, median time per read, and confusion matrix."""
    project, _ = load_project(ctx, key, Action.AGREEMENT_READ)
    classes, rows = monitoring.readers_against_consensus(ctx.session, project,
                                                         ci=0.95 if ci else None)
    return ReadersAgreementOut(classes=classes,
                               readers=[ReaderVsConsensusOut(**r.to_dict()) for r in rows])
