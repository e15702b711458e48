"""Running a policy against simulated readers, or replaying recorded crowd labels.

The loop asks :func:`truthset.workflow.engine.decide` what every unfinished item needs, gets the
reads from a *label source*, refits the policy's consensus method on everything read so far,
and repeats until every item is final. The services take the same decisions one submit at a
time; here an entire round of reads is gathered before the consensus is refitted.

A policy with ``routing: skill`` runs instead as the task queue serves it
(:func:`run_arrivals`): readers arrive one at a time, uniformly at random (every reader does the
same share of the work), and :func:`truthset.workflow.routing.pick` chooses which open read
each takes.

Two label sources:

- :class:`SimulatedReaders`: readers with a fixed accuracy; a wrong read is a uniformly chosen
  other class (reviewers and adjudicators too, at their tier).
- :class:`RecordedLabels`: a real crowd dataset; each read reveals the next recorded label of the
  item (in a shuffled order), so a policy's cost and accuracy can be measured on real readers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from truthset.domain.errors import InputError
from truthset.domain.policy import Policy, Routing, WorkflowKind
from truthset.domain.schema import RiskLevel
from truthset.workflow.engine import (
    Decision,
    ItemState,
    ReviewOutcome,
    consensus_model,
    consensus_posteriors,
    decide,
    method_params,
    reads_with_draft,
    stable_uniform,
)
from truthset.workflow.routing import REFIT_EVERY, Candidate, ReaderModel, pick


@dataclass(frozen=True)
class SimReader:
    """A simulated reader: name, tier, accuracy (probability of the true class), minutes/read."""

    name: str
    tier: int
    accuracy: float
    minutes: float = 1.0


class LabelSource(Protocol):
    """Where reads come from."""

    def read(self, item: str, exclude: set[str], tier: int) -> tuple[str, str, float] | None:
        """One read of ``item`` by a reader of at least ``tier`` not in ``exclude``:
        ``(reader, label, minutes)``, or ``None`` when no read can be had."""
        ...

    def truth(self, item: str) -> str | None:
        """The true class of ``item`` (for scoring), if known."""
        ...


class SimulatedReaders:
    """Readers drawn from :class:`SimReader` specs, labelling items with hidden true classes.

    Parameters
    ----------
    readers:
        The reader pool (every tier).
    classes:
        Class names.
    truth:
        Item -> true class.
    rng:
        Random generator (reads, reader choice).
    """

    def __init__(self, readers: Sequence[SimReader], classes: Sequence[str],
                 truth: Mapping[str, str], rng: np.random.Generator) -> None:
        self.readers = list(readers)
        self.classes = list(classes)
        self._truth = dict(truth)
        self.rng = rng

    def read(self, item: str, exclude: set[str], tier: int) -> tuple[str, str, float] | None:
        """A read by a random eligible reader (see :class:`LabelSource`)."""
        pool = [r for r in self.readers if r.tier >= tier and r.name not in exclude]
        if not pool:
            return None
        # Prefer readers of exactly the tier asked (seniors are scarce).
        exact = [r for r in pool if r.tier == tier] or pool
        reader = exact[int(self.rng.integers(len(exact)))]
        return reader.name, self._label(reader, item), reader.minutes

    def names(self, tier: int) -> list[str]:
        """The readers of exactly ``tier`` (those who take that stage's work)."""
        return [r.name for r in self.readers if r.tier == tier]

    def arrive(self, open_items: set[str], tier: int) -> str | None:
        """The next reader of ``tier`` to ask for work: uniformly at random."""
        names = self.names(tier)
        return names[int(self.rng.integers(len(names)))] if names else None

    def readable(self, reader: str, open_items: set[str]) -> set[str]:
        """The open items ``reader`` could read (any of them)."""
        return open_items

    def read_as(self, reader: str, item: str) -> tuple[str, float]:
        """``reader``'s read of ``item``: ``(label, minutes)``."""
        who = next(r for r in self.readers if r.name == reader)
        return self._label(who, item), who.minutes

    def _label(self, reader: SimReader, item: str) -> str:
        true = self._truth[item]
        if self.rng.random() < reader.accuracy:
            return true
        others = [c for c in self.classes if c != true]
        return others[int(self.rng.integers(len(others)))]

    def truth(self, item: str) -> str | None:
        """The hidden true class."""
        return self._truth.get(item)


class RecordedLabels:
    """A recorded crowd dataset replayed one label at a time.

    Parameters
    ----------
    labels:
        Long table ``item, annotator, label``.
    truth:
        Item -> true label (items without truth are still labelled, not scored).
    rng:
        Shuffles each item's recorded labels once.
    minutes:
        Minutes charged per revealed label.
    """

    def __init__(self, labels: pd.DataFrame, truth: Mapping[str, str],
                 rng: np.random.Generator, minutes: float = 1.0) -> None:
        frame = labels[["item", "annotator", "label"]].astype(str)
        self._queue: dict[str, list[tuple[str, str]]] = {}
        for item, group in frame.groupby("item", sort=False):
            pairs = list(zip(group["annotator"], group["label"], strict=True))
            order = rng.permutation(len(pairs))
            self._queue[str(item)] = [pairs[k] for k in order]
        self._truth = {str(k): str(v) for k, v in truth.items()}
        self.minutes = minutes
        self.rng = rng
        self._by_reader: dict[str, dict[str, str]] = {}
        for item, pairs in self._queue.items():
            for reader, label in pairs:
                self._by_reader.setdefault(reader, {})[item] = label
        self._pairs = [(item, reader) for item, pairs in self._queue.items()
                       for reader, _label in pairs]

    def arrive(self, open_items: set[str], tier: int) -> str | None:
        """The next worker to ask for work, with probability in proportion to the recorded
        labels they still have on open items (a uniformly drawn unrevealed label's worker);
        ``None`` when no open item has one left."""
        pairs = self._pairs
        while pairs:
            k = int(self.rng.integers(len(pairs)))
            item, reader = pairs[k]
            if item in open_items and item in self._by_reader.get(reader, {}):
                return reader
            pairs[k] = pairs[-1]
            pairs.pop()
        return None

    def readable(self, reader: str, open_items: set[str]) -> set[str]:
        """The open items ``reader`` has an unrevealed recorded label on."""
        return open_items.intersection(self._by_reader.get(reader, {}))

    def read_as(self, reader: str, item: str) -> tuple[str, float]:
        """``reader``'s recorded label of ``item`` (revealed once): ``(label, minutes)``."""
        label = self._by_reader[reader].pop(item)
        self._queue[item] = [(r, lab) for r, lab in self._queue[item] if r != reader]
        return label, self.minutes

    @property
    def items(self) -> list[str]:
        """Items that have recorded labels."""
        return list(self._queue)

    def read(self, item: str, exclude: set[str], tier: int) -> tuple[str, str, float] | None:
        """The item's next recorded label from a reader not yet seen on it."""
        queue = self._queue.get(item, [])
        while queue:
            reader, label = queue.pop(0)
            self._by_reader.get(reader, {}).pop(item, None)
            if reader not in exclude:
                return reader, label, self.minutes
        return None

    def truth(self, item: str) -> str | None:
        """The recorded true label."""
        return self._truth.get(item)


@dataclass
class SimulationResult:
    """What a simulated run cost and how accurate it was.

    ``items`` has one row per item: ``item, truth, label, correct, reads, reviews,
    adjudications, labels, minutes, confidence, risk, reason``.
    """

    policy: str
    workflow: str
    items: pd.DataFrame
    rounds: int
    summary: dict[str, float] = field(default_factory=dict)

    def per_class(self) -> pd.DataFrame:
        """Accuracy and cost per true class."""
        return self.items.groupby("truth").agg(
            n_items=("item", "size"), accuracy=("correct", "mean"),
            labels_per_item=("labels", "mean"), minutes_per_item=("minutes", "mean"),
        )


def run_policy(
    policy: Policy,
    classes: Sequence[str],
    risks: Mapping[str, RiskLevel],
    items: Sequence[str],
    source: LabelSource,
    *,
    drafts: Mapping[str, str] | None = None,
    gold: Mapping[str, str] | None = None,
    calibration: Mapping[str, str] | None = None,
    max_rounds: int = 100,
) -> SimulationResult:
    """Run ``policy`` on ``items`` with reads from ``source`` until every item is final.

    ``drafts`` are model pre-labels per item; ``gold`` known answers clamped in the consensus
    fit (the items are still labelled and scored). ``calibration`` items (item -> answer) are
    read up front by every reader the source offers, clamped in every fit, and charged
    separately (``summary["calibration_labels"]``): they estimate each reader's accuracy the
    way a calibration batch does.

    A policy with ``routing: skill`` and a :class:`SimulatedReaders` or :class:`RecordedLabels`
    source runs through
    :func:`run_arrivals` (readers arriving one at a time), as the task queue would serve it.
    """
    if (policy.routing == Routing.SKILL and isinstance(source, SimulatedReaders | RecordedLabels)
            and not drafts):
        return run_arrivals(policy, classes, risks, items, source, gold=gold,
                            calibration=calibration)
    calib = dict(calibration or {})
    calib_reads = _calibrate(policy, source, calib)
    reads: dict[str, list[tuple[str, str]]] = {i: [] for i in items}
    minutes = dict.fromkeys(items, 0.0)
    counts = {i: {"reads": 0, "reviews": 0, "adjudications": 0} for i in items}
    review: dict[str, ReviewOutcome] = {}
    adjudication: dict[str, str] = {}
    final: dict[str, Decision] = {}
    posteriors = pd.DataFrame()
    drafts = dict(drafts or {})
    gold_series = pd.Series({**dict(gold or {}), **calib}, dtype=object)
    rounds = 0
    pending = list(items)
    if calib_reads:
        posteriors = consensus_posteriors(
            policy.method, classes, pd.DataFrame(calib_reads, columns=["item", "annotator",
                                                                      "label"]), gold_series,
            **method_params(policy))
    while pending and rounds < max_rounds:
        rounds += 1
        refit = False
        still: list[str] = []
        for item in pending:
            counted = reads_with_draft(policy, reads[item], drafts.get(item))
            post = (posteriors.loc[item].to_dict() if item in posteriors.index and reads[item]
                    else None)
            state = ItemState(reads=counted, draft=drafts.get(item), review=review.get(item),
                              adjudication=adjudication.get(item), posterior=post,
                              u=stable_uniform("review", item))
            decision = decide(policy, risks, state)
            seen = {r for r, _l in reads[item]}
            if decision.action == "final":
                final[item] = decision
                continue
            still.append(item)
            if decision.action == "read":
                for _ in range(decision.n):
                    got = source.read(item, seen, policy.stage_tier("annotate"))
                    if got is None:
                        break
                    reader, label, spent = got
                    reads[item].append((reader, label))
                    seen.add(reader)
                    minutes[item] += spent
                    counts[item]["reads"] += 1
                    refit = True
                else:
                    continue
                # No more reads to be had: accept what the reads say.
                still.pop()
                final[item] = _exhausted(decision, counted)
            elif decision.action == "review":
                got = source.read(item, seen, policy.stage_tier("review"))
                counts[item]["reviews"] += 1
                if got is None:
                    review[item] = ReviewOutcome("none", decision.label)
                else:
                    reviewer, label, spent = got
                    minutes[item] += spent
                    escalate = label != decision.label and decision.risk == RiskLevel.HIGH
                    review[item] = ReviewOutcome(reviewer, None if escalate else label, escalate)
            else:  # adjudicate
                got = source.read(item, seen, policy.stage_tier("adjudicate"))
                counts[item]["adjudications"] += 1
                if got is None:
                    still.pop()
                    final[item] = _exhausted(decision, counted)
                else:
                    adjudication[item] = got[1]
                    minutes[item] += got[2]
        pending = still
        if refit and any(r.workflow in (WorkflowKind.CONSENSUS, WorkflowKind.ADAPTIVE)
                         for r in policy.all_rules()):
            table = pd.DataFrame(
                calib_reads + [(i, r, lab) for i in items
                               for r, lab in reads_with_draft(policy, reads[i], drafts.get(i))],
                columns=["item", "annotator", "label"],
            )
            posteriors = consensus_posteriors(policy.method, classes, table, gold_series,
                                              **method_params(policy))
    for item in pending:  # max_rounds reached
        final[item] = _exhausted(decide(policy, risks, ItemState(reads=tuple(reads[item]))),
                                 tuple(reads[item]))
    return _result(policy, items, source, final, counts, minutes, rounds,
                   float(len(calib_reads)))


def _calibrate(policy: Policy, source: LabelSource,
               calibration: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """Every reader the source offers reads every calibration item: ``(item, reader, label)``."""
    reads: list[tuple[str, str, str]] = []
    for item in calibration:
        seen: set[str] = set()
        while (got := source.read(item, seen, policy.stage_tier("annotate"))) is not None:
            reads.append((item, got[0], got[1]))
            seen.add(got[0])
    return reads


def run_arrivals(
    policy: Policy,
    classes: Sequence[str],
    risks: Mapping[str, RiskLevel],
    items: Sequence[str],
    source: SimulatedReaders | RecordedLabels,
    *,
    gold: Mapping[str, str] | None = None,
    calibration: Mapping[str, str] | None = None,
    refit_every: int = REFIT_EVERY,
    window: int = 200,
    readers: ReaderModel | None = None,
) -> SimulationResult:
    """Run ``policy`` the way the task queue serves readers: one read at a time.

    Each step a reader of the annotate tier asks for a task: for :class:`SimulatedReaders`
    drawn uniformly at random (every reader does the same share), for a replayed
    :class:`RecordedLabels` a worker in proportion to the recorded labels they still have on
    open items (they may read only those). The candidates are
    the items that need a read and that reader has not read, in queue order (started items
    with the least confident consensus first, then the oldest; the first ``window`` started
    ones and the oldest fresh one are considered). With ``routing: skill``
    :func:`truthset.workflow.routing.pick` chooses among them with the reader model of the
    policy's method; with ``routing: queue`` the reader takes the first. After each read the
    item's posterior is updated with the current reader model and :func:`decide` says whether
    it is final; the model is refitted on all reads every ``refit_every`` reads (the queue
    refits at every submit; between refits the Bayes update with the last fitted model stands
    in). ``review`` and ``adjudicate`` steps are read at once by a reader of their tier.
    ``readers`` fixes the reader model instead of fitting it (e.g. the simulated readers' true
    accuracies, to see what routing could do with perfect knowledge of them): posteriors are
    then exact Bayes updates with it, never refitted. Other arguments and the result as
    :func:`run_policy`.
    """
    tier = policy.stage_tier("annotate")
    calib = dict(calibration or {})
    calib_reads = _calibrate(policy, source, calib)
    gold_series = pd.Series({**dict(gold or {}), **calib}, dtype=object)
    params = method_params(policy)
    needs_model = policy.method != "mv"
    reads: dict[str, list[tuple[str, str]]] = {i: [] for i in items}
    readers_of: dict[str, set[str]] = {i: set() for i in items}
    post: dict[str, np.ndarray] = {}
    minutes = dict.fromkeys(items, 0.0)
    counts = {i: {"reads": 0, "reviews": 0, "adjudications": 0} for i in items}
    final: dict[str, Decision] = {}
    order = {item: k for k, item in enumerate(items)}
    confidence: dict[str, float] = {}
    model: ReaderModel | None = readers

    def refit() -> None:
        nonlocal model
        table = pd.DataFrame(calib_reads + [(i, r, lab) for i in items for r, lab in reads[i]],
                             columns=["item", "annotator", "label"])
        if table.empty:
            return
        fitted = consensus_model(policy.method, classes, table, gold_series, **params)
        try:
            model = ReaderModel.from_fit(fitted, classes)
        except TypeError:
            model = None
        probas = fitted.probas_.reindex(columns=list(classes), fill_value=0.0)
        rows = probas.to_numpy(dtype=float)
        for position, item in enumerate(probas.index):
            if reads.get(item):
                post[item] = rows[position]

    def state(item: str) -> ItemState:
        p = post.get(item)
        posterior = (dict(zip(classes, p.tolist(), strict=True))
                     if p is not None and needs_model else None)
        return ItemState(reads=tuple(reads[item]), posterior=posterior,
                         u=stable_uniform("review", item))

    if needs_model and calib_reads and readers is None:
        refit()
    open_items: set[str] = set()
    for item in items:
        decision = decide(policy, risks, state(item))
        if decision.action == "final":
            final[item] = decision
        else:
            open_items.add(item)
    since_fit = 0
    stalled = 0
    while open_items:
        reader = source.arrive(open_items, tier)
        if reader is None:  # no reader has anything left to read on an open item
            break
        mine = [i for i in source.readable(reader, open_items) if reader not in readers_of[i]]
        started = sorted((i for i in mine if reads[i]),
                         key=lambda i: (confidence.get(i, 0.0), order[i]))[:window]
        fresh = min((i for i in mine if not reads[i]), key=order.__getitem__, default=None)
        candidates = started + ([fresh] if fresh is not None else [])
        if not candidates:
            stalled += 1
            if stalled > 10_000:  # readers keep arriving with nothing they may read
                break
            continue
        stalled = 0
        index = 0
        if policy.routing == Routing.SKILL and model is not None:
            rules = policy.for_risk(None)
            need = rules.k if rules.workflow == WorkflowKind.CONSENSUS else rules.m
            index = pick([Candidate(i, len(reads[i]), post.get(i)) for i in candidates],
                         model, reader, target=rules.target, min_reads=need)
        item = candidates[index]
        label, spent = source.read_as(reader, item)
        reads[item].append((reader, label))
        readers_of[item].add(reader)
        minutes[item] += spent
        counts[item]["reads"] += 1
        if needs_model:
            if model is not None:
                post[item] = model.update(post.get(item, model.prior), reader, label)
            since_fit += 1
            if readers is None and (model is None or since_fit >= refit_every):
                refit()
                since_fit = 0
        decision = decide(policy, risks, state(item))
        while decision.action in ("review", "adjudicate"):
            stage_tier = policy.stage_tier(decision.action)
            got = source.read(item, {r for r, _l in reads[item]}, stage_tier)
            counts[item]["reviews" if decision.action == "review" else "adjudications"] += 1
            if got is None:
                decision = _exhausted(decision, tuple(reads[item]))
                break
            minutes[item] += got[2]
            if decision.action == "adjudicate":
                decision = Decision("final", decision.rules, decision.risk, label=got[1],
                                    reason="adjudicated")
            else:
                escalate = got[1] != decision.label and decision.risk == RiskLevel.HIGH
                review = ReviewOutcome(got[0], None if escalate else got[1], escalate)
                decision = decide(policy, risks, ItemState(
                    reads=tuple(reads[item]), review=review, u=stable_uniform("review", item)))
        if decision.action == "final":
            final[item] = decision
            open_items.discard(item)
        elif decision.action == "read":
            confidence[item] = float(decision.confidence or 0.0)
    for item in sorted(open_items, key=order.__getitem__):  # no further read to be had
        final[item] = _exhausted(decide(policy, risks, state(item)), tuple(reads[item]))
    return _result(policy, items, source, final, counts, minutes, 0,
                   float(len(calib_reads)))


def _result(policy: Policy, items: Sequence[str], source: LabelSource,
            final: Mapping[str, Decision], counts: Mapping[str, Mapping[str, int]],
            minutes: Mapping[str, float], rounds: int,
            calibration_labels: float) -> SimulationResult:
    """The per-item table and summary of a finished run."""
    rows = []
    for item in items:
        d = final[item]
        truth = source.truth(item)
        c = counts[item]
        rows.append({
            "item": item, "truth": truth, "label": d.label,
            "correct": bool(truth is not None and d.label == truth),
            "reads": c["reads"], "reviews": c["reviews"], "adjudications": c["adjudications"],
            "labels": c["reads"] + c["reviews"] + c["adjudications"],
            "minutes": minutes[item], "confidence": d.confidence,
            "risk": None if d.risk is None else d.risk.value, "reason": d.reason,
        })
    frame = pd.DataFrame(rows)
    scored = frame[frame["truth"].notna()]
    summary = {
        "items": float(len(frame)),
        "accuracy": float(scored["correct"].mean()) if len(scored) else float("nan"),
        "labels_per_item": float(frame["labels"].mean()),
        "reads_per_item": float(frame["reads"].mean()),
        "minutes_per_item": float(frame["minutes"].mean()),
        "adjudicated": float((frame["adjudications"] > 0).mean()),
        "reviewed": float((frame["reviews"] > 0).mean()),
        "calibration_labels": calibration_labels,
    }
    return SimulationResult(policy.name, policy.workflow.value, frame, rounds, summary)


def _exhausted(decision: Decision, reads: Sequence[tuple[str, str]]) -> Decision:
    """Final decision when no further reader can be had: the best answer the reads give."""
    if decision.label is not None:
        return Decision("final", decision.rules, decision.risk, label=decision.label,
                        confidence=decision.confidence, agreement=decision.agreement,
                        reason="no further reader available")
    labels = pd.Series([lab for _r, lab in reads])
    label = str(labels.mode().iloc[0]) if len(labels) else None
    return Decision("final", decision.rules, decision.risk, label=label,
                    reason="no further reader available")


_GROUP = re.compile(
    r"^\s*(?:(?P<n>\d+)\s*[:x]\s*)?(?:(?P<acc>0?\.\d+|1(?:\.0*)?|0)|beta\(\s*(?P<a>[\d.]+)\s*,"
    r"\s*(?P<b>[\d.]+)\s*\))\s*(?:@\s*(?P<tier>[123]))?\s*$"
)


def parse_readers(spec: str, rng: np.random.Generator) -> list[SimReader]:
    """Parse a reader spec: comma-separated groups ``[N:]ACCURACY[@TIER]`` or
    ``[N:]beta(A,B)[@TIER]`` (accuracy drawn per reader), e.g.
    ``"20:beta(6,2), 2:0.9@2, 1:0.95@3"``.

    Raises
    ------
    InputError
        A group that does not parse, or no tier-1 reader (field ``readers``).
    """
    out: list[SimReader] = []
    for k, group in enumerate(p for p in re.split(r",(?![^(]*\))", spec) if p.strip()):
        match = _GROUP.match(group)
        if not match:
            raise InputError(
                f"reader group {group.strip()!r} is not N:ACCURACY[@TIER] or N:beta(A,B)[@TIER]",
                field="readers", location=f"group {k + 1}",
            )
        n = int(match["n"] or 1)
        tier = int(match["tier"] or 1)
        for _ in range(n):
            if match["acc"] is not None:
                acc = float(match["acc"])
            else:
                a, b = float(match["a"]), float(match["b"])
                if a <= 0 or b <= 0:
                    raise InputError("beta parameters must be positive", field="readers",
                                     location=f"group {k + 1}")
                acc = float(rng.beta(a, b))
            out.append(SimReader(f"t{tier}-{len(out) + 1:03d}", tier, acc,
                                 minutes={1: 1.0, 2: 2.0, 3: 4.0}[tier]))
    if not any(r.tier == 1 for r in out):
        raise InputError("the reader spec needs tier-1 readers", field="readers")
    return out
