"""benchmarks/lora_tokens.py runs (``--quick``) and prints the table RESULTS.md quotes.

No timing is asserted: the ratio is whatever this machine gives. What is checked is that every
variant trained through the rank's Trainer and that the variants are comparable: the same base
model on the same batches (equal first loss), LoRA training only its adapters (fewer trainable
parameters and optimizer states), and a ratio for each LoRA row. The script runs as a process of
its own because it forks one child per training run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def rows(output: str) -> dict[str, list[str]]:
    """First cell -> the other cells, for each body row of the markdown table."""
    found = {}
    for line in output.splitlines():
        if line.startswith("| ") and not re.match(r"\|\s*(variant\s*\||-)", line):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            found[cells[0]] = cells[1:]
    return found


def number(cell: str) -> float:
    return float(cell.replace(",", "").removesuffix("x"))


@pytest.mark.integration  # trains, in a process of its own
def test_lora_tokens_quick() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "lora_tokens.py"), "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    output = result.stdout
    assert re.search(r"^machine: .* cores, load average .*; peft ", output, re.M)
    assert "command: python benchmarks/lora_tokens.py --quick" in output
    table = rows(output)
    full_name, lora_name = "full fine-tuning (baseline)", "LoRA r=16, all-linear"
    assert list(table) == [full_name, lora_name, "LoRA r=16, all-linear, dropout 0"]
    # columns: trainable, optimizer MiB, peak RSS MiB, step-1 loss, tokens/step, tokens/CPU s
    # each round, tokens/CPU s, ratio, tokens/s (wall), ratio (wall)
    full, lora, no_dropout = table.values()
    assert full[7] == full[9] == "1.00x"
    for row in (lora, no_dropout):
        assert all(number(row[i]) > 0 for i in (5, 6, 7, 8, 9))
        trainable, total = (number(n) for n in row[0].split(" of "))
        assert 0 < trainable < total and row[0] == lora[0]
        # Only the adapters train: their Adam states are a fraction of full fine-tuning's.
        assert number(row[1]) < number(full[1]) / 2
        assert number(row[2]) > 0
        # B starts at zero: the same model on the same first batch.
        assert abs(number(row[3]) - number(full[3])) < 1e-4
        assert row[4] == full[4]  # the same tokens per step
    full_trainable, full_total = (number(n) for n in full[0].split(" of "))
    assert full_trainable == full_total < number(lora[0].split(" of ")[1])
    cpu, wall = number(lora[7]), number(lora[9])
    assert re.search(
        rf"^{re.escape(lora_name)} / full: {cpu:.2f} per CPU second \(each round: [\d. ]+\), "
        rf"{wall:.2f} per wall second",
        output,
        re.M,
    )
