"""The pure decision core of the workflow: what does an item need next?

Both the database services (:mod:`truthset.workflow.queue`) and the simulator
(:mod:`truthset.workflow.simulate`) call :func:`decide` with an :class:`ItemState` and act on
the :class:`Decision` it returns, so a policy behaves the same in simulation and in production.
No database, no I/O: numpy and pandas only.

Single and ordinal classification decide on the reads' labels and a class posterior. Given the
label ``schema``, :func:`decide` also runs:

- **multi-label** classification: each class is a yes/no question; its probability of being
  present is the policy method's posterior (``ItemState.posterior``, class -> P(present)) or the
  share of readers who marked it; the item's confidence is its least certain class
  (``min_c max(p_c, 1 - p_c)``), compared with ``target``;
- **geometric** schemas (box, polygon, mask): the reads' objects are fused by
  :func:`truthset.workflow.geometric.geometric_consensus` (weighted box fusion, STAPLE or vote);
  confidence and agreement are the mean pairwise matched F1 (boxes, polygons) or Dice (masks),
  compared with ``target_f1`` / ``target_dice``; the reason of an escalation names the figure
  and every finding some but not all readers saw.

For these the answer is a payload (``Decision.payload``): ``{"labels": [...]}`` or
``{"objects": [...], "minority": [...]}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from truthset.domain.policy import Policy, PrelabelUse, Rules, WorkflowKind
from truthset.domain.schema import ClassificationMode, LabelSchema, RiskLevel
from truthset.quality.aggregation.base import Aggregator, GoldLike
from truthset.quality.aggregation.registry import make_aggregator
from truthset.quality.shapes import ImageBounds
from truthset.quality.threads import one_blas_thread
from truthset.workflow.geometric import geometric_consensus

Action = Literal["read", "review", "adjudicate", "final"]

_RISK_ORDER = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2}

#: Reader name under which a model draft counts as a read (``prelabels: draft``).
MODEL_READER = "model"


@dataclass(frozen=True)
class ReviewOutcome:
    """A reviewer's verdict on the first read: the label they stand by, or an escalation
    (``payload``: the payload they stand by, for multi-label and geometric schemas)."""

    reviewer: str
    label: str | None
    escalated: bool = False
    payload: Mapping[str, Any] | None = None


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
    payloads:
        Multi-label and geometric schemas: the payload of each read, in the order of ``reads``
        (whose labels are then unused); a draft counted as a read is included.
    draft_payload, adjudication_payload:
        The same for the model draft and the adjudication.
    bounds:
        The item's image size (geometric schemas: boxes and polygons become masks on it).
    """

    reads: tuple[tuple[str, str], ...] = ()
    draft: str | None = None
    review: ReviewOutcome | None = None
    adjudication: str | None = None
    posterior: Mapping[str, float] | None = None
    u: float = 0.0
    payloads: tuple[Mapping[str, Any], ...] = ()
    draft_payload: Mapping[str, Any] | None = None
    adjudication_payload: Mapping[str, Any] | None = None
    bounds: ImageBounds | None = None


@dataclass(frozen=True)
class Decision:
    """What an item needs next.

    ``action`` is ``read`` (``n`` more independent reads), ``review``, ``adjudicate`` or
    ``final`` (``label`` is the answer). ``reason`` says why, in words shown to people.
    Multi-label and geometric schemas answer with ``payload`` (the consensus so far, or the
    final label) and record how it was computed in ``method`` and ``parameters``.
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
    payload: dict[str, Any] | None = None
    method: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


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


def schema_shape(schema: LabelSchema | None) -> str:
    """How :func:`decide` treats a schema: ``single`` (single or ordinal classification, and no
    schema), ``multi`` (multi-label classification), or the geometric kind (``box``,
    ``polygon``, ``mask``)."""
    if schema is None:
        return "single"
    if schema.kind.value == "classification":
        return "multi" if schema.mode == ClassificationMode.MULTI else "single"
    return schema.kind.value


def named_classes(payload: Mapping[str, Any] | None) -> list[str]:
    """The classes a payload names: its ``label``, its ``labels`` or its objects' labels."""
    if not payload:
        return []
    if isinstance(payload.get("label"), str):
        return [str(payload["label"])]
    if isinstance(payload.get("labels"), list):
        return [str(x) for x in payload["labels"]]
    return [str(o["label"]) for o in payload.get("objects") or []
            if isinstance(o, Mapping) and isinstance(o.get("label"), str)]


def core_payload(payload: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A payload without the notes it may carry (an adjudicator's reason, a draft's scores)."""
    if payload is None:
        return None
    return {k: v for k, v in payload.items()
            if k not in ("reason", "confidence", "probabilities", "comment")}


def decide(policy: Policy, risks: Mapping[str, RiskLevel], state: ItemState, *,
           schema: LabelSchema | None = None) -> Decision:
    """The next step of an item under ``policy``.

    Parameters
    ----------
    policy:
        The project's policy; the ``by_risk`` override of the item's provisional risk applies.
    risks:
        Class name -> risk level (from the label schema).
    state:
        What the item has so far.
    schema:
        The label schema; multi-label and geometric schemas decide on ``state.payloads``
        (``None``: single-label classification).
    """
    shape = schema_shape(schema)
    if shape != "single":
        assert schema is not None
        return _decide_payloads(policy, risks, state, schema, shape)
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


def _highest_risk(risks: Mapping[str, RiskLevel], names: Sequence[str]) -> RiskLevel | None:
    levels = [risks[n] for n in names if n in risks]
    return max(levels, key=_RISK_ORDER.__getitem__) if levels else None


def _decide_payloads(policy: Policy, risks: Mapping[str, RiskLevel], state: ItemState,
                     schema: LabelSchema, shape: str) -> Decision:
    """:func:`decide` for multi-label and geometric schemas (answers are payloads)."""
    named = [c for p in state.payloads for c in named_classes(p)]
    if state.draft_payload is not None and policy.prelabels != PrelabelUse.IGNORE:
        named += named_classes(state.draft_payload)
    risk = _highest_risk(risks, named)
    rules = policy.for_risk(risk)

    def out(action: Action, **kw: Any) -> Decision:
        return Decision(action, rules, risk, **kw)

    if state.adjudication_payload is not None:
        return out("final", payload=core_payload(state.adjudication_payload),
                   reason="adjudicated", method="adjudication")
    if rules.workflow in (WorkflowKind.SINGLE_REVIEW, WorkflowKind.TIERED):
        first = state.payloads[0] if state.payloads else None
        if first is None and state.draft_payload is not None and (
                policy.prelabels == PrelabelUse.DRAFT):
            first = state.draft_payload
        if first is None:
            return out("read", n=1, reason="first read")
        first_core = core_payload(first)
        if state.review is not None:
            if state.review.escalated or state.review.payload is None:
                return out("adjudicate", payload=first_core, reason="escalated by the reviewer")
            verdict = ("accepted" if core_payload(state.review.payload) == first_core
                       else "corrected")
            return out("final", payload=core_payload(state.review.payload),
                       reason=f"review {verdict}", method="review")
        label_risk = _highest_risk(risks, named_classes(first)) or RiskLevel.LOW
        rate = 1.0 if rules.workflow == WorkflowKind.TIERED else rules.review_rate[label_risk]
        if state.u < rate:
            return out("review", payload=first_core,
                       reason=f"{label_risk.value}-risk label, review rate {rate:.0%}")
        return out("final", payload=first_core, method="single",
                   reason=f"not sampled for review ({label_risk.value}-risk rate {rate:.0%})")

    n = len(state.payloads)
    need = rules.k if rules.workflow == WorkflowKind.CONSENSUS else rules.m
    if n < need:
        return out("read", n=need - n, reason=f"{n} of {need} reads")
    if shape == "multi":
        common, target, words, floor = _multi_label(schema, rules, state)
    else:
        common, target, words, floor = _geometric(schema, rules, state, shape)
    confidence = float(common["confidence"])
    agreement = float(common["agreement"])
    if rules.workflow == WorkflowKind.CONSENSUS:
        if confidence < target:
            return out("adjudicate", reason=words, **common)
        if floor and agreement < floor:
            return out("adjudicate", reason=f"agreement {agreement:.2f} under {floor:.2f}",
                       **common)
        return out("final", reason=f"consensus of {n} reads ({words})", **common)
    # adaptive
    if confidence >= target:
        return out("final", reason=f"{words} after {n} reads", **common)
    if n < rules.k_max:
        return out("read", n=1, reason=f"{words}; one more read", **common)
    if rules.on_exhausted == "accept":
        return out("final", reason=f"k_max {rules.k_max} reached; accepted ({words})", **common)
    return out("adjudicate", reason=f"k_max {rules.k_max} reached: {words}", **common)


def multi_label_posterior(classes: Sequence[str],
                          reads: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Share of the reads marking each class (the vote posterior of a multi-label item)."""
    if not reads:
        return {c: 0.0 for c in classes}
    marked = [set(named_classes(p)) for p in reads]
    return {c: float(np.mean([c in m for m in marked])) for c in classes}


def _multi_label(schema: LabelSchema, rules: Rules, state: ItemState
                 ) -> tuple[dict[str, Any], float, str, float]:
    classes = list(schema.class_names)
    posterior = ({c: float(state.posterior.get(c, 0.0)) for c in classes}
                 if state.posterior else multi_label_posterior(classes, state.payloads))
    present = sorted(c for c in classes if posterior[c] > 0.5)
    certainty = {c: max(posterior[c], 1.0 - posterior[c]) for c in classes}
    confidence = min(certainty.values())
    marked = [set(named_classes(p)) for p in state.payloads]
    agreement = float(np.mean([[(c in m) == (c in present) for c in classes] for m in marked]))
    weak = sorted((c for c in classes if certainty[c] < rules.target),
                  key=lambda c: (certainty[c], classes.index(c)))
    if weak:
        words = "; ".join(f"{c}: P(present) {posterior[c]:.2f}, certainty {certainty[c]:.2f} "
                          f"under target {rules.target:.2f}" for c in weak)
    else:
        words = f"every class certain to {confidence:.2f} (target {rules.target:.2f})"
    common = {"payload": {"labels": present}, "confidence": confidence, "agreement": agreement,
              "posterior": posterior, "method": f"multilabel-{rules.method}",
              "parameters": {"classes": classes, "threshold": 0.5}}
    return common, rules.target, words, rules.min_agreement


def _geometric(schema: LabelSchema, rules: Rules, state: ItemState, shape: str
               ) -> tuple[dict[str, Any], float, str, float]:
    readers = [r for r, _lab in state.reads]
    if len(readers) != len(state.payloads):
        readers = [f"reader {k + 1}" for k in range(len(state.payloads))]
    result = geometric_consensus(shape, list(zip(readers, state.payloads, strict=True)),
                                 iou_threshold=rules.iou_threshold,
                                 min_support=rules.min_support, mask_method=rules.mask_method,
                                 bounds=state.bounds)
    target = rules.target_for(shape)
    common = {"payload": result.payload(), "confidence": result.agreement,
              "agreement": result.agreement, "method": result.method,
              "parameters": {**result.parameters(), "target": target}}
    return common, target, result.summary(target), 0.0


def method_params(rules: Rules) -> dict[str, Any]:
    """The aggregator settings a policy's posterior fields ask for (none at their defaults).

    ``reader_prior: empirical`` (``onecoin``) shrinks each reader's accuracy towards a Beta
    prior fitted to all readers by empirical Bayes; ``class_prior: uniform`` (``ds``,
    ``onecoin``) keeps the class frequencies equal (see
    :class:`truthset.quality.aggregation.dawid_skene.OneCoinDawidSkene`).
    """
    params: dict[str, Any] = {}
    if rules.reader_prior != "none":
        params["skill_prior"] = rules.reader_prior
    if rules.class_prior != "estimate":
        params["class_prior"] = rules.class_prior
    return params


def consensus_model(
    method: str,
    classes: Sequence[str],
    table: pd.DataFrame,
    gold: GoldLike = None,
    **params: Any,
) -> Aggregator:
    """The aggregator of ``method`` fitted on a long table ``item, annotator, label`` (gold
    answers clamped); its ``probas_`` are the posteriors and, for ``onecoin``/``ds``, its
    reader parameters feed :class:`truthset.workflow.routing.ReaderModel`. ``params`` go to the
    aggregator (see :func:`method_params`). An empty table raises ``ValueError``."""
    if table.empty:
        raise ValueError("no reads to fit a consensus on")
    if gold is not None and len(gold):
        seen = set(table["item"])
        gold = gold[[i in seen for i in gold.index]] if isinstance(gold, pd.Series) else gold
    model = make_aggregator(method, classes=list(classes), **params)
    with one_blas_thread():  # small matrices: see truthset.quality.threads
        model.fit(table[["item", "annotator", "label"]], gold=gold)
    return model


def consensus_posteriors(
    method: str,
    classes: Sequence[str],
    table: pd.DataFrame,
    gold: GoldLike = None,
    **params: Any,
) -> pd.DataFrame:
    """Item x class posterior of ``method`` fitted on a long table ``item, annotator, label``
    (gold answers clamped). Empty table -> empty frame. ``params`` go to the aggregator (see
    :func:`method_params`)."""
    if table.empty:
        return pd.DataFrame(columns=list(classes), dtype=float)
    return consensus_model(method, classes, table, gold, **params).probas_
