"""``truthset aggregate`` end to end: files in, consensus file out, errors named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from truthset.cli.main import app
from truthset.io.tables import read_table
from truthset.quality.aggregation import DawidSkene, MajorityVote

runner = CliRunner()


@pytest.fixture
def rte(crowd_dir: Path) -> Path:
    return crowd_dir / "snow2008_rte" / "labels.csv"


def test_ds_to_csv_matches_library(rte: Path, tmp_path: Path) -> None:
    out = tmp_path / "consensus.csv"
    result = runner.invoke(app, ["aggregate", str(rte), "--method", "ds", "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out, dtype={"item": str, "label": str})
    assert list(written.columns) == ["item", "label", "confidence", "p_0", "p_1"]
    model = DawidSkene().fit(read_table(rte))
    expected = model.labels_
    assert (written.set_index("item")["label"] == expected[written["item"]].to_numpy()).all()
    np.testing.assert_allclose(written["p_1"], model.probas_.loc[written["item"], "1"])
    assert "Reader skills" in result.stderr
    assert "more" in result.stderr  # 164 readers: top and bottom only


def test_parquet_by_suffix_and_gold(crowd_dir: Path, rte: Path, tmp_path: Path) -> None:
    truth = read_table(crowd_dir / "snow2008_rte" / "truth.csv").iloc[:50]
    gold = tmp_path / "gold.csv"
    truth.to_csv(gold, index=False)
    out = tmp_path / "consensus.parquet"
    result = runner.invoke(
        app, ["aggregate", str(rte), "-m", "mv", "--gold", str(gold), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(out).set_index("item")
    assert (written.loc[truth["item"], "label"].to_numpy() == truth["label"].to_numpy()).all()
    plain = MajorityVote().fit(read_table(rte))
    others = written.index.difference(truth["item"]).difference(plain.ties_)
    assert (written.loc[others, "label"] == plain.labels_[others]).all()


def test_stdout_when_no_output_file(crowd_dir: Path) -> None:
    path = crowd_dir / "dawid_skene_1979" / "labels.csv"
    result = runner.invoke(app, ["aggregate", str(path), "-m", "onecoin"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "item,label,confidence,p_1,p_2,p_3,p_4"
    assert len(result.stdout.splitlines()) == 46


@pytest.mark.parametrize("method", ["wmv", "glad", "mace"])
def test_other_methods_write_labels_and_print_skills(rte: Path, method: str) -> None:
    result = runner.invoke(app, ["aggregate", str(rte), "-m", method])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 801
    assert result.stdout.splitlines()[0] == "item,label,confidence,p_0,p_1"
    assert f"Reader skills ({method}, 164 readers)" in result.stderr


def test_errors_name_file_row_and_field(crowd_dir: Path, rte: Path, tmp_path: Path) -> None:
    gold = tmp_path / "gold.csv"
    gold.write_text("item,label\n25,0\nno-such-item,1\n")
    result = runner.invoke(app, ["aggregate", str(rte), "--gold", str(gold)])
    assert result.exit_code == 2
    assert "gold.csv, row 2, field 'item'" in result.stderr
    assert "no-such-item" in result.stderr

    bad = tmp_path / "labels.csv"
    bad.write_text("item,annotator,label\na,r1,x\na,r2,\n")
    result = runner.invoke(app, ["aggregate", str(bad)])
    assert result.exit_code == 2
    assert "labels.csv, row 2, field 'label'" in result.stderr

    gold.write_text("item,label\n25,7\n")
    result = runner.invoke(app, ["aggregate", str(rte), "--gold", str(gold)])
    assert result.exit_code == 2 and "not a known class" in result.stderr

    result = runner.invoke(app, ["aggregate", str(tmp_path / "missing.csv")])
    assert result.exit_code == 2 and "no such file" in result.stderr
