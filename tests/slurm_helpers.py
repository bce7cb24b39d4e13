"""What the SLURM tests share: the dev profile with changes, waiting for a job and for events of
a run, reading its attempt records and metrics, and what both nodes must have written."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from conftest import REPO, launcher, metrics


def profile(folder: Path, **changes: object) -> Path:
    """The dev profile with some values changed, written next to the test's files."""
    text = (REPO / "cluster" / "dev.yaml").read_text()
    for key, value in changes.items():
        text = re.sub(rf"^{key}:.*$", f"{key}: {json.dumps(value)}", text, flags=re.M)
    path = folder / "profile.yaml"
    path.write_text(text)
    return path


def wait_until_done(run_dir: Path, timeout: float = 420, job: str | None = None) -> str:
    """Poll until the job (default: the one `launcher submit` recorded) left the queue; return
    the last `launcher status` report. A job still queued after ``timeout`` is cancelled."""
    job = job or json.loads((run_dir / "job.json").read_text())["job_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True)
        if not queued.stdout.strip():
            return launcher("status", str(run_dir), cwd=run_dir.parent).stdout
        time.sleep(0.5)
    subprocess.run(["scancel", job])
    report = launcher("status", str(run_dir), cwd=run_dir.parent, check=False).stdout
    raise AssertionError(f"job {job} did not finish in {timeout} s:\n{report}")


def attempts(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()]


def logged_steps(run_dir: Path) -> list[int]:
    return [m["step"] for m in metrics(run_dir) if "loss" in m]


def check_both_nodes_trained(run_dir: Path) -> None:
    """Both ranks passed the plan check in one world of 2, one on each node."""
    nodes = set()
    for rank in (0, 1):
        log = (run_dir / "logs" / f"rank-{rank}.log").read_text()
        found = re.search(rf"rank {rank} on (n\d): world 2, global batch", log)
        assert found, log[-2000:]
        nodes.add(found.group(1))
    assert nodes == {"n1", "n2"}, "both nodes must have run a rank"


def shard_names(rank: int, stage: int) -> set[str]:
    """A rank's own files of a ZeRO checkpoint: its optimizer partition, and from ZeRO-3 on its
    parameter partition too (ZeRO-1/2 keep whole parameters in one mp_rank_00 file)."""
    kinds = ("model", "optim") if stage == 3 else ("optim",)
    return {f"zero_pp_rank_{rank}_mp_rank_00_{kind}_states.pt" for kind in kinds}


def check_shards_of_both_ranks(checkpoint: Path, step: int, stage: int) -> None:
    """A ZeRO checkpoint holds each rank's partition, written by the node it ran on."""
    shards = {p.name for p in (checkpoint / f"global_step{step}").glob("zero_pp_rank_*")}
    assert shards == shard_names(0, stage) | shard_names(1, stage), shards


# Each piece would run `touch` if a shell read the value unquoted; the unbalanced quotes come
# after a `#`, so that they cannot turn the commands before them into a syntax error instead.
HOSTILE = "a b $(touch {marker}) `touch {marker}`; touch {marker}\ntouch {marker} # 'c\"d $HOME"


def poll(what: str, condition, timeout: float, run_dir: Path):
    """Wait until ``condition()`` returns something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    report = launcher("status", str(run_dir), cwd=run_dir.parent, check=False).stdout
    raise AssertionError(f"waited {timeout:.0f} s for {what}:\n{report}")


def read_attempts(run_dir: Path) -> list[dict]:
    return attempts(run_dir) if (run_dir / "attempts.jsonl").exists() else []


def events(run_dir: Path, **match: object) -> list[dict]:
    """The attempt records with these values (none yet: [])."""
    return [e for e in read_attempts(run_dir) if all(e.get(k) == v for k, v in match.items())]


def steps_logged(run_dir: Path) -> int:
    """The newest step in metrics.jsonl (0 before the first)."""
    return max(logged_steps(run_dir), default=0) if (run_dir / "metrics.jsonl").exists() else 0


def complete_steps(folder: Path) -> list[int]:
    markers = folder.glob("checkpoint-*/launcher-complete.json")
    return sorted(int(p.parent.name.split("-")[1]) for p in markers)
