"""Read label tables from CSV, TSV, JSONL or Parquet files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from truthset.domain.errors import InputError

#: File suffixes this module reads, and the format each one means.
TABLE_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table file into a DataFrame; every value is kept as text except in Parquet.

    Labels are read as strings so that ``1`` and ``1.0`` or ``01`` never merge silently; the
    quality engine decides how to order them.

    Raises
    ------
    InputError
        The file is missing, its suffix is not one of :data:`TABLE_FORMATS`, or it cannot be
        parsed (the line is named where the parser gives it).
    """
    p = Path(path)
    fmt = TABLE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(
            f"unsupported table format {p.suffix or '(no suffix)'}; use one of "
            f"{', '.join(sorted(TABLE_FORMATS))}",
            source=str(p),
        )
    if not p.is_file():
        raise InputError("no such file", source=str(p))
    try:
        if fmt in ("csv", "tsv"):
            return pd.read_csv(
                p, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False
            ).replace({"": None})
        if fmt == "jsonl":
            return _read_jsonl(p)
        return pd.read_parquet(p)
    except InputError:
        raise
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise InputError(f"cannot parse {fmt.upper()}: {exc}", source=str(p)) from exc


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"invalid JSON: {exc.msg}", source=str(path), location=f"line {number}"
                ) from exc
            if not isinstance(row, dict):
                raise InputError(
                    "each line must be a JSON object", source=str(path), location=f"line {number}"
                )
            rows.append({k: (None if v is None else str(v)) for k, v in row.items()})
    return pd.DataFrame(rows)
