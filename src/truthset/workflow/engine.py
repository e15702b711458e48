"""The pure decision core of the workflow: what does an item need next?

Both the database services (:mod:`truthset.workflow.queue`) and the simulator
(:mod:`truthset.workflow.simulate`) call :func:`decide` with an :class:`ItemState` and act on
the :class:`Decision` it returns, so a policy behaves the same in simulation and in production.
No database, no I/O: numpy and pandas only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from truthset.domain.policy import Policy, PrelabelUse, Rules, WorkflowKind
from truthset.domain.schema import RiskLevel
from truthset.quality.aggregation.base import GoldLike
from truthset.quality.aggregation.registry import make_aggregator

Action = Literal["read", "review", "adjudicate", "final"]

_RISK_ORDER = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2}

#: Reader name under which a model draft counts as a read (``prelabels: draft``).
MODEL_READER = "model"


@dataclass(frozen=True)
class ReviewOutcome:
    """A reviewer's verdict on the first read: the label they stand by, or an escalation."""

    reviewer: str
    label: str | None
    escalated: bool = False


@dataclass(frozen=True)
class ItemState:
    """What is known about one item when deciding its next step.

    Attributes
    ----------
    reads:
        Independent reads ``(reader, label)`` in the order made (a model draft is included as
        ``("model", label)`` when the policy uses drafts as reads; see :func:`reads_with_draft`).
    draft:
        The model's pre-label, if any.
    review:
        The review of the first read, if one was made.
    adjudication:
        The adjudicator's label, if one was given.
    posterior:
        Class -> probability of the consensus over ``reads`` (from a quality-engine method);
        ``None`` lets :func:`decide` use the vote shares.
    u:
        A stable number in [0, 1) for this item (review sampling); see :func:`stable_uniform`.
    """

    reads: tuple[tuple[str, str], ...] = ()
    draft: str | None = None
    review: ReviewOutcome | None = None
    adjudication: str | None = None
    posterior: Mapping[str, float] | None = None
    u: float = 0.0


@dataclass(frozen=True)
class Decision:
    """What an item needs next.

    ``action`` is ``read`` (``n`` more independent reads), ``review``, ``adjudicate`` or
    ``final`` (``label`` is the answer). ``reason`` says why, in words shown to people.
    """

    action: Action
    rules: Rules
    risk: RiskLevel | None
    n: int = 0
    label: str | None = None
    confidence: float | None = None
    agreement: float | None = None
    reason: str = ""
    posterior: dict[str, float] = field(default_factory=dict)


def stable_uniform(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts`` (same inputs, same number, on every machine)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def reads_with_draft(
    policy: Policy, reads: Sequence[tuple[str, str]], draft: str | None
) -> tuple[tuple[str, str], ...]:
    """The reads a consensus counts: the human reads, plus the draft under ``prelabels: draft``."""
    out = tuple(reads)
    if draft is not None and policy.prelabels == PrelabelUse.DRAFT:
        out = ((MODEL_READER, draft), *out)
    return out


def provisional_risk(
    policy: Policy, risks: Mapping[str, RiskLevel], state: ItemState
) -> RiskLevel | None:
    """The highest risk among the classes the draft (unless ignored) and the reads name."""
    named = [label for _r, label in state.reads]
    if state.draft is not None and policy.prelabels != PrelabelUse.IGNORE:
        named.append(state.draft)
    levels = [risks[n] for n in named if n in risks]
    return max(levels, key=_RISK_ORDER.__getitem__) if levels else None


def vote_posterior(reads: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Share of the reads per class (the majority-vote posterior)."""
    if not reads:
        return {}
    labels = pd.Series([label for _r, label in reads])
    return {str(k): float(v) for k, v in labels.value_counts(normalize=True).items()}


def decide(policy: Policy, risks: Mapping[str, RiskLevel], state: ItemState) -> Decision:
    """The next step of an item under ``policy``.

    Parameters
    ----------
    policy:
        The project's policy; the ``by_risk`` override of the item's provisional risk applies.
    risks:
        Class name -> risk level (from the label schema).
    state:
        What the item has so far.
    """
    risk = provisional_risk(policy, risks, state)
    rules = policy.for_risk(risk)

    def out(action: Action, **kw: object) -> Decision:
        return Decision(action, rules, risk, **kw)  # type: ignore[arg-type]

    if state.adjudication is not None:
        return out("final", label=state.adjudication, reason="adjudicated")
    if rules.workflow in (WorkflowKind.SINGLE_REVIEW, WorkflowKind.TIERED):
        first = state.reads[0][1] if state.reads else None
        if first is None and state.draft is not None and policy.prelabels == PrelabelUse.DRAFT:
            first = state.draft
        if first is None:
            return out("read", n=1, reason="first read")
        if state.review is not None:
            if state.review.escalated or state.review.label is None:
                return out("adjudicate", reason="escalated by the reviewer")
            verdict = "accepted" if state.review.label == first else "corrected"
            return out("final", label=state.review.label, reason=f"review {verdict}")
        label_risk = risks.get(first, RiskLevel.LOW)
        rate = 1.0 if rules.workflow == WorkflowKind.TIERED else rules.review_rate[label_risk]
        if state.u < rate:
            return out("review", label=first,
                       reason=f"{label_risk.value}-risk label, review rate {rate:.0%}")
        return out("final", label=first,
                   reason=f"not sampled for review ({label_risk.value}-risk rate {rate:.0%})")

    reads = state.reads
    n = len(reads)
    need = rules.k if rules.workflow == WorkflowKind.CONSENSUS else rules.m
    if n < need:
        return out("read", n=need - n, reason=f"{n} of {need} reads")
    posterior = dict(state.posterior) if state.posterior else vote_posterior(reads)
    label = max(posterior, key=lambda c: (posterior[c], -list(posterior).index(c)))
    confidence = float(posterior[label])
    agreement = float(np.mean([lab == label for _r, lab in reads]))
    common = {"label": label, "confidence": confidence, "agreement": agreement,
              "posterior": posterior}
    if rules.workflow == WorkflowKind.CONSENSUS:
        if confidence < rules.target:
            return out("adjudicate", reason=f"posterior {confidence:.2f} under target "
                                            f"{rules.target:.2f}", **common)
        if agreement < rules.min_agreement:
            return out("adjudicate", reason=f"agreement {agreement:.2f} under "
                                            f"{rules.min_agreement:.2f}", **common)
        return out("final", reason=f"consensus of {n} reads", **common)
    # adaptive
    if confidence >= rules.target:
        return out("final", reason=f"posterior {confidence:.2f} reached target after {n} reads",
                   **common)
    if n < rules.k_max:
        return out("read", n=1, reason=f"posterior {confidence:.2f} under target "
                                       f"{rules.target:.2f}; one more read", **common)
    if rules.on_exhausted == "accept":
        return out("final", reason=f"k_max {rules.k_max} reached; accepted", **common)
    return out("adjudicate", reason=f"k_max {rules.k_max} reached with posterior "
                                    f"{confidence:.2f}", **common)


def consensus_posteriors(
    method: str,
    classes: Sequence[str],
    table: pd.DataFrame,
    gold: GoldLike = None,
) -> pd.DataFrame:
    """Item x class posterior of ``method`` fitted on a long table ``item, annotator, label``
    (gold answers clamped). Empty table -> empty frame."""
    if table.empty:
        return pd.DataFrame(columns=list(classes), dtype=float)
    if gold is not None and len(gold):
        seen = set(table["item"])
        gold = gold[[i in seen for i in gold.index]] if isinstance(gold, pd.Series) else gold
    model = make_aggregator(method, classes=list(classes))
    model.fit(table[["item", "annotator", "label"]], gold=gold)
    return model.probas_
