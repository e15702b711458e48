"""``truthset aggregate``: the quality engine on any label files, no project needed.

::

    truthset aggregate labels.csv --method ds --gold gold.csv -o consensus.parquet

writes one row per item — ``item, label, confidence`` and a ``p_<class>`` column per class — as
CSV, or Parquet when ``-o`` ends in ``.parquet``/``.pq`` (CSV on standard output without ``-o``),
and prints the readers' skills as a table on standard error.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer
from rich.table import Table

from truthset.cli.app import app, console, err_console, handle_errors
from truthset.domain.errors import InputError
from truthset.io.tables import read_table
from truthset.quality.aggregation import registry
from truthset.quality.aggregation.base import Aggregator

#: Readers shown at each end of the skills table when there are many.
SHOWN_AT_EACH_END = 10


class Method(StrEnum):
    """Aggregation methods offered on the command line."""

    mv = "mv"
    wmv = "wmv"
    ds = "ds"
    onecoin = "onecoin"
    glad = "glad"
    mace = "mace"


def make_aggregator(method: Method) -> Aggregator:
    """Return an unfitted aggregator for ``method`` (the quality engine's registry)."""
    return registry.make_aggregator(method.value)


def result_table(model: Aggregator) -> pd.DataFrame:
    """The output table: ``item, label, confidence, p_<class>…`` (one row per item)."""
    out = pd.DataFrame(
        {
            "item": model.labels_.index.to_numpy(),
            "label": model.labels_.to_numpy(),
            "confidence": model.confidence_.to_numpy(),
        }
    )
    for cls in model.classes_:
        out[f"p_{cls}"] = model.probas_[cls].to_numpy()
    return out


def write_result(frame: pd.DataFrame, out: Path | None) -> None:
    """Write CSV, or Parquet by suffix; CSV to standard output when ``out`` is None."""
    if out is None:
        console.out(frame.to_csv(index=False), end="", highlight=False)
        return
    try:
        if out.suffix.lower() in (".parquet", ".pq"):
            frame.assign(label=frame["label"].astype("string")).to_parquet(out, index=False)
        else:
            frame.to_csv(out, index=False)
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", source=str(out)) from exc


def skills_table(model: Aggregator, n_labels: pd.Series, method: str) -> Table | None:
    """Rich table of reader skills, best first (top and bottom readers only when many)."""
    skills = getattr(model, "skills_", None)
    if not isinstance(skills, pd.Series):
        return None
    order = skills.sort_values(ascending=False, na_position="last")
    table = Table(title=f"Reader skills ({method}, {len(order)} readers)")
    table.add_column("rank", justify="right")
    table.add_column("reader")
    table.add_column("skill", justify="right")
    table.add_column("labels", justify="right")
    positions = np.arange(len(order))
    if len(order) > 2 * SHOWN_AT_EACH_END:
        keep = np.r_[positions[:SHOWN_AT_EACH_END], positions[-SHOWN_AT_EACH_END:]]
    else:
        keep = positions
    previous = -1
    for pos in keep:
        if pos != previous + 1:
            table.add_row("…", f"{pos - previous - 1} more", "", "")
        reader = order.index[pos]
        value = order.iloc[pos]
        table.add_row(
            str(pos + 1),
            str(reader),
            "–" if pd.isna(value) else f"{value:.3f}",
            str(int(n_labels.get(reader, 0))),
        )
        previous = pos
    return table


@app.command("aggregate")
@handle_errors
def aggregate(
    labels: Annotated[Path, typer.Argument(help="Label table: item, annotator, label.")],
    method: Annotated[Method, typer.Option("--method", "-m", help="Aggregation method.")] = (
        Method.ds
    ),
    gold: Annotated[
        Path | None, typer.Option("--gold", help="Known answers: item, label (clamped).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output .csv or .parquet (default stdout).")
    ] = None,
) -> None:
    """Aggregate many readers' labels into one label per item, with posteriors."""
    table = read_table(labels)
    gold_table = read_table(gold) if gold is not None else None
    if gold_table is not None:
        gold_table = gold_table.rename(columns={"task": "item", "true_label": "label"})
        for column in ("item", "label"):
            if column not in gold_table.columns:
                raise InputError(f"missing column {column}", source=str(gold), field=column)
        empty = gold_table["label"].isna().to_numpy()
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise InputError(
                "empty label", source=str(gold), location=f"row {row + 1}", field="label"
            )
    model = make_aggregator(method)
    model.fit(
        table,
        gold_table,
        source=str(labels),
        gold_source=str(gold) if gold is not None else None,
    )
    write_result(result_table(model), out)
    renamed = table.rename(columns={"worker": "annotator"})
    n_labels = renamed["annotator"].value_counts()
    skills = skills_table(model, n_labels, method.value)
    if skills is not None:
        err_console.print(skills)
    if out is not None:
        err_console.print(
            f"{len(model.labels_)} items aggregated with {method.value} -> {out}", highlight=False
        )
