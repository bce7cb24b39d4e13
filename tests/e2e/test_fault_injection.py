"""Fault injection: SIGKILL a run at random moments, ten times, resuming after each; the final
weights must equal those of a run that was never interrupted.

Every other kill is aimed at a checkpoint being written (a ``checkpoint-N`` folder without its
manifest yet); the test fails unless at least one kill really landed mid-save, which shows as an
incomplete checkpoint set aside on the next resume.
"""

from __future__ import annotations

import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import launcher, load_weights, start_launcher

from launcher.checkpoints import checkpoint_step, latest_complete_checkpoint

pytestmark = pytest.mark.integration

KILLS = 10
COMMON = ["sft-mistral", "--smoke", "smoke.max_steps=60", "smoke.checkpoint_every=2"]
SCENARIOS = {
    "ddp-1-rank": ([], 0.0),
    "ddp-2-ranks": (["distributed.processes_per_node=2"], 1e-6),
    "zero2-1-rank": (["distributed.strategy=deepspeed", "distributed.zero_stage=2"], 0.0),
    "zero3-1-rank": (["distributed.strategy=deepspeed", "distributed.zero_stage=3"], 0.0),
}


def save_in_flight(checkpoints: Path) -> bool:
    return any(
        folder.is_dir() and not (folder / "launcher-complete.json").exists()
        for folder in checkpoints.glob("checkpoint-*")
    )


def newest_step(metrics_file: Path, offset: int) -> int:
    """The newest step this attempt logged (lines after ``offset`` bytes of metrics.jsonl)."""
    if not metrics_file.exists():
        return 0
    with open(metrics_file, encoding="utf-8") as stream:
        stream.seek(offset)
        tail = stream.read()
    steps = [
        int(line.split('"step": ', 1)[1].split(",", 1)[0])
        for line in tail.splitlines()
        if '"step": ' in line and line.endswith("}")
    ]
    return max(steps, default=0)


def run_and_kill(
    args: list[str], run_dir: Path, cwd: Path, target: int, delay: float, mid_save: bool
) -> bool:
    """Start `launcher run`; SIGKILL everything once it trained to step ``target`` (plus
    ``delay`` s), or the moment a checkpoint is being written. True if it finished first."""
    metrics_file = run_dir / "metrics.jsonl"
    offset = metrics_file.stat().st_size if metrics_file.exists() else 0
    process = start_launcher("run", *args, "--run-dir", str(run_dir), cwd=cwd)
    deadline = time.monotonic() + 600
    checkpoints = run_dir / "checkpoints"
    while process.poll() is None and time.monotonic() < deadline:
        if mid_save and newest_step(metrics_file, offset) >= 1 and save_in_flight(checkpoints):
            break
        if not mid_save and newest_step(metrics_file, offset) >= target:
            time.sleep(delay)
            break
        time.sleep(0.001 if mid_save else 0.02)
    finished = process.poll() is not None
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    assert time.monotonic() < deadline, "the run neither progressed nor finished"
    return finished and (run_dir / "result.json").exists()


def kill_and_resume(scenario: str, folder: Path) -> str:
    """One scenario: a reference run, ten kills with a resume after each, then the comparison.
    Returns a one-line summary; raises AssertionError naming the scenario when it fails."""
    extra, tolerance = SCENARIOS[scenario]
    args = [*COMMON, *extra]
    folder.mkdir()
    whole, killed = folder / "whole", folder / "killed"
    launcher("run", *args, "--run-dir", str(whole), cwd=folder)

    rng = random.Random(f"fault-{scenario}")
    for attempt in range(KILLS):
        # Random moments: 1 to 4 steps past where this attempt resumes, plus a random fraction of
        # a second (inside a step, an optimizer update or a save), or exactly while a save is in
        # flight. Ten attempts use at most 40 of the 60 steps, so every one of them is killed.
        newest, _ = latest_complete_checkpoint(killed / "checkpoints")
        target = (checkpoint_step(newest) if newest else 0) + rng.randint(1, 4)
        delay = rng.uniform(0.0, 0.3)
        finished = run_and_kill(args, killed, folder, target, delay, mid_save=attempt % 2 == 1)
        assert not finished, f"{scenario}: attempt {attempt} finished before it could be killed"
    launcher("run", *args, "--run-dir", str(killed), cwd=folder)

    set_aside = list((killed / "checkpoints").glob("incomplete-checkpoint-*"))
    assert set_aside, f"{scenario}: no kill landed while a checkpoint was being written"
    expected, got = load_weights(whole / "model"), load_weights(killed / "model")
    assert expected.keys() == got.keys(), scenario
    worst = 0.0
    for name in expected:
        difference = (expected[name].float() - got[name].float()).abs().max().item()
        worst = max(worst, difference)
        assert difference <= tolerance, f"{scenario}: {name} differs by {difference}"
        if tolerance == 0.0:
            assert torch.equal(expected[name], got[name]), f"{scenario}: {name} not bit-identical"
    return (
        f"{scenario}: {KILLS} kills, {len(set_aside)} incomplete checkpoints set aside, "
        f"max abs difference {worst}"
    )


def test_ten_kills_end_with_the_uninterrupted_weights(workdir: Path) -> None:
    """All four scenarios at once: most of each restart is single-threaded start-up, so running
    them side by side on 2 cores takes about half the time of running them one after another."""
    with ThreadPoolExecutor(max_workers=len(SCENARIOS)) as pool:
        futures = {name: pool.submit(kill_and_resume, name, workdir / name) for name in SCENARIOS}
    failures, summaries = [], []
    for name, future in futures.items():
        try:
            summaries.append(future.result())
        except AssertionError as error:
            failures.append(f"{name}: {error}")
    print("\n".join(summaries))
    assert not failures, "\n".join(failures)
