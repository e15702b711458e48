"""What changed between two releases of a project.

Items added and removed, labels changed (with how the new label was reached — consensus,
review, adjudication and its reason — and the audit event that recorded it), items whose split
or exclusion reason changed, and the guideline and schema versions published in between with
their change notes. As a plain dict (JSON) and as text.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.domain.errors import InputError
from truthset.release.datasheet import label_text
from truthset.release.freeze import iso_utc
from truthset.release.service import release_items
from truthset.store.models import (
    AuditEvent,
    GuidelineVersion,
    LabelSchemaVersion,
    Project,
    Release,
    ReleaseItem,
)


def _basis(item: ReleaseItem) -> tuple[str, str] | None:
    """The table and row id of the record behind a final label."""
    prov = item.provenance
    if item.label_source == "adjudicated" and prov.get("adjudication"):
        return "annotations", str(prov["adjudication"]["annotation_id"])
    if item.label_source == "reviewed" and prov.get("reviews"):
        return "reviews", str(prov["reviews"][-1]["review_id"])
    if item.label_source == "consensus" and prov.get("consensus"):
        return "consensus", str(prov["consensus"]["consensus_id"])
    return None


def _why(item: ReleaseItem) -> str:
    prov = item.provenance
    if item.label_source == "adjudicated":
        adj = prov.get("adjudication") or {}
        reason = adj.get("reason") or "no reason recorded"
        return f"adjudicated by {adj.get('adjudicator')}: {reason}"
    if item.label_source == "reviewed" and prov.get("reviews"):
        last = prov["reviews"][-1]
        note = f" ({last['comment']})" if last.get("comment") else ""
        return f"review {last['decision']} by {last['reviewer']}{note}"
    cons = prov.get("consensus") or {}
    if cons:
        agreement = cons.get("agreement")
        shown = f", agreement {agreement:.2f}" if isinstance(agreement, float) else ""
        return (f"consensus ({cons.get('method')}) of {len(prov.get('reads', []))} "
                f"reads{shown}")
    return item.label_source or "unknown"


def _events(session: Session, bases: list[tuple[str, str]]) -> dict[tuple[str, str],
                                                                      dict[str, Any]]:
    """The ``create`` audit event of each (table, row id), looked up in one query per table."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    by_table: dict[str, set[str]] = {}
    for table, entity_id in bases:
        by_table.setdefault(table, set()).add(entity_id)
    for table, ids in by_table.items():
        wanted = sorted(ids)
        for start in range(0, len(wanted), 500):
            rows = session.scalars(select(AuditEvent).where(
                AuditEvent.entity_type == table, AuditEvent.action == "create",
                AuditEvent.entity_id.in_(wanted[start:start + 500])).order_by(AuditEvent.seq))
            for row in rows:
                key = (table, str(row.entity_id))
                out.setdefault(key, {
                    "seq": int(row.seq), "at": row.at, "actor": row.actor,
                    "action": row.action, "entity_type": row.entity_type,
                    "entity_id": row.entity_id, "hash": row.hash})
    return out


def diff_releases(session: Session, old: Release, new: Release) -> dict[str, Any]:
    """The differences from ``old`` to ``new`` (same project).

    Raises
    ------
    InputError
        The releases belong to different projects.
    """
    if old.project_id != new.project_id:
        raise InputError("the two releases belong to different projects", field="releases")
    project = session.get(Project, old.project_id)
    assert project is not None
    a = {r.external_id: r for r in release_items(session, old)}
    b = {r.external_id: r for r in release_items(session, new)}
    a_in = {k for k, r in a.items() if r.included}
    b_in = {k for k, r in b.items() if r.included}
    added = [{"item": k, "label": label_text(b[k].final_label), "label_source":
              b[k].label_source, "why": _why(b[k]),
              "was": a[k].reason if k in a else "not in the project yet"}
             for k in sorted(b_in - a_in)]
    removed = [{"item": k, "label": label_text(a[k].final_label),
                "reason": b[k].reason if k in b else "no longer in the project"}
               for k in sorted(a_in - b_in)]
    changed: list[dict[str, Any]] = []
    split_changed = []
    for k in sorted(a_in & b_in):
        before, after = a[k], b[k]
        if before.final_label != after.final_label:
            changed.append({
                "item": k, "from": label_text(before.final_label),
                "to": label_text(after.final_label), "from_source": before.label_source,
                "to_source": after.label_source, "why": _why(after), "audit_event": None,
            })
        if before.split != after.split:
            split_changed.append({"item": k, "from": before.split, "to": after.split})
    bases = {c["item"]: _basis(b[c["item"]]) for c in changed}
    found = _events(session, [x for x in bases.values() if x is not None])
    for c in changed:
        basis = bases[c["item"]]
        if basis is not None:
            c["audit_event"] = found.get(basis, {"entity_type": basis[0],
                                                 "entity_id": basis[1], "seq": None})
    guidelines = session.scalars(select(GuidelineVersion).where(
        GuidelineVersion.project_id == project.id,
        GuidelineVersion.version > (old.guideline_version or 0),
        GuidelineVersion.version <= (new.guideline_version or 0),
    ).order_by(GuidelineVersion.version)).all()
    schemas = session.scalars(select(LabelSchemaVersion).where(
        LabelSchemaVersion.project_id == project.id,
        LabelSchemaVersion.version > old.schema_version,
        LabelSchemaVersion.version <= new.schema_version,
    ).order_by(LabelSchemaVersion.version)).all()
    return {
        "project": project.key,
        "from": {"release": old.name, "manifest_sha256": old.manifest_sha256,
                 "included": len(a_in), "audit_seq": int(old.audit_seq)},
        "to": {"release": new.name, "manifest_sha256": new.manifest_sha256,
               "included": len(b_in), "audit_seq": int(new.audit_seq)},
        "added": added, "removed": removed, "label_changed": changed,
        "split_changed": split_changed,
        "guideline_changes": [{"version": g.version, "change_note": g.change_note,
                               "created_at": iso_utc(g.created_at)} for g in guidelines],
        "schema_changes": [{"version": s.version, "created_at": iso_utc(s.created_at),
                            "classes": [c.get("name") for c in s.definition.get("classes", [])]}
                           for s in schemas],
        "summary": {"added": len(added), "removed": len(removed),
                    "label_changed": len(changed), "split_changed": len(split_changed)},
    }


def diff_text(diff: dict[str, Any]) -> str:
    """The diff as readable text."""
    lines = [
        f"Release diff {diff['project']}: {diff['from']['release']} -> {diff['to']['release']}",
        f"  included {diff['from']['included']} -> {diff['to']['included']}; "
        f"{diff['summary']['added']} added, {diff['summary']['removed']} removed, "
        f"{diff['summary']['label_changed']} label(s) changed",
    ]
    if diff["guideline_changes"]:
        lines.append("Guideline versions in between:")
        lines += [f"  v{g['version']} ({g['created_at']}): {g['change_note']}"
                  for g in diff["guideline_changes"]]
    if diff["schema_changes"]:
        lines.append("Schema versions in between:")
        lines += [f"  v{s['version']} ({s['created_at']}): classes {', '.join(s['classes'])}"
                  for s in diff["schema_changes"]]
    if diff["added"]:
        lines.append("Added:")
        lines += [f"  + {a['item']}: {a['label']} ({a['why']}); before: {a['was']}"
                  for a in diff["added"]]
    if diff["removed"]:
        lines.append("Removed:")
        lines += [f"  - {r['item']}: was {r['label']}; now: {r['reason']}"
                  for r in diff["removed"]]
    if diff["label_changed"]:
        lines.append("Labels changed:")
        for c in diff["label_changed"]:
            event = c["audit_event"]
            ref = (f"audit #{event['seq']} by {event['actor']} at {event['at']}"
                   if event and event.get("seq") else "no audit event found")
            lines.append(f"  ~ {c['item']}: {c['from']} -> {c['to']} ({c['why']}; {ref})")
    if diff["split_changed"]:
        lines.append(f"Split changed for {len(diff['split_changed'])} item(s).")
    return "\n".join(lines) + "\n"
