"""The datasheet of a release: what it holds, how well readers agreed, and its limits.

Computed only from the frozen release content (its items, their provenance and the rules), so
rebuilding a release gives the same datasheet, byte for byte. HTML (plots inline as SVG) and
PDF (matplotlib's PDF backend) are written with fixed metadata and hash salt.
"""

from __future__ import annotations

import html
import io
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

SUBGROUPS = ("site", "manufacturer", "sex", "age_band")
#: A subgroup value is flagged as under-represented below this many items …
UNDER_MIN_COUNT = 10
#: … or below this share of the included items.
UNDER_MIN_SHARE = 0.05
#: Per-class agreement under this (Krippendorff's tentative-conclusion bound) is flagged.
LOW_AGREEMENT = 0.667
UNKNOWN = "(unknown)"


def label_text(payload: Any) -> str:
    """A final label as one string: the class, ``a|b`` for multi-label, else compact JSON."""
    import json

    if isinstance(payload, dict):
        if isinstance(payload.get("label"), str) and set(payload) == {"label"}:
            return str(payload["label"])
        if isinstance(payload.get("labels"), list) and set(payload) == {"labels"}:
            return "|".join(str(x) for x in payload["labels"])
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _rate(num: int, den: int) -> float | None:
    return None if den == 0 else round(num / den, 6)


def compute(content: Mapping[str, Any]) -> dict[str, Any]:
    """The datasheet's numbers from release content (``meta``, ``rules``, ``items``)."""
    items: Sequence[Mapping[str, Any]] = content["items"]
    rules = content["rules"]
    classes = [c["name"] for c in rules["schema"]["definition"].get("classes", [])]
    included = [i for i in items if i["included"]]
    n = len(included)
    class_counts = Counter(label_text(i["final_label"]) for i in included)
    per_class = [{"class": c, "count": class_counts.get(c, 0), "share": _rate(
        class_counts.get(c, 0), n)} for c in classes]
    for extra in sorted(set(class_counts) - set(classes)):
        per_class.append({"class": extra, "count": class_counts[extra],
                          "share": _rate(class_counts[extra], n)})
    subgroups: dict[str, list[dict[str, Any]]] = {}
    for key in SUBGROUPS:
        counts = Counter(str(i["subgroups"].get(key) or UNKNOWN) for i in included)
        rows = []
        for value in sorted(counts):
            share = counts[value] / n if n else 0.0
            rows.append({"value": value, "count": counts[value], "share": round(share, 6),
                         "under_represented": value != UNKNOWN and (
                             counts[value] < UNDER_MIN_COUNT or share < UNDER_MIN_SHARE)})
        subgroups[key] = rows
    splits = Counter(str(i["split"]) for i in included)
    reads = [
        {"item": i["external_id"], "annotator": r["reader"], "label": label_text(r["label"]),
         "final": label_text(i["final_label"]), "time": r.get("time_spent_s")}
        for i in included for r in i["provenance"]["reads"] if r.get("reader")
    ]
    readers: list[dict[str, Any]] = []
    if reads:
        frame = pd.DataFrame(reads)
        frame["hit"] = frame["label"] == frame["final"]
        for name, group in frame.groupby("annotator", sort=True):
            times = pd.to_numeric(group["time"], errors="coerce").dropna()
            readers.append({
                "reader": str(name), "reads": len(group),
                "agreement_with_final": round(float(group["hit"].mean()), 6),
                "median_time_s": None if times.empty else round(float(times.median()), 3),
            })
    agreement = _agreement(reads, classes, rules)
    adjudicated = sum(1 for i in included if i["label_source"] == "adjudicated")
    reviewed = sum(1 for i in included if i["label_source"] == "reviewed")
    escalated = sum(1 for i in items if i["provenance"].get("escalations"))
    drafts = [i for i in included if i["provenance"].get("prelabel")]
    accepted = sum(1 for i in drafts if i["provenance"]["prelabel"].get("accepted"))
    excluded = Counter(i["reason"] for i in items if not i["included"])
    stats: dict[str, Any] = {
        "n_items": len(items), "n_included": n, "n_excluded": len(items) - n,
        "n_reads": len(reads), "classes": per_class, "subgroups": subgroups,
        "splits": {k: splits[k] for k in sorted(splits)},
        "agreement": agreement, "readers": readers,
        "rates": {
            "adjudication": _rate(adjudicated, n), "review": _rate(reviewed, n),
            "escalation": _rate(escalated, len(items)),
            "prelabel_acceptance": _rate(accepted, len(drafts)),
            "prelabelled_items": len(drafts),
        },
        "excluded": [{"reason": r, "count": c} for r, c in sorted(excluded.items())],
        "guidelines": rules.get("guidelines", []),
        "schema_version": rules["schema"]["version"],
    }
    stats["limitations"] = _limitations(stats, content)
    return stats


def _agreement(reads: list[dict[str, Any]], classes: list[str],
               rules: Mapping[str, Any]) -> dict[str, Any]:
    from truthset.quality.agreement import agreement, per_class_agreement

    definition = rules["schema"]["definition"]
    if definition.get("kind") != "classification" or definition.get("mode") == "multi":
        return {"available": False, "reason": "agreement per class is computed for single and "
                                              "ordinal classification schemas"}
    if not reads:
        return {"available": False, "reason": "no reads"}
    table = pd.DataFrame(reads)[["item", "annotator", "label"]]
    per_item = table.groupby("item")["annotator"].nunique()
    if int((per_item >= 2).sum()) < 2:
        return {"available": False, "reason": "fewer than two items with two or more reads"}
    level = "ordinal" if definition.get("mode") == "ordinal" else "nominal"
    overall = agreement(table, metric="krippendorff", level=level, ci=0.95, classes=classes,
                        n_boot=500, random_state=0, duplicates="last")
    by_class = per_class_agreement(table, metric="krippendorff", classes=classes, ci=0.95,
                                   n_boot=500, random_state=0, duplicates="last")
    rows = []
    for cls in classes:
        res = by_class.get(cls)
        value = None if res is None or res.value is None else round(float(res.value), 6)
        ci = None if res is None or res.ci is None else [round(float(x), 6) for x in res.ci]
        rows.append({"class": cls, "alpha": value, "ci": ci,
                     "low": value is not None and value < LOW_AGREEMENT})
    return {
        "available": True, "metric": "krippendorff", "level": level,
        "overall": None if overall.value is None else round(float(overall.value), 6),
        "overall_ci": None if overall.ci is None else [round(float(x), 6) for x in overall.ci],
        "per_class": rows, "n_boot": 500, "confidence": 0.95,
    }


def _limitations(stats: Mapping[str, Any], content: Mapping[str, Any]) -> list[str]:
    notes = [str(x) for x in content.get("settings", {}).get("limitations", [])]
    n = stats["n_included"]
    if n < 100:
        notes.append(f"Small release: {n} included items; estimates have wide uncertainty.")
    empty = [c["class"] for c in stats["classes"] if c["count"] == 0]
    if empty:
        notes.append(f"No item of class {', '.join(empty)}.")
    for key, rows in stats["subgroups"].items():
        flagged = [r["value"] for r in rows if r["under_represented"]]
        if flagged:
            notes.append(f"Under-represented {key}: {', '.join(flagged)} (fewer than "
                         f"{UNDER_MIN_COUNT} items or under {UNDER_MIN_SHARE:.0%}).")
        unknown = next((r for r in rows if r["value"] == UNKNOWN), None)
        if unknown:
            notes.append(f"{key} unknown for {unknown['count']} items.")
    low = [r["class"] for r in stats["agreement"].get("per_class", []) if r["low"]]
    if low:
        notes.append(f"Low reader agreement (alpha < {LOW_AGREEMENT}) on: {', '.join(low)}.")
    if stats["n_excluded"]:
        notes.append(f"{stats['n_excluded']} items were left out (see excluded.csv); the "
                     "release may under-represent hard cases.")
    return notes


# -- plots -----------------------------------------------------------------------------------
def _figures(stats: Mapping[str, Any]) -> list[tuple[str, Any]]:
    from matplotlib.figure import Figure

    out: list[tuple[str, Any]] = []
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    names = [_latin1(c["class"]) for c in stats["classes"]]
    ax.bar(names, [c["count"] for c in stats["classes"]], color="#4477aa")
    ax.set_ylabel("items")
    ax.set_title("Items per class")
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.88)
    out.append(("Items per class", fig))
    fig = Figure(figsize=(8, 5))
    axes = fig.subplots(2, 2).ravel()
    for ax, key in zip(axes, SUBGROUPS, strict=True):
        rows = stats["subgroups"][key]
        colours = ["#cc3311" if r["under_represented"] else "#4477aa" for r in rows]
        ax.barh([_latin1(r["value"]) for r in rows], [r["count"] for r in rows], color=colours)
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle("Items per subgroup (red: under-represented)", fontsize=10)
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.06, top=0.88, wspace=0.5, hspace=0.4)
    out.append(("Items per subgroup", fig))
    agree = stats["agreement"]
    if agree.get("available"):
        fig = Figure(figsize=(6, 3))
        ax = fig.subplots()
        rows = [r for r in agree["per_class"] if r["alpha"] is not None]
        xs = np.arange(len(rows))
        values = [r["alpha"] for r in rows]
        lo = [r["alpha"] - r["ci"][0] if r["ci"] else 0.0 for r in rows]
        hi = [r["ci"][1] - r["alpha"] if r["ci"] else 0.0 for r in rows]
        ax.errorbar(xs, values, yerr=[lo, hi], fmt="o", color="#228833", capsize=4)
        ax.axhline(LOW_AGREEMENT, color="#cc3311", linestyle="--", linewidth=1)
        ax.set_xticks(xs, [_latin1(r["class"]) for r in rows])
        ax.set_ylim(-0.2, 1.05)
        ax.set_ylabel("Krippendorff's alpha (one-vs-rest)")
        ax.set_title("Agreement per class, 95% bootstrap CI")
        fig.subplots_adjust(left=0.14, right=0.97, bottom=0.15, top=0.88)
        out.append(("Agreement per class", fig))
    if stats["readers"]:
        fig = Figure(figsize=(6, 3))
        ax = fig.subplots()
        ax.bar([_latin1(r["reader"]) for r in stats["readers"]],
               [r["agreement_with_final"] for r in stats["readers"]], color="#aa3377")
        ax.set_ylim(0, 1)
        ax.set_ylabel("share equal to final label")
        ax.set_title("Readers: agreement with the final label")
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.88)
        out.append(("Readers", fig))
    return out


def _svg_hbar(title: str, rows: Sequence[tuple[str, float, bool]], *,
              vmax: float | None = None, fmt: str = "{:g}") -> str:
    """A horizontal bar chart as inline SVG (flagged bars red); text stays text."""
    e = html.escape
    top, row_h, left, width = 28, 20, 170, 300
    top_value = vmax if vmax is not None else max([v for _l, v, _f in rows] + [1e-9])
    height = top + row_h * len(rows) + 10
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{left + width + 70}' "
             f"height='{height}' role='img' aria-label='{e(title)}'>",
             f"<text x='0' y='16' font-size='13' font-weight='bold'>{e(title)}</text>"]
    for k, (label, value, flagged) in enumerate(rows):
        y = top + k * row_h
        w = 0.0 if top_value <= 0 else max(0.0, value) / top_value * width
        colour = "#cc3311" if flagged else "#4477aa"
        parts.append(f"<text x='{left - 6}' y='{y + 14}' font-size='11' "
                     f"text-anchor='end'>{e(label)}</text>")
        parts.append(f"<rect x='{left}' y='{y + 3}' width='{w:.1f}' height='{row_h - 6}' "
                     f"fill='{colour}'/>")
        parts.append(f"<text x='{left + w + 4:.1f}' y='{y + 14}' font-size='11'>"
                     f"{e(fmt.format(value))}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _svg_ci(title: str, rows: Sequence[tuple[str, float, float | None, float | None]],
            reference: float) -> str:
    """Points with confidence intervals on a -0.2 … 1 scale as inline SVG."""
    e = html.escape
    top, row_h, left, width = 28, 22, 170, 300
    lo_axis, hi_axis = -0.2, 1.0

    def x(v: float) -> float:
        return left + (min(max(v, lo_axis), hi_axis) - lo_axis) / (hi_axis - lo_axis) * width

    height = top + row_h * len(rows) + 24
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{left + width + 80}' "
             f"height='{height}' role='img' aria-label='{e(title)}'>",
             f"<text x='0' y='16' font-size='13' font-weight='bold'>{e(title)}</text>",
             f"<line x1='{x(reference):.1f}' y1='{top}' x2='{x(reference):.1f}' "
             f"y2='{height - 20}' stroke='#cc3311' stroke-dasharray='4 3'/>"]
    for tick in (0.0, 0.5, 1.0):
        parts.append(f"<text x='{x(tick):.1f}' y='{height - 6}' font-size='10' "
                     f"text-anchor='middle'>{tick:g}</text>")
    for k, (label, value, low, high) in enumerate(rows):
        y = top + k * row_h + 11
        parts.append(f"<text x='{left - 6}' y='{y + 4}' font-size='11' "
                     f"text-anchor='end'>{e(label)}</text>")
        if low is not None and high is not None:
            parts.append(f"<line x1='{x(low):.1f}' y1='{y}' x2='{x(high):.1f}' y2='{y}' "
                         "stroke='#228833' stroke-width='2'/>")
        parts.append(f"<circle cx='{x(value):.1f}' cy='{y}' r='4' fill='#228833'/>")
        parts.append(f"<text x='{left + width + 6}' y='{y + 4}' font-size='11'>"
                     f"{value:.2f}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _svg_plots(stats: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The datasheet's plots as inline SVG."""
    out = [("Items per class", _svg_hbar(
        "Items per class", [(c["class"], c["count"], False) for c in stats["classes"]]))]
    for key, rows in stats["subgroups"].items():
        title = f"Items per {key.replace('_', ' ')} (red: under-represented)"
        out.append((title, _svg_hbar(title, [(r["value"], r["count"], r["under_represented"])
                                              for r in rows])))
    agree = stats["agreement"]
    if agree.get("available"):
        rows = [(r["class"], r["alpha"], r["ci"][0] if r["ci"] else None,
                 r["ci"][1] if r["ci"] else None)
                for r in agree["per_class"] if r["alpha"] is not None]
        out.append(("Agreement per class", _svg_ci(
            "Krippendorff's alpha per class (one-vs-rest), 95% CI", rows, LOW_AGREEMENT)))
    if stats["readers"]:
        out.append(("Readers", _svg_hbar(
            "Readers: share of reads equal to the final label",
            [(r["reader"], r["agreement_with_final"], False) for r in stats["readers"]],
            vmax=1.0, fmt="{:.2f}")))
    return out


# -- HTML ------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_datasheet(stats: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The datasheet as HTML and as PDF."""
    return render_html(stats, meta), render_pdf(stats, meta)


def render_html(stats: Mapping[str, Any], meta: Mapping[str, Any]) -> bytes:
    """The datasheet as one self-contained HTML page (plots inline as SVG, text as text)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Datasheet: {e(meta['project'])} {e(meta['release'])}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #bbb;"
        "padding:.2em .6em;text-align:left}.flag{color:#c31}</style></head><body>",
        f"<h1>Datasheet — {e(meta['project'])}, release {e(meta['release'])}</h1>",
        f"<p>Created {e(str(meta['created_at']))} by {e(str(meta['created_by']))}. "
        f"Schema v{stats['schema_version']}, guideline v{_fmt(meta.get('guideline_version'))}. "
        f"Audit head #{meta['audit_head']['seq']}.</p>",
        "<h2>Composition</h2>",
        _table(["items", "included", "excluded", "reads"],
               [[stats["n_items"], stats["n_included"], stats["n_excluded"], stats["n_reads"]]]),
        "<h3>Per class</h3>",
        _table(["class", "items", "share"],
               [[c["class"], c["count"], c["share"]] for c in stats["classes"]]),
        "<h3>Splits (by patient, stratified by class and site)</h3>",
        _table(["split", "items"], list(stats["splits"].items())),
        "<h3>Subgroups</h3>",
    ]
    for key, rows in stats["subgroups"].items():
        parts.append(f"<h4>{e(key.replace('_', ' '))}</h4>")
        parts.append(_table(["value", "items", "share", "under-represented"],
                            [[r["value"], r["count"], r["share"],
                              "yes" if r["under_represented"] else ""] for r in rows]))
    agree = stats["agreement"]
    parts.append("<h2>Agreement between readers</h2>")
    if agree.get("available"):
        ci = agree["overall_ci"]
        parts.append(f"<p>Krippendorff's alpha ({e(agree['level'])}) over all classes: "
                     f"{_fmt(agree['overall'])}"
                     + (f" (95% CI {ci[0]:.3f} – {ci[1]:.3f})" if ci else "") + ".</p>")
        parts.append(_table(["class", "alpha (one-vs-rest)", "95% CI", "low"],
                            [[r["class"], r["alpha"],
                              f"{r['ci'][0]:.3f} – {r['ci'][1]:.3f}" if r["ci"] else None,
                              "yes" if r["low"] else ""] for r in agree["per_class"]]))
    else:
        parts.append(f"<p>Not computed: {e(agree['reason'])}.</p>")
    parts.append("<h2>Readers</h2>")
    parts.append(_table(["reader", "reads", "agreement with final label", "median time (s)"],
                        [[r["reader"], r["reads"], r["agreement_with_final"],
                          r["median_time_s"]] for r in stats["readers"]]))
    rates = stats["rates"]
    parts.append("<h2>Review, adjudication, escalation, pre-labels</h2>")
    parts.append(_table(["reviewed", "adjudicated", "escalated", "pre-labelled items",
                         "pre-label acceptance"],
                        [[rates["review"], rates["adjudication"], rates["escalation"],
                          rates["prelabelled_items"], rates["prelabel_acceptance"]]]))
    parts.append("<h2>Excluded items</h2>")
    parts.append(_table(["reason", "items"], [[x["reason"], x["count"]]
                                              for x in stats["excluded"]]))
    parts.append("<h2>Guideline versions and change log</h2><ul>")
    for g in stats["guidelines"]:
        parts.append(f"<li>v{g['version']} ({e(str(g['created_at']))}): "
                     f"{e(g['change_note'])}</li>")
    parts.append("</ul><h2>Known limitations</h2><ul>")
    parts += [f"<li class='flag'>{e(x)}</li>" for x in stats["limitations"]]
    parts.append("</ul><h2>Plots</h2>")
    for title, svg in _svg_plots(stats):
        parts.append(f"<figure>{svg}<figcaption>{e(title)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts).encode("utf-8")


def render_pdf(stats: Mapping[str, Any], meta: Mapping[str, Any]) -> bytes:
    """The datasheet as a PDF: a summary page, then one page per plot (no creation date, so
    the bytes depend on the content only)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_pdf import PdfPages

    lines = [
        f"Datasheet - {meta['project']}, release {meta['release']}",
        f"Created {meta['created_at']} by {meta['created_by']}",
        f"Items {stats['n_items']}, included {stats['n_included']}, "
        f"excluded {stats['n_excluded']}, reads {stats['n_reads']}",
        "Per class: " + ", ".join(f"{c['class']} {c['count']}" for c in stats["classes"]),
        "Splits: " + ", ".join(f"{k} {v}" for k, v in stats["splits"].items()),
    ]
    agree = stats["agreement"]
    if agree.get("available"):
        lines.append(f"Krippendorff's alpha ({agree['level']}): {_fmt(agree['overall'])}")
        lines += [f"  {r['class']}: {_fmt(r['alpha'])}"
                  + (f" [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" if r["ci"] else "")
                  for r in agree["per_class"]]
    rates = stats["rates"]
    lines.append(f"Reviewed {_fmt(rates['review'])}, adjudicated {_fmt(rates['adjudication'])}, "
                 f"escalated {_fmt(rates['escalation'])}, pre-label acceptance "
                 f"{_fmt(rates['prelabel_acceptance'])}")
    lines += [f"Guideline v{g['version']}: {g['change_note']}" for g in stats["guidelines"]]
    lines.append("Known limitations:")
    lines += [f"  - {x}" for x in stats["limitations"]]
    buffer = io.BytesIO()
    fonts = logging.getLogger("matplotlib.font_manager")
    level = fonts.level
    fonts.setLevel(logging.ERROR)  # the 14 core fonts are not installed: metrics suffice
    try:
        with matplotlib.rc_context({"pdf.compression": 6, "pdf.use14corefonts": True}), \
                PdfPages(buffer, metadata={"Creator": "Truthset", "Producer": "Truthset",
                                           "CreationDate": None, "ModDate": None}) as pdf:
            _pdf_pages(pdf, lines, stats)
    finally:
        fonts.setLevel(level)
    return buffer.getvalue()


def _pdf_pages(pdf: Any, lines: Sequence[str], stats: Mapping[str, Any]) -> None:
    from matplotlib.figure import Figure

    page = Figure(figsize=(8.27, 11.69))
    for k, line in enumerate(lines[:60]):
        page.text(0.06, 0.96 - k * 0.015, _latin1(line)[:120], fontsize=8, family="monospace",
                  va="top")
    pdf.savefig(page)
    for _title, fig in _figures(stats):
        pdf.savefig(fig)


def _latin1(text: str) -> str:
    """What the PDF core fonts can show (others become '?')."""
    return str(text).encode("latin-1", "replace").decode("latin-1")
