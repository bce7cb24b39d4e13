"""The benchmarks run (each in its quick or tiny mode) and print the tables RESULTS.md quotes.

No timing is asserted here: speed claims live in benchmarks/RESULTS.md, as ratios measured in one
run. These tests check that each script works end to end, prints every row, and that what it
compares is comparable (the same training on both sides of the launch-overhead benchmark, the
launcher's own path in the GPU benchmark's CPU mode).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"


def bench(script: str, *args: str, timeout: float = 900) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{script} {' '.join(args)} exited {result.returncode}\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result.stdout


def table(output: str) -> list[list[str]]:
    """The body rows of the markdown tables in ``output``, as cells (header and rule dropped)."""

    def is_rule(line: str) -> bool:
        return line.startswith("| -") and set(line) <= set("|- ")

    rows = []
    lines = [*output.splitlines(), ""]
    for line, after in zip(lines, lines[1:], strict=False):
        if line.startswith("| ") and not is_rule(line) and not is_rule(after):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def header_lines(output: str) -> tuple[str, str]:
    machine = next(line for line in output.splitlines() if line.startswith("machine: "))
    command = next(line for line in output.splitlines() if line.startswith("command: "))
    return machine, command


@pytest.mark.process
def test_command_latency_quick() -> None:
    output = bench("command_latency.py", "--quick")
    machine, command = header_lines(output)
    assert "cores" in machine and "python" in machine and "torch" in machine
    assert command == "command: python benchmarks/command_latency.py --quick"
    rows = {row[0]: row for row in table(output)}
    assert set(rows) == {
        "python -c pass",
        "launcher --help",
        "launcher plan recipes/sft-mistral.yaml",
        "launcher plan recipes/sft-mistral.yaml training.extra.neftune_noise_alpha=5 "
        "distributed.strategy=deepspeed distributed.zero_stage=2 "
        "distributed.deepspeed.zero_optimization.reduce_bucket_size=2e8",
        "launcher submit recipes/sft-mistral.yaml --cluster dev --dry-run",
        "accelerate launch --help",
    }
    assert rows["accelerate launch --help"][-1] == "1.000"  # the baseline's own ratio
    for row in rows.values():
        median, ratio = float(row[1]), float(row[-1])
        assert median > 0 and ratio > 0
    assert re.search(r"^bar: plan [\d.]+ s <= 0.1 x [\d.]+ s: (yes|NO); ", output, re.M)
    assert re.search(r"^bar: plan \(pass-through\) [\d.]+ s <= 0.1 x ", output, re.M)


@pytest.mark.process
def test_memory_estimate_quick() -> None:
    output = bench("memory_estimate.py", "--quick")
    rows = table(output)
    deepspeed_rows = [row for row in rows if len(row) == 8]
    bnb_rows = [row for row in rows if len(row) == 7]
    assert len(deepspeed_rows) == 2 * 2 * 5  # 2 models x 2 world sizes x 5 ZeRO-2/3 setups
    assert all(row[-1] == "+0" for row in deepspeed_rows)
    assert {row[0] for row in bnb_rows} == {
        "adamw_8bit",
        "paged_adamw_8bit",
        "paged_adamw_32bit",
        "adamw_torch",
    }
    assert all(row[4] == "+0" for row in bnb_rows)
    assert "rows that differ: 0 of 20 against DeepSpeed, 0 of 4 against bitsandbytes" in output


@pytest.mark.integration
def test_launch_overhead_quick(tmp_path: Path) -> None:
    keep = tmp_path / "runs"
    output = bench("launch_overhead.py", "--quick", "--keep", str(keep))
    rows = {row[0]: row for row in table(output)}
    launcher, baseline = rows["launcher run"], rows["hand-written + accelerate launch"]
    ratio = rows["ratio launcher / hand-written"]
    assert float(ratio[1]) > 0 and float(ratio[3]) > 0  # total, to first step
    assert 0 < float(launcher[2]) < float(launcher[3])  # its own start-up, before accelerate
    # Same work on both sides: the steps, and the training loss to 5 decimals.
    assert launcher[7] == baseline[7] == "10"
    assert abs(float(launcher[9]) - float(baseline[9])) < 1e-5
    # Both sides used the fixture's tokenizer (neither trained one) and fresh data caches.
    plan = json.loads((keep / "fixture" / "plan" / "trainer_args.json").read_text())
    assert plan["max_steps"] == 10
    recipe = (keep / "launcher-0" / "plan" / "recipe.yaml").read_text()
    tokenizer = recipe.split("\ntokenizer:", 1)[1].split("\ndata:", 1)[0]
    assert f"pretrained: {keep / 'fixture' / 'tokenizer'}" in tokenizer
    assert "train: null" in tokenizer
    log = (keep / "launcher-0.log").read_text()
    assert "data: prepared" in log and "cache hit" not in log
    assert re.search(r"^bar: total ratio [\d.]+ <= 1.05: (yes|NO)", output, re.M)


@pytest.mark.integration
def test_gpu_sft_tiny_trains_through_the_launcher(tmp_path: Path) -> None:
    keep = tmp_path / "runs"
    # One trained setting (DeepSpeed and a bitsandbytes optimizer through the launcher) and the
    # QLoRA one; DDP with AdamW through `launcher run` is what most e2e tests run already.
    settings = "zero2:adamw_8bit,ddp:paged_adamw_32bit:qlora"
    output = bench("gpu_sft.py", "--tiny", "--settings", settings, "--keep", str(keep))
    assert "MFU = (6*N + 12*L*H*S) * tokens/s / peak" in output
    assert re.search(r"N = [\d,]+ parameters", output)
    rows = {(row[0], row[1]): row for row in table(output)}
    assert set(rows) == {("zero2", "adamw_8bit")}
    # The QLoRA row needs CUDA: on this CPU machine it is skipped, and says so.
    assert "skipped ddp paged_adamw_32bit QLoRA (NF4, r=16): " in output
    for (strategy, optimizer), row in rows.items():
        assert row[2] == "full"
        tokens_per_second, mfu, memory = row[3], row[4], row[5]
        assert float(tokens_per_second.replace(",", "")) > 0
        assert mfu == "n/a"  # CPU: no peak to divide by
        assert re.fullmatch(r"[\d.]+ GiB RSS", memory) and float(memory.split()[0]) > 0
        # It really went through `launcher run`: the plan and the rank's metrics are there.
        run = keep / f"{strategy}-{optimizer}"
        args = json.loads((run / "plan" / "trainer_args.json").read_text())
        assert args["optim"] == optimizer and args["max_steps"] == 6
        assert (args["deepspeed"] is not None) == (strategy == "zero2")
        steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in steps if "loss" in r] == [1, 2, 3, 4, 5, 6]


@pytest.mark.process
def test_checksum_cost_quick() -> None:
    """A real checkpoint saved and its manifest written both ways; the share is what the
    checksums add over the sizes-only manifest, relative to the save."""
    output = bench("checksum_cost.py", "--quick")
    header_lines(output)
    rows = {row[0]: row for row in table(output)}
    assert set(rows) == {
        "save (Trainer files)",
        "manifest, sizes only",
        "manifest with xxh3 checksums",
    }
    assert float(rows["save (Trainer files)"][3]) == 1.0
    assert float(rows["manifest with xxh3 checksums"][1]) > 0
    assert re.search(r"checksums cost -?\d+\.\d% of the save \((meets|misses) the goal", output)
