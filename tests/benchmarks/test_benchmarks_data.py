"""The data benchmarks run (``--quick``) and print the tables their README rows come from.

No timing is asserted here: the speed claims are the ratios the full runs print
(benchmarks/RESULTS.md). What is checked is that every row is there, and the numbers that do not
depend on the machine: a packed batch carries no padding, and a cache hit is a hit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(autouse=True)
def benchmarks_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def table_rows(output: str) -> dict[str, list[str]]:
    """First cell -> the other cells, for each body row of the markdown table."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("| ") and not re.match(r"\|\s*(setup|run)\s*\|", line):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_sft_tokens_quick(capsys: pytest.CaptureFixture[str]) -> None:
    import sft_tokens

    assert sft_tokens.main(["--quick"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == [
        "TRL SFTTrainer, packing=False (baseline)",
        "TRL packing: bfd rows flattened to one sequence",
        "launcher defaults: bfd rows, position ids reset",
    ]
    baseline, flattened, launcher = rows.values()
    assert baseline[-1] == "1.00x"
    assert flattened[3] == "1.000"  # one flattened sequence: no padding at all
    assert flattened[1] == launcher[1]  # the same packed rows went in
    # Rows keep only the padding that ends the shorter ones; unpacked batches are mostly padding.
    assert float(baseline[3]) < float(launcher[3]) <= 1.0


def test_data_prep_quick(capsys: pytest.CaptureFixture[str]) -> None:
    import data_prep

    assert data_prep.main(["--quick"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == [
        "first run, 1 process (data.num_proc=1)",
        "second run, same recipe (cache hit)",
        "first run, 2 processes (data.num_proc=2)",
    ]
    # The same packed rows and tokens every way they were had.
    assert len({tuple(cells[3:]) for cells in rows.values()}) == 1
    assert rows["first run, 1 process (data.num_proc=1)"][2] == "1.0000"
