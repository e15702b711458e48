"""Computing and storing the consensus of a project's items from its readers' labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError
from truthset.domain.schema import ClassificationMode, SchemaKind
from truthset.quality.aggregation.base import Aggregator
from truthset.quality.aggregation.registry import make_aggregator
from truthset.store.models import Consensus, Item, Project
from truthset.workflow.annotations import current_labels
from truthset.workspace.projects import rules


@dataclass(frozen=True)
class ConsensusRun:
    """What one consensus computation produced."""

    method: str
    labels: pd.DataFrame  # item, label, confidence, agreement, n_reads
    model: Aggregator


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

    Raises
    ------
    InputError
        The project has no reads yet, or its schema is not single/ordinal classification.
    """
    current = rules(session, project)
    if current.schema.kind != SchemaKind.CLASSIFICATION or (
        current.schema.mode == ClassificationMode.MULTI
    ):
        raise InputError(
            "consensus of this project's schema is not available here: single or ordinal "
            "classification only",
            field="schema",
        )
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
    rows = []
    for item, label in model.labels_.items():
        posterior = {str(c): float(p) for c, p in model.probas_.loc[item].items()}
        rows.append(
            Consensus(
                project_id=project.id,
                item_id=item_ids[item],
                method=method,
                parameters=stored_params,
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


def _float(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)
