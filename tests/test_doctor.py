"""``launcher doctor``: the report names every component, and its all-reduce really runs two ranks.

The all-reduce goes through ``accelerate launch`` with real ranks, so those tests are integration
tests. The failing case is a real misconfiguration a cluster user can have: ``GLOO_SOCKET_IFNAME``
naming a network interface that does not exist, which every gloo rank inherits.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from launcher.doctor import Check, check_disk, check_slurm

COMPONENTS = [
    "python",
    "torch",
    "CUDA",
    "NCCL",
    "GPUs",
    "accelerate",
    "transformers",
    "trl",
    "tokenizers",
    "datasets",
    "bitsandbytes",
    "deepspeed",
    "deepspeed ops",
    "SLURM",
    "disk",
    "environment",
    "all-reduce",
]
STATUSES = ("ok", "missing", "failed", "skipped")


def doctor(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launcher", "doctor", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def report_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """``{name: (status, detail)}`` from the report's aligned lines (continuations joined)."""
    rows: dict[str, tuple[str, str]] = {}
    last = None
    for line in stdout.splitlines():
        match = re.match(rf"^  (\S+(?: \S+)?)\s+({'|'.join(STATUSES)})\s+(.*)$", line)
        if match:
            last = match.group(1)
            rows[last] = (match.group(2), match.group(3))
        elif line.startswith(" " * 10) and last is not None:
            status, detail = rows[last]
            rows[last] = (status, f"{detail} {line.strip()}")
    return rows


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def assert_versions_match_the_installed_packages(rows: dict[str, tuple[str, str]]) -> None:
    for name in ("accelerate", "transformers", "trl", "bitsandbytes", "deepspeed", "tokenizers"):
        assert rows[name] == ("ok", metadata.version(name)), name
    import torch

    assert rows["torch"][1].startswith(f"{torch.__version__} (")
    assert rows["python"][1].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")


@pytest.mark.integration
def test_doctor_reports_every_component_and_a_two_rank_all_reduce(tmp_path: Path) -> None:
    import torch

    result = doctor("--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert_no_traceback(result)
    rows = report_rows(result.stdout)
    assert list(rows) == COMPONENTS
    assert_versions_match_the_installed_packages(rows)
    status, detail = rows["all-reduce"]
    backend = "nccl" if torch.cuda.device_count() >= 2 else "gloo"
    assert status == "ok", detail
    # 2 ranks all-reduced 1 + 2: the sum is 3 = n(n+1)/2, timed by rank 0.
    assert re.match(
        rf"world size 2, backend {backend}, device \S+, sum 3 = 2\*3/2, [\d.]+ ms", detail
    )
    if not torch.cuda.is_available():
        assert rows["CUDA"][0] == rows["NCCL"][0] == rows["GPUs"][0] == "missing"
        assert "no CUDA GPU" in rows["GPUs"][1]
    assert rows["disk"][0] == "ok"
    assert f"{tmp_path / 'runs'} does not exist yet; measured at {tmp_path}" in rows["disk"][1]
    assert result.stdout.strip().splitlines()[-1].startswith("doctor: everything a run needs works")
    assert not list(tmp_path.glob("launcher-doctor-*")), "the launch's scratch folder was left"


@pytest.mark.process
def test_skip_launch_reports_the_rest_without_ranks(tmp_path: Path) -> None:
    result = doctor("--skip-launch", "--runs-dir", str(tmp_path), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert_no_traceback(result)
    rows = report_rows(result.stdout)
    assert list(rows) == COMPONENTS
    assert rows["all-reduce"] == ("skipped", "--skip-launch")
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("doctor: no problem found; not checked: all-reduce")
    assert_versions_match_the_installed_packages(rows)
    assert "built into the wheel:" in rows["deepspeed ops"][1]
    assert "JIT-buildable here:" in rows["deepspeed ops"][1]
    assert rows["disk"][1].startswith(f"{tmp_path}: ")


@pytest.mark.integration
def test_a_failing_all_reduce_is_reported_with_its_reason_and_exit_code_1(
    tmp_path: Path,
) -> None:
    import torch

    if torch.cuda.device_count() >= 2:
        pytest.skip("with two GPUs the ranks use NCCL, which ignores GLOO_SOCKET_IFNAME")
    result = doctor(
        "--runs-dir", str(tmp_path), cwd=tmp_path, env={"GLOO_SOCKET_IFNAME": "no-such-if0"}
    )

    assert result.returncode == 1
    assert_no_traceback(result)
    rows = report_rows(result.stdout)
    assert rows["environment"] == ("ok", "GLOO_SOCKET_IFNAME=no-such-if0")
    status, detail = rows["all-reduce"]
    assert status == "failed"
    assert re.match(r"exit code 1: \[doctor\] rank \d: RuntimeError: .*no-such-if0", detail), detail
    log = Path(re.search(r"full output: (\S+)", detail).group(1))
    assert "no-such-if0" in log.read_text()  # kept for the bug report
    shutil.rmtree(log.parent)
    assert result.stdout.strip().splitlines()[-1] == "doctor: 1 problem(s): all-reduce failed"


@pytest.mark.integration
def test_the_rank_program_notices_a_launch_of_one_process(tmp_path: Path) -> None:
    """`--cpu --num_processes 2` starts ONE process: no all-reduce, a clear verdict."""
    result_file = tmp_path / "result.json"
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "2",
            "-m",
            "launcher.ranks.allreduce_check",
            "2",
            str(result_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert launched.returncode != 0
    result = json.loads(result_file.read_text())
    assert (result["ok"], result["world_size"], result["expected_world_size"]) == (False, 1, 2)
    assert "[doctor] rank 0: world size 1, expected 2" in launched.stdout


@pytest.mark.process
def test_disk_is_measured_at_the_nearest_existing_folder(tmp_path: Path) -> None:
    check = check_disk(tmp_path / "a" / "b")
    assert check.status == "ok"
    assert check.detail.endswith(
        f"({tmp_path / 'a' / 'b'} does not exist yet; measured at {tmp_path})"
    )
    from launcher.units import format_bytes

    total = format_bytes(shutil.disk_usage(tmp_path).total)
    assert f" free of {total} " in check.detail


@pytest.mark.process
def test_slurm_without_scontrol_is_missing_not_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    check = check_slurm()
    assert (check.status, check.needed) == ("missing", False)
    assert "no scontrol on PATH" in check.detail


@pytest.mark.slurm
def test_doctor_sees_the_dev_cluster(cluster: None, tmp_path: Path) -> None:
    check = check_slurm()
    assert check.status == "ok", check.detail
    # cluster/dev/slurm.conf.in: ClusterName=launcher-dev, one default partition of 2 nodes.
    assert check.detail.startswith("cluster launcher-dev; partitions (name avail nodes state): ")
    assert re.search(r"debug\* up 2 \w+", check.detail), check.detail


def test_a_long_path_in_the_report_stays_whole() -> None:
    """Details wrap at spaces; a path longer than the column is not cut (it must copy whole)."""
    path = "/tmp/" + "x" * 70 + "/popen-gw0/" + "y" * 40 + "/runs"
    line = Check("disk", "ok", f"{path}: 72.52 GiB free of 251.97 GiB (measured at {path})").line()
    assert line.count(path) == 2, line
    assert all(len(row) <= 100 or path in row for row in line.splitlines())
