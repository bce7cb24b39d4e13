"""A disk that fills up in the middle of a run, on a real size-limited file system (tmpfs).

The run's disk is shrunk right after its first checkpoint, so the next save runs out of space.
The run must stop with one message that names the disk, the space free and needed, and says the
previous checkpoint is intact; once space is freed, the same command resumes and ends with the
weights of the run that was never interrupted (the shared reference of ddp-1-rank).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from conftest import launcher, load_weights, start_launcher
from run_scenarios import STEPS, rank_log_since, scenario_args

from launcher.checkpoints import changed_content, latest_complete_checkpoint, problem_with

if TYPE_CHECKING:
    from shared_runs import SharedRuns

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a size-limited tmpfs needs root"),
]
pytest_plugins = ["shared_runs"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 256 MiB, mounted for the test and unmounted after it."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def resize(mount_point: Path, size_bytes: int) -> None:
    size = f"size={max(size_bytes // 1024, 64)}k"
    subprocess.run(["mount", "-o", f"remount,{size}", str(mount_point)], check=True)


def test_a_full_disk_stops_the_run_and_the_same_command_resumes(
    small_disk: Path, shared_runs: SharedRuns
) -> None:
    args = scenario_args("ddp-1-rank")
    run_dir = small_disk / "run"
    first = run_dir / "checkpoints" / "checkpoint-2"
    process = start_launcher("run", *args, "--run-dir", str(run_dir), cwd=small_disk, capture=True)
    deadline = time.monotonic() + 600
    while not (first / "launcher-complete.json").exists():
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "no first checkpoint in 600 s"
        time.sleep(0.001)
    checkpoint_size = sum(p.stat().st_size for p in first.rglob("*") if p.is_file())
    used = os.statvfs(small_disk)
    resize(small_disk, (used.f_blocks - used.f_bfree) * used.f_frsize + checkpoint_size // 2)

    output, _ = process.communicate(timeout=600)
    assert process.returncode == 1, output[-4000:]
    match = re.search(
        rf"the disk of {re.escape(str(run_dir / 'checkpoints'))} is full: [\d.]+ [KMG]?i?B free, "
        r"and one checkpoint of this run takes [\d.]+ [KMG]?i?B\. The newest complete checkpoint, "
        r"(checkpoint-\d+), is intact\. (checkpoint-\d+) was cut short .* then run the same "
        r"command to resume\.",
        output,
    )
    assert match, output[-4000:]
    intact = run_dir / "checkpoints" / match.group(1)
    assert problem_with(intact) is None and changed_content(intact) is None
    assert latest_complete_checkpoint(run_dir / "checkpoints")[0] == intact
    assert not (run_dir / "result.json").exists()

    resize(small_disk, 256 << 20)  # space freed
    offset = (run_dir / "logs" / "rank-0.log").stat().st_size
    resumed = launcher("run", *args, "--run-dir", str(run_dir), cwd=small_disk)
    assert "continuing run" in resumed.stdout
    log = rank_log_since(run_dir, 0, offset)
    assert f"resuming from {intact}" in log, log[-3000:]
    assert f"skipping incomplete {match.group(2)}" in log, log[-3000:]
    expected = load_weights(shared_runs.reference("ddp-1-rank") / "model")
    got = load_weights(run_dir / "model")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert re.search(rf"^step: +{STEPS}, training loss ", resumed.stdout, re.M), resumed.stdout
