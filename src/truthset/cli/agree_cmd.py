"""``truthset agree``: the quality engine on any label files, no project needed.

::

    truthset agree labels.csv --metric krippendorff --level ordinal --ci 0.95 --json

reads a long table (``item, annotator, label``; crowd-kit's ``task, worker, label`` accepted) from
CSV, TSV, JSONL or Parquet and prints one agreement coefficient with its bootstrap confidence
interval — a table, or with ``--json`` exactly one JSON object on standard output.
"""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from truthset.cli.app import app, console, handle_errors
from truthset.domain.errors import InputError
from truthset.io.tables import read_table
from truthset.quality.agreement import AgreementResult, agreement, per_class_agreement
from truthset.quality.table import encode


class MetricName(StrEnum):
    """Coefficients offered on the command line."""

    percent = "percent"
    cohen = "cohen"
    fleiss = "fleiss"
    krippendorff = "krippendorff"
    ac1 = "ac1"


class LevelName(StrEnum):
    """Krippendorff's levels of measurement."""

    nominal = "nominal"
    ordinal = "ordinal"
    interval = "interval"
    ratio = "ratio"


class WeightsName(StrEnum):
    """Cohen's kappa weights."""

    none = "none"
    linear = "linear"
    quadratic = "quadratic"


class DuplicatesName(StrEnum):
    """What to do when a reader labels the same item twice."""

    error = "error"
    last = "last"
    keep = "keep"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def result_table(result: AgreementResult, title: str) -> Table:
    """A two-column Rich table of one result."""
    table = Table(title=title, show_header=False)
    table.add_column("field")
    table.add_column("value", justify="right")
    label = result.metric + (f" ({result.level})" if result.level else "")
    if result.weights and result.weights != "none":
        label += f" ({result.weights} weights)"
    table.add_row("metric", label)
    table.add_row("value", _fmt(result.value))
    if result.ci is not None and result.confidence is not None:
        table.add_row(
            f"{result.confidence:.0%} CI", f"[{_fmt(result.ci[0])}, {_fmt(result.ci[1])}]"
        )
    table.add_row("items compared", str(result.n_items))
    table.add_row("items with one label", str(result.n_single))
    table.add_row("annotators", "–" if result.n_annotators is None else str(result.n_annotators))
    for key in ("pa", "pe", "po"):
        if key in result.details:
            table.add_row(key, _fmt(result.details[key]))
    if result.reason:
        table.add_row("undefined because", result.reason)
    return table


def per_class_table(results: dict[Any, AgreementResult]) -> Table:
    """One row per class: one-vs-rest value and interval."""
    table = Table(title="One-vs-rest agreement per class")
    for column in ("class", "value", "CI", "note"):
        table.add_column(column, justify="left" if column in ("class", "note") else "right")
    for cls, res in results.items():
        ci = "" if res.ci is None else f"[{_fmt(res.ci[0])}, {_fmt(res.ci[1])}]"
        table.add_row(str(cls), _fmt(res.value), ci, res.reason or "")
    return table


@app.command("agree")
@handle_errors
def agree(
    labels: Annotated[Path, typer.Argument(help="Label table: item, annotator, label.")],
    metric: Annotated[MetricName, typer.Option("--metric", "-m", help="Coefficient.")] = (
        MetricName.krippendorff
    ),
    level: Annotated[
        LevelName, typer.Option("--level", help="Krippendorff's level of measurement.")
    ] = LevelName.nominal,
    weights: Annotated[
        WeightsName | None,
        typer.Option("--weights", help="Cohen's weights (default: from --level)."),
    ] = None,
    ci: Annotated[
        float, typer.Option("--ci", help="Confidence level of the bootstrap CI; 0 for none.")
    ] = 0.95,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    duplicates: Annotated[
        DuplicatesName,
        typer.Option("--duplicates", help="A reader labelling an item twice: error, last, keep."),
    ] = DuplicatesName.error,
    annotators: Annotated[
        str | None,
        typer.Option("--annotators", help="Cohen: the two readers to compare, as A,B."),
    ] = None,
    per_class: Annotated[
        bool, typer.Option("--per-class", help="Also one-vs-rest agreement for every class.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Agreement between readers: percent, Cohen, Fleiss, Krippendorff's alpha or Gwet's AC1."""
    source = str(labels)
    encoded = encode(read_table(labels), source=source)
    kwargs: dict[str, Any] = {
        "ci": ci or None,
        "n_boot": n_boot,
        "random_state": seed,
        "duplicates": duplicates.value,
    }
    try:
        result = agreement(
            encoded,
            metric=metric.value,
            level=level.value,
            weights=None if weights is None else weights.value,
            annotators=None if annotators is None else annotators.split(","),
            **kwargs,
        )
        classes = (
            per_class_agreement(
                encoded,
                metric=metric.value,
                annotators=None if annotators is None else annotators.split(","),
                **kwargs,
            )
            if per_class
            else None
        )
    except InputError as exc:
        raise dataclasses.replace(exc, source=exc.source or source) from None
    if as_json:
        payload = result.to_dict()
        payload["file"] = source
        if classes is not None:
            payload["per_class"] = {str(c): r.to_dict() for c, r in classes.items()}
        console.out(json.dumps(payload), highlight=False)
        return
    console.print(result_table(result, f"Agreement — {labels.name}"))
    if classes is not None:
        console.print(per_class_table(classes))
