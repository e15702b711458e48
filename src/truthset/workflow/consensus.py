"""Computing and storing the consensus of a project's items from its readers' labels."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError
from truthset.domain.schema import LabelSchema, SchemaKind
from truthset.quality.aggregation.base import Aggregator
from truthset.quality.aggregation.multilabel import MultiLabelAggregator
from truthset.quality.aggregation.registry import AGGREGATORS, make_aggregator
from truthset.quality.shapes import ImageBounds
from truthset.store.models import Consensus, Item, Project
from truthset.workflow.annotations import current_labels, current_payloads
from truthset.workflow.engine import named_classes, schema_shape
from truthset.workflow.geometric import geometric_consensus
from truthset.workspace.projects import rules

#: Geometric consensus methods by schema kind (the first is what ``mv`` means there).
GEOMETRIC_METHODS = {"box": ("wbf",), "polygon": ("wbf",), "mask": ("vote", "staple")}


@dataclass(frozen=True)
class ConsensusRun:
    """What one consensus computation produced."""

    method: str
    labels: pd.DataFrame  # item, label, confidence, agreement, n_reads
    model: Aggregator | MultiLabelAggregator | None  # None: geometric fusion


def compute_consensus(
    session: Session,
    project: Project,
    *,
    method: str = "mv",
    min_reads: int = 1,
    params: dict[str, Any] | None = None,
) -> ConsensusRun:
    """Aggregate every item's current reads with ``method`` and store a consensus row per item.

    Items with fewer than ``min_reads`` reads are left without a consensus. Each stored row
    records the method and its parameters, the posterior per class, the confidence (posterior of
    the chosen class), the observed agreement (share of reads equal to the consensus) and the
    ids of the annotations it was computed from.

    Multi-label schemas aggregate each class as a yes/no question with ``method``
    (:class:`~truthset.quality.aggregation.multilabel.MultiLabelAggregator`); the label is
    ``{"labels": [...]}`` and the posterior is P(present) per class. Geometric schemas fuse each
    item's objects (:func:`truthset.workflow.geometric.geometric_consensus`): ``method`` is
    ``wbf`` (box and polygon schemas) or ``staple`` / ``vote`` (mask schemas), ``mv`` choosing
    ``wbf`` or ``vote``; ``params`` may set ``iou_threshold`` and ``min_support``. Their label
    is ``{"objects": [...], "minority": [...]}``, agreement and confidence the mean pairwise
    matched F1 or Dice.

    Raises
    ------
    InputError
        The project has no reads yet, its schema is a measurement schema, or the method does
        not fit the schema.
    """
    current = rules(session, project)
    shape = schema_shape(current.schema)
    if current.schema.kind == SchemaKind.MEASUREMENT:
        raise InputError("consensus of measurement schemas is not available",
                         field="schema")
    if shape != "single":
        return _payload_consensus(session, project, current.schema, shape, method=method,
                                  min_reads=min_reads, params=params or {})
    table = current_labels(session, project)
    if table.empty:
        raise InputError(f"project {project.key!r} has no reads to aggregate yet")
    n_reads = table.groupby("item")["annotator"].nunique()
    table = table[table["item"].map(n_reads) >= min_reads]
    model = make_aggregator(method, classes=current.schema.class_names, **(params or {}))
    model.fit(table[["item", "annotator", "label"]])
    agree = (
        table.assign(hit=table["label"].to_numpy() == table["item"].map(model.labels_).to_numpy())
        .groupby("item")["hit"]
        .mean()
    )
    inputs = table.groupby("item")["annotation_id"].apply(lambda s: sorted(int(x) for x in s))
    item_ids: dict[str, int] = {
        external_id: item_id
        for external_id, item_id in session.execute(
            select(Item.external_id, Item.id).where(Item.project_id == project.id)
        )
    }
    stored_params = {"classes": list(current.schema.class_names), **(params or {})}
    readers_of = table.groupby("item")["annotator"].apply(list)
    rows = []
    for item, label in model.labels_.items():
        posterior = {str(c): float(p) for c, p in model.probas_.loc[item].items()}
        fitted = reader_parameters(model, readers_of.loc[item])
        rows.append(
            Consensus(
                project_id=project.id,
                item_id=item_ids[item],
                method=method,
                parameters={**stored_params, "reader_parameters": fitted} if fitted
                else stored_params,
                label={"label": None if pd.isna(label) else str(label)},
                posterior=posterior,
                confidence=_float(model.confidence_.loc[item]),
                agreement=_float(agree.loc[item]),
                input_annotation_ids=inputs.loc[item],
                status="undecided" if pd.isna(label) else "final",
            )
        )
    session.add_all(rows)
    session.flush()
    audit.record(session, action="consensus", entity_type="consensus", project_id=project.id,
                 after={"method": method, "items": len(rows)})
    summary = pd.DataFrame(
        {
            "label": model.labels_,
            "confidence": model.confidence_,
            "agreement": agree.reindex(model.labels_.index),
            "n_reads": n_reads.reindex(model.labels_.index),
        }
    ).rename_axis("item").reset_index()
    return ConsensusRun(method=method, labels=summary, model=model)


def reader_parameters(model: Aggregator, readers: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What a fitted ``model`` says of each of ``readers`` (those it saw): ``skill``, its
    per-reader figure (``skills_``: the estimated accuracy for Dawid–Skene, one-coin, weighted
    vote and MACE's competence, GLAD's ability, agreement with the vote for majority votes),
    and for Dawid–Skene models ``diagonal``, class -> P(the reader says the class | it is the
    class), the diagonal of their confusion matrix. Stored with each consensus row (its item's
    readers only) as ``parameters.reader_parameters``."""
    skills = getattr(model, "skills_", None)
    if not isinstance(skills, pd.Series):
        return {}
    matrices = getattr(model, "confusion_matrices_", None)
    position = {str(r): k for k, r in enumerate(skills.index)}
    out: dict[str, dict[str, Any]] = {}
    for reader in sorted({str(r) for r in readers}):
        k = position.get(reader)
        if k is None or not np.isfinite(float(skills.iloc[k])):
            continue
        entry: dict[str, Any] = {"skill": round(float(skills.iloc[k]), 6)}
        if isinstance(matrices, np.ndarray) and matrices.shape[0] == len(position):
            entry["diagonal"] = {str(c): round(float(matrices[k, j, j]), 6)
                                 for j, c in enumerate(model.classes_)}
        out[reader] = entry
    return out


def _payload_consensus(session: Session, project: Project, schema: LabelSchema, shape: str, *,
                       method: str, min_reads: int, params: dict[str, Any]) -> ConsensusRun:
    """:func:`compute_consensus` of multi-label and geometric schemas."""
    table = current_payloads(session, project)
    if table.empty:
        raise InputError(f"project {project.key!r} has no reads to aggregate yet")
    n_reads = table.groupby("item")["annotator"].nunique()
    table = table[table["item"].map(n_reads) >= min_reads]
    items = {external_id: (item_id, media) for external_id, item_id, media in session.execute(
        select(Item.external_id, Item.id, Item.media).where(Item.project_id == project.id))}
    rows: list[Consensus] = []
    summary: list[tuple[str, str, float | None, float | None, int]] = []
    model: MultiLabelAggregator | None = None
    if shape == "multi":
        if method not in AGGREGATORS:
            raise InputError(f"unknown aggregation method {method!r}; choose one of "
                             f"{', '.join(AGGREGATORS)}", field="method")
        classes = list(schema.class_names)
        sets = table.assign(label=[named_classes(p) for p in table["payload"]])
        model = MultiLabelAggregator(AGGREGATORS[method], classes=classes, **params)
        model.fit(sets[["item", "annotator", "label"]])
        stored: dict[str, Any] = {"classes": classes, "threshold": model.threshold, **params}
        for item, group in sets.groupby("item", sort=True):
            probas = model.probas_.loc[item].fillna(0.0)
            present = sorted(c for c in classes if bool(model.present_.loc[item, c]))
            certainty = [max(float(p), 1.0 - float(p)) for p in probas]
            agree = float(np.mean([[(c in set(lab)) == (c in present) for c in classes]
                                   for lab in group["label"]]))
            rows.append(_row(project, items[str(item)][0], f"multilabel-{method}", stored,
                             {"labels": present}, {str(c): float(p) for c, p in probas.items()},
                             min(certainty), agree, group))
            summary.append((str(item), "|".join(present), min(certainty), agree, len(group)))
    else:
        allowed = GEOMETRIC_METHODS[shape]
        chosen = allowed[0] if method == "mv" else method
        if chosen not in allowed:
            raise InputError(f"a {shape} schema's consensus method is "
                             f"{' or '.join(allowed)} (or mv for {allowed[0]}), not {method!r}",
                             field="method")
        unknown = sorted(set(params) - {"iou_threshold", "min_support"})
        if unknown:
            raise InputError(f"unknown parameter {unknown[0]!r}; use iou_threshold or "
                             "min_support", field=f"params.{unknown[0]}")
        iou = float(params.get("iou_threshold", 0.5))
        support = float(params.get("min_support", 0.5))
        if not 0 < iou < 1 or not 0 < support <= 1:
            raise InputError("iou_threshold lies in (0, 1) and min_support in (0, 1]",
                             field="params")
        for item, group in table.groupby("item", sort=True):
            item_id, media = items[str(item)]
            result = geometric_consensus(
                shape, list(zip(group["annotator"], group["payload"], strict=True)),
                iou_threshold=iou, min_support=support, mask_method=chosen,
                bounds=ImageBounds.from_media(media))
            rows.append(_row(project, item_id, result.method, result.parameters(),
                             result.payload(), {}, result.agreement, result.agreement, group))
            summary.append((str(item), f"{len(result.kept)} object(s)", result.agreement,
                            result.agreement, len(group)))
        method = chosen
    session.add_all(rows)
    session.flush()
    audit.record(session, action="consensus", entity_type="consensus", project_id=project.id,
                 after={"method": method, "items": len(rows)})
    labels = pd.DataFrame(summary, columns=["item", "label", "confidence", "agreement",
                                            "n_reads"])
    return ConsensusRun(method=method, labels=labels, model=model)


def _row(project: Project, item_id: int, method: str, parameters: dict[str, Any],
         label: dict[str, Any], posterior: dict[str, float], confidence: float | None,
         agreement: float | None, group: pd.DataFrame) -> Consensus:
    return Consensus(project_id=project.id, item_id=item_id, method=method,
                     parameters=parameters, label=label, posterior=posterior,
                     confidence=confidence, agreement=agreement,
                     input_annotation_ids=sorted(int(a) for a in group["annotation_id"]),
                     status="final")


def _float(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)
