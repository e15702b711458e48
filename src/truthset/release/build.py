"""Freezing a project's final labels into a release folder with provenance and a manifest.

A release folder holds:

- ``labels.csv``: one row per included item — final label, confidence, agreement, method;
- ``provenance.csv``: one row per read behind each final label — reader, their label, when,
  under which schema and guideline versions, annotation id;
- ``excluded.csv``: items left out, with the reason;
- ``manifest.json``: SHA-256 and size of every file, the project, rule versions and the audit
  head the release was cut at.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.domain.errors import InputError
from truthset.store.models import Consensus, Item, Project
from truthset.workflow.annotations import current_labels
from truthset.workspace.projects import rules

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ReleaseSummary:
    """What a release build wrote."""

    folder: Path
    n_items: int
    n_excluded: int
    manifest_sha256: str


def _utc_iso(moment: Any) -> str:
    """ISO 8601 in UTC; SQLite hands back naive times, which Truthset always writes in UTC."""
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.isoformat()


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue().encode("utf-8")


def build_release(
    session: Session, project: Project, folder: str | Path, *, name: str
) -> ReleaseSummary:
    """Write the release folder for ``project`` from the latest consensus of each item.

    Raises
    ------
    InputError
        ``folder`` exists and is not empty, or no item has a final consensus.
    """
    out = Path(folder)
    if out.exists() and any(out.iterdir()):
        raise InputError("release folder exists and is not empty", source=str(out))
    latest = (
        select(Consensus.item_id, func.max(Consensus.id).label("cid"))
        .where(Consensus.project_id == project.id)
        .group_by(Consensus.item_id)
        .subquery()
    )
    rows = session.execute(
        select(Item.external_id, Item.patient_pseudonym, Consensus)
        .select_from(Item)
        .outerjoin(latest, latest.c.item_id == Item.id)
        .outerjoin(Consensus, Consensus.id == latest.c.cid)
        .where(Item.project_id == project.id)
        .order_by(Item.external_id)
    ).all()
    included: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for external_id, _pseudonym, consensus in rows:
        if consensus is None:
            excluded.append({"item": external_id, "reason": "no consensus (not enough reads)"})
        elif consensus.status != "final" or consensus.label.get("label") is None:
            excluded.append({"item": external_id, "reason": f"consensus {consensus.status}"})
        else:
            included.append(
                {
                    "item": external_id,
                    "label": consensus.label["label"],
                    "confidence": round(consensus.confidence or 0.0, 6),
                    "agreement": round(consensus.agreement or 0.0, 6),
                    "method": consensus.method,
                    "consensus_id": consensus.id,
                    "inputs": set(consensus.input_annotation_ids),
                }
            )
    if not included:
        raise InputError(f"project {project.key!r} has no item with a final consensus yet")
    reads = current_labels(session, project)
    final = {r["item"]: r for r in included}
    used = [
        item in final and int(aid) in final[item]["inputs"]
        for item, aid in zip(reads["item"], reads["annotation_id"], strict=True)
    ]
    reads = reads[used]
    provenance = pd.DataFrame(
        {
            "item": reads["item"],
            "final_label": reads["item"].map(lambda i: final[i]["label"]),
            "annotation_id": reads["annotation_id"].astype(int),
            "annotator": reads["annotator"],
            "label": reads["label"],
            "created_at": reads["created_at"].map(_utc_iso),
            "schema_version": reads["schema_version"],
            "guideline_version": reads["guideline_version"],
            "method": reads["item"].map(lambda i: final[i]["method"]),
            "consensus_id": reads["item"].map(lambda i: final[i]["consensus_id"]),
        }
    ).sort_values(["item", "annotation_id"])
    labels = pd.DataFrame([{k: v for k, v in r.items() if k != "inputs"} for r in included])
    files = {
        "labels.csv": _csv_bytes(labels),
        "provenance.csv": _csv_bytes(provenance),
        "excluded.csv": _csv_bytes(pd.DataFrame(excluded, columns=["item", "reason"])),
    }
    current = rules(session, project)
    head = audit.stored_head(session)
    manifest = {
        "release": name,
        "project": project.key,
        "schema_version": current.schema_version,
        "guideline_version": current.guideline_version,
        "audit_head": head.to_dict(),
        "files": {
            fname: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for fname, data in sorted(files.items())
        },
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    out.mkdir(parents=True, exist_ok=True)
    for fname, data in files.items():
        (out / fname).write_bytes(data)
    (out / MANIFEST).write_bytes(manifest_bytes)
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    audit.record(
        session, action="release", entity_type="release", entity_id=name, project_id=project.id,
        after={"manifest_sha256": digest, "items": len(included), "excluded": len(excluded)},
    )
    return ReleaseSummary(out, len(included), len(excluded), digest)
