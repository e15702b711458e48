"""Workflow policies: how many readers an item needs, who reviews, when to adjudicate.

A policy is a ``policy:`` document of the project YAML (a bare mapping is accepted too)::

    policy:
      name: chest-default
      workflow: adaptive        # single_review | consensus | adaptive | tiered
      method: onecoin           # the quality-engine method behind the consensus posterior
      reader_prior: empirical   # onecoin: readers' accuracies shrunk to the crowd's (or none)
      class_prior: uniform      # ds/onecoin: equal class frequencies (or estimate)
      m: 2                      # adaptive: readers to start with
      k_max: 5                  # adaptive: most readers
      k: 3                      # consensus: independent readers per item
      target: 0.9               # posterior the consensus must reach (else more reads / adjudicate)
      min_agreement: 0.6        # consensus: share of reads agreeing with it (else adjudicate)
      on_exhausted: adjudicate  # adaptive: at k_max and still uncertain -> adjudicate | accept
      iou_threshold: 0.5        # boxes/polygons: two readers' boxes are one finding at IoU >= this
      min_support: 0.5          # geometry: share of readers a finding needs to enter the label
      target_f1: 0.8            # boxes/polygons: mean pairwise matched F1 the reads must reach
      target_dice: 0.7          # masks: mean pairwise Dice the reads must reach
      mask_method: staple       # masks: staple | vote (voxelwise majority)
      review_rate: {low: 0.1, medium: 0.5, high: 1.0}   # single_review: share reviewed
      tiers: {annotate: 1, review: 2, adjudicate: 3}
      specialty: {adjudicate: radiology}                # stage -> required specialty
      prelabels: route          # ignore | route | draft (see below)
      lease_minutes: 30
      calibration: {threshold: 0.8}                    # each new reader passes this first
      gold: {rate: 0.1, threshold: 0.7, min_reads: 5}  # gold mixed into queues, scored
      escalation: {deadline_hours: 48}
      active_learning: {weight_model: 0.5, weight: 1.0} # off unless given (see below)
      routing: skill            # queue (default) | skill: reads go where the reader's skill
                                # settles most (see below; needs method onecoin or ds)
      by_risk:                  # overrides for items whose provisional class has this risk
        high: {workflow: consensus, k: 5}

``prelabels`` says what a model draft (an annotation whose source is ``model``) does:
``ignore`` it; ``route`` it (its class's risk chooses the ``by_risk`` override and the review
rate, and it raises the priority of uncertain drafts); or ``draft``: it also stands in for the
tier-1 read (``single_review``/``tiered`` go straight to review) or counts as one read
(``consensus``/``adaptive``).

``reader_prior: empirical`` gives every reader's accuracy in the ``onecoin`` posterior a Beta
prior fitted by empirical Bayes to all readers' known-answer and repeated-item reads, so a reader
seen on few items is pulled towards the crowd instead of 0 or 1; ``class_prior: uniform`` keeps
the class frequencies equal instead of learning them (on items read two or three times, learnt
frequencies can collapse onto one class). Both change only the posterior that ``target`` is
compared with; what readers see and how tasks are assigned stay the same.

Geometric schemas (box, polygon, mask) compare the readers' agreement, not a class posterior,
with a target: ``target_f1`` (the mean over reader pairs of the matched F1 of their boxes at
``iou_threshold``) for boxes and polygons, ``target_dice`` (the mean pairwise Dice of their
masks) for masks. Multi-label classification uses ``target`` per class (see
:mod:`truthset.workflow.engine`).

``active_learning`` (off by default) makes the queue offer first the items whose latest model
draft is uncertain or whose readers disagree: ``weight`` times the item's score in [0, 1]
(``weight_model`` of it from the draft's entropy, the rest from the readers' disagreement) is
added to the priority of its ``annotate`` slots.

``routing: skill`` changes which open read a reader is given, not how many reads an item gets:
among the free read slots, the one that reader's read is most likely to settle (bring to
``target``), judged with the reader model the consensus method fitted; a reader whose read can
settle none takes the item with the fewest reads (usually a fresh one). See
:mod:`truthset.workflow.routing`. Classification schemas with one label per item only.

Parsing is pure: :func:`parse_policy` takes the YAML *text* and names the line and field of a bad
value. Checks that need the project (classes, readers) live in :func:`check_policy_readers`.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from truthset.domain.errors import InputError
from truthset.domain.schema import RiskLevel, _line_of

#: Aggregation methods a policy may name (those of ``truthset.quality.aggregation.registry``
#: that give a categorical posterior). Kept here so the domain layer stays import-free.
POLICY_METHODS = ("mv", "wmv", "ds", "onecoin", "glad", "mace", "ordinal-ds")
#: Priors a policy may put on each reader's accuracy in the consensus posterior (``onecoin``).
READER_PRIORS = ("none", "empirical")
#: Class frequencies behind the consensus posterior (``ds``, ``onecoin``): estimated or equal.
CLASS_PRIORS = ("estimate", "uniform")
#: How the masks of several readers are combined: STAPLE or a voxelwise majority vote.
MASK_METHODS = ("staple", "vote")
#: Schema kinds whose reads are objects on the image.
GEOMETRIC_KINDS = ("box", "polygon", "mask")


class WorkflowKind(StrEnum):
    """The four workflow shapes."""

    SINGLE_REVIEW = "single_review"
    CONSENSUS = "consensus"
    ADAPTIVE = "adaptive"
    TIERED = "tiered"


class Stage(StrEnum):
    """The stages a task can be in."""

    ANNOTATE = "annotate"
    REVIEW = "review"
    ADJUDICATE = "adjudicate"
    CALIBRATE = "calibrate"


class PrelabelUse(StrEnum):
    """What a model draft does in the workflow."""

    IGNORE = "ignore"
    ROUTE = "route"
    DRAFT = "draft"


class Routing(StrEnum):
    """How a reader's next read is chosen among the open ones."""

    QUEUE = "queue"
    SKILL = "skill"


#: Consensus methods whose fitted reader model ``routing: skill`` can use
#: (:mod:`truthset.workflow.routing`).
ROUTING_METHODS = ("onecoin", "ds")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tiers(_Strict):
    """Minimum reader tier per stage."""

    annotate: int = Field(default=1, ge=1, le=3)
    review: int = Field(default=2, ge=1, le=3)
    adjudicate: int = Field(default=3, ge=1, le=3)


class Calibration(_Strict):
    """The batch each new reader must pass before real work: share correct >= threshold."""

    threshold: float = Field(default=0.8, ge=0.0, le=1.0)


class Gold(_Strict):
    """Gold items mixed into the queues and the per-class floor that suspends a reader."""

    rate: float = Field(default=0.1, ge=0.0, le=1.0)
    threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    min_reads: int = Field(default=5, ge=1)


class Escalation(_Strict):
    """Deadline of an escalated item at each tier it reaches."""

    deadline_hours: float = Field(default=48.0, gt=0)


class ActiveLearning(_Strict):
    """Active learning: uncertain or disputed items are read first.

    ``weight_model`` mixes the model's uncertainty with the readers' disagreement (1 = the
    model only, 0 = the readers only); ``weight`` scales the score added to a read slot's
    priority (the queue's other read priorities lie in [0, 2]).
    """

    weight_model: float = Field(default=0.5, ge=0.0, le=1.0)
    weight: float = Field(default=1.0, ge=0.0, le=10.0)


class Rules(_Strict):
    """The fields that decide what an item needs (the part ``by_risk`` may override)."""

    workflow: WorkflowKind = WorkflowKind.CONSENSUS
    method: str = "mv"
    reader_prior: str = "none"
    class_prior: str = "estimate"
    k: int = Field(default=3, ge=1, le=50)
    m: int = Field(default=2, ge=1, le=50)
    k_max: int = Field(default=5, ge=1, le=50)
    target: float = Field(default=0.9, ge=0.0, le=1.0)
    min_agreement: float = Field(default=0.0, ge=0.0, le=1.0)
    on_exhausted: str = Field(default="adjudicate", pattern="^(adjudicate|accept)$")
    review_rate: dict[RiskLevel, float] = Field(
        default_factory=lambda: {RiskLevel.LOW: 0.1, RiskLevel.MEDIUM: 0.5, RiskLevel.HIGH: 1.0}
    )
    iou_threshold: float = 0.5
    min_support: float = 0.5
    target_f1: float = 0.8
    target_dice: float = 0.7
    mask_method: str = "staple"

    @field_validator("iou_threshold")
    @classmethod
    def _iou(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"iou_threshold must lie strictly between 0 and 1, not {value}")
        return value

    @field_validator("min_support")
    @classmethod
    def _support(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"min_support is a share of readers in (0, 1], not {value}")
        return value

    @field_validator("target_f1", "target_dice")
    @classmethod
    def _geometric_target(cls, value: float, info: ValidationInfo) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{info.field_name} must lie within [0, 1], not {value}")
        return value

    @field_validator("mask_method")
    @classmethod
    def _mask_method(cls, value: str) -> str:
        if value not in MASK_METHODS:
            raise ValueError(f"unknown mask method {value!r}; choose one of "
                             f"{', '.join(MASK_METHODS)}")
        return value

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in POLICY_METHODS:
            raise ValueError(
                f"unknown consensus method {value!r}; choose one of {', '.join(POLICY_METHODS)}"
            )
        return value

    @field_validator("reader_prior")
    @classmethod
    def _reader_prior(cls, value: str, info: ValidationInfo) -> str:
        if value not in READER_PRIORS:
            raise ValueError(f"unknown reader_prior {value!r}; choose one of "
                             f"{', '.join(READER_PRIORS)}")
        method = info.data.get("method")
        if value != "none" and method is not None and method != "onecoin":
            raise ValueError(f"reader_prior {value} needs method onecoin (one accuracy per "
                             f"reader), not {method}")
        return value

    @field_validator("class_prior")
    @classmethod
    def _class_prior(cls, value: str, info: ValidationInfo) -> str:
        if value not in CLASS_PRIORS:
            raise ValueError(f"unknown class_prior {value!r}; choose one of "
                             f"{', '.join(CLASS_PRIORS)}")
        method = info.data.get("method")
        if value != "estimate" and method is not None and method not in ("ds", "onecoin"):
            raise ValueError(f"class_prior {value} needs method ds or onecoin, not {method}")
        return value

    @field_validator("review_rate")
    @classmethod
    def _rates(cls, value: dict[RiskLevel, float]) -> dict[RiskLevel, float]:
        for risk, rate in value.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"review rate for {risk} risk must be within [0, 1], not {rate}")
        # Missing levels: low 0.1, medium 0.5, high always reviewed.
        full = {RiskLevel.LOW: 0.1, RiskLevel.MEDIUM: 0.5, RiskLevel.HIGH: 1.0}
        full.update(value)
        return full

    @field_validator("k_max")
    @classmethod
    def _m_le_k_max(cls, value: int, info: ValidationInfo) -> int:
        m = info.data.get("m", 2)
        if info.data.get("workflow") == WorkflowKind.ADAPTIVE and m > value:
            raise ValueError(f"adaptive: k_max ({value}) must be at least m ({m})")
        return value

    @property
    def first_reads(self) -> int:
        """Reads asked for up front."""
        if self.workflow == WorkflowKind.CONSENSUS:
            return self.k
        if self.workflow == WorkflowKind.ADAPTIVE:
            return self.m
        return 1

    @property
    def max_reads(self) -> int:
        """Most independent reads this policy ever asks of one item."""
        if self.workflow == WorkflowKind.CONSENSUS:
            return self.k
        if self.workflow == WorkflowKind.ADAPTIVE:
            return self.k_max
        return 1

    @property
    def stages(self) -> tuple[Stage, ...]:
        """Stages this workflow may create tasks for (classification schemas)."""
        return self.stages_for("classification")

    def target_for(self, kind: str) -> float:
        """The figure an item of schema ``kind`` must reach: ``target_f1`` (box, polygon),
        ``target_dice`` (mask), else ``target``."""
        if kind in ("box", "polygon"):
            return self.target_f1
        if kind == "mask":
            return self.target_dice
        return self.target

    def stages_for(self, kind: str) -> tuple[Stage, ...]:
        """Stages this workflow may create tasks for on a schema of ``kind``."""
        if self.workflow in (WorkflowKind.SINGLE_REVIEW, WorkflowKind.TIERED):
            return (Stage.ANNOTATE, Stage.REVIEW, Stage.ADJUDICATE)
        if self.workflow == WorkflowKind.ADAPTIVE and self.on_exhausted == "accept":
            return (Stage.ANNOTATE,)
        floor = 0.0 if kind in GEOMETRIC_KINDS else self.min_agreement
        if self.workflow == WorkflowKind.CONSENSUS and self.target_for(kind) == 0 and floor == 0:
            return (Stage.ANNOTATE,)
        return (Stage.ANNOTATE, Stage.ADJUDICATE)


class Policy(Rules):
    """A validated workflow policy."""

    name: str = Field(default="default", min_length=1, max_length=100)
    tiers: Tiers = Tiers()
    specialty: dict[Stage, str] = Field(default_factory=dict)
    prelabels: PrelabelUse = PrelabelUse.ROUTE
    lease_minutes: float = Field(default=30.0, gt=0)
    calibration: Calibration | None = None
    gold: Gold | None = None
    escalation: Escalation = Escalation()
    active_learning: ActiveLearning | None = None
    routing: Routing = Routing.QUEUE
    by_risk: dict[RiskLevel, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("by_risk")
    @classmethod
    def _overrides(cls, value: dict[RiskLevel, dict[str, Any]]) -> dict[RiskLevel, dict[str, Any]]:
        allowed = set(Rules.model_fields)
        for risk, override in value.items():
            if not isinstance(override, dict):
                raise ValueError(f"by_risk.{risk} must be a mapping of policy fields")
            unknown = sorted(set(override) - allowed)
            if unknown:
                raise ValueError(
                    f"by_risk.{risk} may set only {', '.join(sorted(allowed))}; not "
                    f"{', '.join(unknown)}"
                )
        return value

    @model_validator(mode="after")
    def _overrides_valid(self) -> Self:
        # Validate each override merged with the base rules, so errors name the risk level.
        for risk in self.by_risk:
            self.for_risk(risk)
        if self.routing == Routing.SKILL:
            for rules in self.all_rules():
                if rules.method not in ROUTING_METHODS:
                    raise ValueError(
                        f"routing: routing 'skill' needs the reader model of consensus method "
                        f"{' or '.join(ROUTING_METHODS)}; method is {rules.method!r}")
        return self

    def for_risk(self, risk: RiskLevel | str | None) -> Rules:
        """The rules for an item whose provisional class has ``risk`` (base rules if none)."""
        base = {name: getattr(self, name) for name in Rules.model_fields}
        override = self.by_risk.get(RiskLevel(risk)) if risk is not None else None
        if not override:
            return Rules.model_validate(base)
        try:
            return Rules.model_validate({**base, **override})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(
                f"by_risk.{RiskLevel(str(risk)).value}.{'.'.join(str(p) for p in first['loc'])}: "
                f"{first['msg'].removeprefix('Value error, ')}"
            ) from None

    def all_rules(self) -> list[Rules]:
        """The base rules and every risk override."""
        return [self.for_risk(None), *(self.for_risk(r) for r in self.by_risk)]

    def cautions(self) -> list[str]:
        """Settings that are valid but seldom what is meant, in words for the person setting
        the policy (the command line prints them, the API returns them); empty when none.

        - ``adaptive`` with ``m: 1`` and ``method: mv``: one read is a unanimous vote, so every
          classification item settles on its first read (single reading, not adaptive).
        - ``adaptive`` with ``m: 1``, a model-based method and neither ``calibration`` nor
          ``gold``: an item settles on its first read whenever the fitted reader model rates
          that reader at ``target`` or above, and without known answers the model rates readers
          from their agreement alone (in simulation at target 0.8 it pooled every reader at
          0.82, and most items settled on one read; see ``docs/workflow.md``).
        """
        out: list[str] = []
        for risk, rules in [(None, self.for_risk(None)),
                            *((r, self.for_risk(r)) for r in self.by_risk)]:
            where = "" if risk is None else f"by_risk.{risk}: "
            if rules.workflow != WorkflowKind.ADAPTIVE or rules.m != 1:
                continue
            if rules.method == "mv":
                out.append(f"{where}m: 1 with method 'mv': one read is a unanimous vote, so "
                           "every classification item settles on its first read (this is "
                           "single reading); use m: 2, or method onecoin or ds")
            elif self.calibration is None and self.gold is None:
                out.append(f"{where}m: 1 with neither calibration nor gold: an item settles on "
                           f"its first read whenever the reader model rates that reader at "
                           f"target {rules.target:g} or above, and without known answers it "
                           "rates readers from their agreement alone; add a calibration batch "
                           "or gold items")
        return out

    def stage_tier(self, stage: Stage | str) -> int:
        """Minimum tier of a stage (calibration: the annotate tier)."""
        stage = Stage(stage)
        if stage == Stage.CALIBRATE:
            return self.tiers.annotate
        return int(getattr(self.tiers, stage.value))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what the store keeps beside the YAML text)."""
        return self.model_dump(mode="json")


#: Roles allowed to work each stage.
STAGE_ROLES: dict[Stage, frozenset[str]] = {
    Stage.ANNOTATE: frozenset({"annotator", "reviewer", "adjudicator"}),
    Stage.CALIBRATE: frozenset({"annotator", "reviewer", "adjudicator"}),
    Stage.REVIEW: frozenset({"reviewer", "adjudicator"}),
    Stage.ADJUDICATE: frozenset({"adjudicator"}),
}


def qualifies(policy: Policy, stage: Stage | str, *, role: str, tier: int,
              specialty: str) -> bool:
    """Whether a reader of this role, tier and specialty may work ``stage`` under ``policy``."""
    stage = Stage(stage)
    need = policy.specialty.get(stage)
    return (
        role in STAGE_ROLES[stage]
        and tier >= policy.stage_tier(stage)
        and (not need or specialty == need)
    )


def check_policy_readers(
    policy: Policy, readers: Iterable[tuple[str, str, int, str]], *, source: str | None = None,
    kind: str = "classification",
) -> None:
    """Refuse a policy that no set of the project's readers can carry out.

    ``readers`` are ``(username, role, tier, specialty)`` of the active users; ``kind`` is
    the project's schema kind (geometric kinds compare their own targets).

    Raises
    ------
    InputError
        A stage the policy uses has no qualified reader, or a consensus asks for more distinct
        readers than qualify (the field is named).
    """
    people = list(readers)
    for rules in policy.all_rules():
        for stage in rules.stages_for(kind):
            able = [u for u, r, t, s in people if qualifies(policy, stage, role=r, tier=t,
                                                                 specialty=s)]
            field = f"tiers.{stage.value}" if stage.value not in policy.specialty else (
                f"specialty.{stage.value}")
            if not able:
                need = policy.specialty.get(stage)
                raise InputError(
                    f"no active reader qualifies for the {stage.value} stage (tier >= "
                    f"{policy.stage_tier(stage)}, role {' or '.join(sorted(STAGE_ROLES[stage]))}"
                    + (f", specialty {need}" if need else "") + ")",
                    source=source, field=field,
                )
            if stage == Stage.ANNOTATE and len(able) < rules.max_reads:
                raise InputError(
                    f"the {rules.workflow.value} workflow asks up to {rules.max_reads} distinct "
                    f"readers per item but only {len(able)} qualify",
                    source=source, field="k" if rules.workflow == WorkflowKind.CONSENSUS
                    else "k_max",
                )


def parse_policy(text: str, *, source: str | None = None) -> Policy:
    """Parse and validate a workflow policy from YAML text (a ``policy:`` document or a bare
    mapping).

    Raises
    ------
    InputError
        Invalid YAML, or a field that fails validation; the message names the line and field.
    """
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
            source=source,
            location=f"line {mark.line + 1}" if mark else None,
        ) from exc
    if not isinstance(data, dict):
        raise InputError("a policy must be a YAML mapping", source=source)
    prefix: tuple[str, ...] = ()
    if "policy" in data:
        data = data["policy"]
        prefix = ("policy",)
        if not isinstance(data, dict):
            raise InputError("policy: must be a mapping", source=source, field="policy")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        head = message.split(":", 1)[0]
        if not loc and (head.startswith("by_risk.") or head in Policy.model_fields):
            # A whole-policy check names its field ("routing: ...", "by_risk.high.k: ...").
            loc = tuple(int(p) if p.isdigit() else p for p in head.split("."))
            message = message.split(":", 1)[1].strip()
        line = _line_of(root, prefix + loc)
        field = ".".join(str(p) for p in loc) or None
        raise InputError(
            message, source=source, location=f"line {line}" if line else None, field=field,
        ) from exc
