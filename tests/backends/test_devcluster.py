"""The local development SLURM cluster (cluster/devcluster.sh): two nodes, real jobs, fast requeue.

Needs root: `cluster/devcluster.sh start` installs slurm-wlm and munge with apt-get if they are
missing, writes /etc/slurm and starts munged, slurmctld and two slurmd. It is idempotent, so this
test starts the cluster (or finds it up in well under a second) and leaves it running.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEVCLUSTER = REPO / "cluster" / "devcluster.sh"

pytestmark = pytest.mark.slurm


def run(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def job_active(job_id: str) -> bool:
    """True while `squeue -j ID` lists the job (pending, running or completing)."""
    result = run("squeue", "-h", f"-j{job_id}", "-o", "%T", check=False)
    return bool(result.stdout.strip())


def job_state(job_id: str) -> str:
    out = run("scontrol", "show", "job", job_id, check=False).stdout
    match = re.search(r"JobState=(\S+)", out)
    return match.group(1) if match else "GONE"


def sbatch(*args: str) -> str:
    out = run("sbatch", "--parsable", *args).stdout.strip()
    return out.split(";")[0]


@pytest.fixture(scope="module")
def cluster():
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip(
            "the dev SLURM cluster needs root: cluster/devcluster.sh installs and starts daemons"
        )
    started = time.monotonic()
    result = run(str(DEVCLUSTER), "start", timeout=600, check=False)
    assert result.returncode == 0, f"devcluster.sh start failed:\n{result.stdout}\n{result.stderr}"
    summary = result.stdout.strip().splitlines()[-1]
    print(f"devcluster.sh start took {time.monotonic() - started:.1f} s: {summary}")
    status = run(str(DEVCLUSTER), "status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    return result


def test_start_is_idempotent_and_fast(cluster):
    started = time.monotonic()
    result = run(str(DEVCLUSTER), "start", timeout=120)
    elapsed = time.monotonic() - started
    assert "up: cluster launcher-dev" in result.stdout
    assert "started" not in result.stdout, result.stdout  # nothing was (re)started
    assert elapsed < 10, f"a second start took {elapsed:.1f} s"


def test_both_nodes_idle(cluster):
    out = run("sinfo", "-h", "-N", "-p", "debug", "-o", "%N %t").stdout
    states = dict(line.split() for line in sorted(set(out.splitlines())))
    assert set(states) == {"n1", "n2"}, out
    assert all(state in {"idle", "mix", "alloc"} for state in states.values()), out


def test_srun_on_two_nodes(cluster):
    out = run("srun", "-N2", "-l", "--time=1", "hostname", timeout=60).stdout
    labels = {line.split(":")[0].strip() for line in out.splitlines() if ":" in line}
    assert labels == {"0", "1"}, out
    out = run("srun", "-N2", "-l", "--time=1", "printenv", "SLURMD_NODENAME", timeout=60).stdout
    assert sorted(out.split()) == ["0:", "1:", "n1", "n2"], out


def test_sbatch_two_nodes_completes(cluster, tmp_path):
    output = tmp_path / "two-nodes.out"
    job_id = sbatch(
        "--nodes=2",
        "--ntasks-per-node=1",
        "--time=2",
        "--job-name=devcluster-two-nodes",
        f"--chdir={tmp_path}",
        f"--output={output}",
        "--wrap",
        "srun -l printenv SLURMD_NODENAME",
    )
    try:
        wait_for(lambda: not job_active(job_id), 45, f"job {job_id} to finish")
    finally:
        run("scancel", job_id, check=False)
    state = job_state(job_id)
    text = output.read_text() if output.exists() else "(no output file)"
    assert state in {"COMPLETED", "GONE"}, f"job {job_id} ended {state}: {text}"
    assert sorted(line for line in text.splitlines() if line) == ["0: n1", "1: n2"], text


def test_requeue_runs_again_quickly(cluster, tmp_path):
    """`scontrol requeue` (what preemption does) brings the job back in seconds, not ~2 minutes."""
    starts = tmp_path / "starts.txt"
    script = tmp_path / "requeue.sh"
    # Each start appends "<restart count> <time>"; the sleep keeps it running until the requeue.
    lines = [
        "#!/bin/bash",
        f'echo "${{SLURM_RESTART_COUNT:-0}} $(date +%s.%N)" >> "{starts}"',
        "sleep 300",
    ]
    script.write_text("\n".join(lines) + "\n")
    job_id = sbatch(
        "--nodes=1",
        "--time=5",
        "--requeue",
        "--job-name=devcluster-requeue",
        "--output=/dev/null",
        f"--chdir={tmp_path}",
        str(script),
    )

    def start_lines():
        return starts.read_text().splitlines() if starts.exists() else []

    try:
        wait_for(lambda: len(start_lines()) >= 1, 30, f"job {job_id} to start")
        requeued_at = time.monotonic()
        run("scontrol", "requeue", job_id)
        wait_for(lambda: len(start_lines()) >= 2, 40, f"requeued job {job_id} to run again")
        again_after = time.monotonic() - requeued_at
    finally:
        run("scancel", job_id, check=False)
    print(f"requeued job {job_id} ran again {again_after:.1f} s after scontrol requeue")
    counts = [line.split()[0] for line in start_lines()]
    assert counts[:2] == ["0", "1"], start_lines()
    assert again_after < 30, f"the requeued job took {again_after:.1f} s to run again"
