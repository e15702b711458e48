"""Writing a release's files from its frozen content, deterministically.

``content`` is what the database keeps of a release: ``meta`` (name, project, creation time and
actor, rule versions, audit head), ``rules`` (schema, guideline change log, policy),
``settings``, ``checks`` and ``items`` (one dict per item, ordered by external id, as stored in
``release_items``). The same content always gives the same bytes, which is what lets
``truthset release rebuild`` prove a stored release unchanged.

Files:

- ``labels.csv``: one row per included item — final label, how it was reached (consensus /
  reviewed / adjudicated), split, consensus method, posterior of the label, agreement, readers,
  reviewers, adjudicator and reason, schema and guideline versions, pre-label model, subgroups;
- ``provenance.csv``: one row per read (and adjudication) behind each final label;
- ``provenance.jsonl``: the full provenance of every included item (consensus parameters and
  posterior, reviews, escalations, adjudication, pre-label);
- ``excluded.csv``: items left out and why;
- ``splits.json``: seed, shares and counts of the patient-level splits;
- ``rules.json``: the schema, guideline versions with their change notes, the workflow policy;
- ``checks.json``: the export checks and their results;
- ``datasheet.html`` and ``datasheet.pdf``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from truthset.release import datasheet
from truthset.release.datasheet import label_text
from truthset.release.manifest import build_manifest, canonical_bytes

MEDIA_TYPES = {
    ".csv": "text/csv", ".jsonl": "application/x-ndjson", ".json": "application/json",
    ".html": "text/html", ".pdf": "application/pdf", ".parquet": "application/vnd.apache.parquet",
}
#: Subgroup columns written to labels.csv (never the patient pseudonym).
PUBLIC_SUBGROUPS = ("site", "manufacturer", "sex", "age_band", "modality", "body_part")
LABEL_COLUMNS = (
    "item", "final_label", "label_source", "split", "consensus_method", "posterior",
    "agreement", "n_reads", "readers", "reviewers", "adjudicator", "adjudication_reason",
    "schema_versions", "guideline_versions", "prelabel_model", "prelabel_accepted",
    *PUBLIC_SUBGROUPS,
)
READ_COLUMNS = ("item", "final_label", "role", "annotation_id", "annotator", "label",
                "created_at", "schema_version", "guideline_version", "time_spent_s")


def media_type(name: str) -> str:
    """The media type of a release file, by its suffix."""
    suffix = name[name.rfind("."):] if "." in name else ""
    return MEDIA_TYPES.get(suffix, "application/octet-stream")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6))
    return value


def csv_bytes(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> bytes:
    """CSV (header, ``\\n`` line ends, minimal quoting) of ``rows`` restricted to ``columns``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue().encode("utf-8")


def label_rows(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per included item (the columns of ``labels.csv``)."""
    rows = []
    for item in items:
        if not item["included"]:
            continue
        prov = item["provenance"]
        final = label_text(item["final_label"])
        cons = prov.get("consensus") or {}
        adj = prov.get("adjudication") or {}
        draft = prov.get("prelabel") or {}
        posterior = (cons.get("posterior") or {}).get(final) if cons else None
        row = {
            "item": item["external_id"], "final_label": final,
            "label_source": item["label_source"], "split": item["split"],
            "consensus_method": cons.get("method"), "posterior": posterior,
            "agreement": cons.get("agreement"), "n_reads": len(prov["reads"]),
            "readers": ";".join(sorted({str(r["reader"]) for r in prov["reads"]
                                        if r.get("reader")})),
            "reviewers": ";".join(sorted({str(r["reviewer"]) for r in prov["reviews"]
                                          if r.get("reviewer")})),
            "adjudicator": adj.get("adjudicator"), "adjudication_reason": adj.get("reason"),
            "schema_versions": ";".join(str(v) for v in prov.get("schema_versions", [])),
            "guideline_versions": ";".join(str(v) for v in prov.get("guideline_versions", [])),
            "prelabel_model": (f"{draft.get('model')}@{draft.get('version')}"
                               if draft else None),
            "prelabel_accepted": draft.get("accepted") if draft else None,
        }
        row.update({k: item["subgroups"].get(k) for k in PUBLIC_SUBGROUPS})
        rows.append(row)
    return rows


def read_rows(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per read and adjudication behind each included label (``provenance.csv``)."""
    rows = []
    for item in items:
        if not item["included"]:
            continue
        final = label_text(item["final_label"])
        prov = item["provenance"]
        entries = [("read", r) for r in prov["reads"]]
        if prov.get("adjudication"):
            entries.append(("adjudication", prov["adjudication"]))
        for role, r in sorted(entries, key=lambda e: e[1]["annotation_id"]):
            rows.append({
                "item": item["external_id"], "final_label": final, "role": role,
                "annotation_id": r["annotation_id"], "annotator": r.get("reader"),
                "label": label_text(r["label"]), "created_at": r["created_at"],
                "schema_version": r["schema_version"],
                "guideline_version": r["guideline_version"], "time_spent_s": r["time_spent_s"],
            })
    return rows


def public_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item's stored form without the patient pseudonym (what files may show)."""
    subgroups = {k: v for k, v in item["subgroups"].items() if k != "patient"}
    return {**item, "subgroups": subgroups}


def render_files(content: Mapping[str, Any]) -> dict[str, bytes]:
    """Every content file of a release (not the manifest), by name."""
    items = content["items"]
    included = [i for i in items if i["included"]]
    excluded = [{"item": i["external_id"], "reason": i["reason"]}
                for i in items if not i["included"]]
    jsonl = "".join(
        json.dumps({"item": i["external_id"], "final_label": i["final_label"],
                    "label_source": i["label_source"], "split": i["split"],
                    "provenance": i["provenance"]}, sort_keys=True, ensure_ascii=False) + "\n"
        for i in included
    ).encode("utf-8")
    files = {
        "labels.csv": csv_bytes(LABEL_COLUMNS, label_rows(items)),
        "provenance.csv": csv_bytes(READ_COLUMNS, read_rows(items)),
        "provenance.jsonl": jsonl,
        "excluded.csv": csv_bytes(("item", "reason"), excluded),
        "splits.json": canonical_bytes(content["settings"].get("split_summary", {})),
        "rules.json": canonical_bytes(content["rules"]),
        "checks.json": canonical_bytes(content["checks"]),
    }
    stats = datasheet.compute({**content, "items": [public_item(i) for i in items]})
    files["datasheet.html"], files["datasheet.pdf"] = datasheet.render_datasheet(
        stats, content["meta"])
    return files


def render_release(content: Mapping[str, Any]) -> tuple[dict[str, bytes], bytes]:
    """The content files and the bytes of ``manifest.json`` of a release."""
    files = render_files(content)
    meta = dict(content["meta"])
    meta["counts"] = {"included": sum(1 for i in content["items"] if i["included"]),
                      "excluded": sum(1 for i in content["items"] if not i["included"])}
    return files, build_manifest(meta, files)
