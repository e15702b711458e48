"""``truthset agree`` end to end: label files in, one coefficient out, bad files named."""

from __future__ import annotations

import json
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from truthset.cli.main import app
from truthset.quality.table import encode

runner = CliRunner()

#: Krippendorff (2011), four observers × twelve units; published alpha per level.
K2011 = [
    "1 2 3 3 2 1 4 1 2 * * *",
    "1 2 3 3 2 2 4 1 2 5 * 3",
    "* 3 3 3 2 3 4 2 2 5 1 *",
    "1 2 3 3 2 4 4 1 2 5 1 *",
]
PUBLISHED = {"nominal": 0.743421, "ordinal": 0.815388, "interval": 0.849107, "ratio": 0.797403}


@pytest.fixture
def k2011(tmp_path: Path) -> pd.DataFrame:
    rows = [
        {"item": f"unit{j + 1}", "annotator": f"obs{chr(65 + i)}", "label": value}
        for i, line in enumerate(K2011)
        for j, value in enumerate(line.split())
        if value != "*"
    ]
    return pd.DataFrame(rows)


def invoke_json(*args: str) -> dict:
    result = runner.invoke(app, ["agree", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_and_level(k2011: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"labels{suffix}"
    if suffix == ".csv":
        k2011.to_csv(path, index=False)
    elif suffix == ".tsv":
        k2011.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        k2011.to_json(path, orient="records", lines=True)
    else:
        k2011.to_parquet(path, index=False)
    for level, expected in PUBLISHED.items():
        out = invoke_json(str(path), "--level", level, "--n-boot", "200")
        assert out["value"] == pytest.approx(expected, abs=5e-7)
        assert out["level"] == level and out["metric"] == "krippendorff"
        assert out["n_items"] == 11 and out["n_annotators"] == 4 and out["n_single"] == 1
        low, high = out["ci"]
        assert low <= out["value"] <= high


def test_json_shape_and_other_metrics(k2011: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    k2011.to_csv(path, index=False)
    ac1 = invoke_json(str(path), "--metric", "ac1", "--ci", "0")
    assert {"metric", "value", "ci", "n_items", "n_annotators", "level", "reason"} <= set(ac1)
    assert ac1["ci"] is None and ac1["value"] == pytest.approx(0.77544, abs=5e-6)
    assert ac1["details"]["pe"] == pytest.approx(0.19032, abs=5e-6)
    fleiss = invoke_json(str(path), "--metric", "fleiss", "--n-boot", "100", "--seed", "3")
    assert fleiss["value"] == pytest.approx(0.76117, abs=5e-6)
    again = invoke_json(str(path), "--metric", "fleiss", "--n-boot", "100", "--seed", "3")
    assert again["ci"] == fleiss["ci"]
    pct = invoke_json(str(path), "--metric", "percent", "--per-class", "--n-boot", "50")
    assert pct["value"] == pytest.approx(0.81818, abs=5e-6)
    assert set(pct["per_class"]) == {"1", "2", "3", "4", "5"}


def test_cohen_pair_and_count_error(k2011: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    k2011.to_csv(path, index=False)
    result = runner.invoke(app, ["agree", str(path), "--metric", "cohen"])
    assert result.exit_code == 2
    assert "exactly two annotators; the table has 4" in result.stderr
    assert str(path) in result.stderr
    out = invoke_json(
        str(path), "--metric", "cohen", "--annotators", "obsA,obsB", "--weights", "linear"
    )
    assert out["n_annotators"] == 2 and out["weights"] == "linear"
    assert out["n_items"] == 9 and out["n_single"] == 2


def test_rich_table_output(crowd_dir: Path) -> None:
    path = crowd_dir / "snow2008_rte" / "labels.csv"
    result = runner.invoke(app, ["agree", str(path), "--n-boot", "100"])
    assert result.exit_code == 0, result.output
    assert "krippendorff (nominal)" in result.stdout and "95% CI" in result.stdout
    table = pd.read_csv(path, dtype=str)
    peer = krippendorff.alpha(value_counts=encode(table).counts(), level_of_measurement="nominal")
    assert f"{peer:.4f}" in result.stdout


def test_undefined_value_is_null(tmp_path: Path) -> None:
    path = tmp_path / "same.csv"
    pd.DataFrame({"item": [1, 1, 2, 2], "annotator": list("abab"), "label": ["x"] * 4}).to_csv(
        path, index=False
    )
    out = invoke_json(str(path))
    assert out["value"] is None and out["ci"] is None and "expected disagreement" in out["reason"]
    shown = runner.invoke(app, ["agree", str(path)])
    assert shown.exit_code == 0 and "undefined because" in shown.stdout


def test_duplicates_named_then_allowed(crowd_dir: Path) -> None:
    path = crowd_dir / "dawid_skene_1979" / "labels.csv"
    result = runner.invoke(app, ["agree", str(path), "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "row 2" in result.stderr and "more than once" in result.stderr
    out = invoke_json(str(path), "--duplicates", "last", "--level", "ordinal", "--ci", "0")
    assert out["n_annotators"] == 5 and out["value"] is not None


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", "item,label\n1,a\n", "missing column(s) annotator"),
        ("empty.csv", "item,annotator,label\n1,a,x\n1,b,\n", "row 2"),
        ("labels.xlsx", "whatever", "unsupported table format .xlsx"),
        ("words.csv", "item,annotator,label\n1,a,lo\n1,b,hi\n", "numeric labels"),
    ],
)
def test_bad_files_exit_2(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    args = ["agree", str(path), "--json"]
    if name == "words.csv":
        args += ["--level", "interval"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr and name in result.stderr
    assert result.stdout == ""
    if name == "empty.csv":
        assert "field 'label'" in result.stderr


def test_no_such_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["agree", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_large_scale_matches_matrix_path(tmp_path: Path) -> None:
    """The CLI (long table) and the library's matrix path agree on a few thousand labels."""
    rng = np.random.default_rng(0)
    data = rng.integers(1, 4, size=(6, 500)).astype(float)
    data[rng.random(data.shape) < 0.3] = np.nan
    rows = [
        (j, f"r{i}", int(data[i, j]))
        for i in range(6)
        for j in range(500)
        if not np.isnan(data[i, j])
    ]
    path = tmp_path / "big.parquet"
    pd.DataFrame(rows, columns=["item", "annotator", "label"]).astype(str).to_parquet(path)
    out = invoke_json(str(path), "--level", "interval", "--ci", "0")
    assert out["value"] == pytest.approx(
        krippendorff.alpha(data, level_of_measurement="interval"), abs=1e-12
    )
