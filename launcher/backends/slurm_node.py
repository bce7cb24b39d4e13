"""One task per node of a SLURM job: start this node's ranks, and requeue on the time-limit signal.

Each node runs ``accelerate launch`` with its node rank from SLURM, the first host of the allocation
as the rendezvous address and a port derived from the job id, so multi-node rendezvous needs no hand
work. The time-limit protocol (checked on the development cluster, tests/backends/test_slurm_zero.py):

1. SLURM sends USR2 (``--signal=USR2@lead``) to every process of the step, ranks included.
2. The ``accelerate launch`` agent would die of USR2 while its ranks save, so it starts with USR2
   ignored. The ranks agree on the stop, save a complete checkpoint and exit; rank 0 writes
   ``stopped.json``.
3. On the first node, the task waits for ``stopped.json`` (not for its child: ``Popen.wait`` inside
   a signal handler deadlocks) and requeues the job; the next attempt resumes from that checkpoint.

Preemption (``scontrol requeue`` from outside) sends SIGTERM to everything instead; SLURM requeues
by itself, the ranks save on SIGTERM, and the attempt is recorded as preempted, not failed.

Through submitit, :class:`NodeTask` is the submitted callable (its ``checkpoint`` is step 3). The
standalone script of ``launcher sbatch`` runs ``python -m launcher.backends.slurm_node RUN_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from submitit.helpers import Checkpointable, DelayedSubmission

from launcher.backends.attempts import (
    clear_failures,
    failure_errors,
    read_attempts,
    record_attempt,
)
from launcher.backends.run_dir import PRIVATE_UMASK
from launcher.backends.run_lock import RunInUse, claim_for_job, release_run_lock, slurm_job
from launcher.backends.submitit_adapter import slurm_task
from launcher.checkpoints import checkpoint_step, latest_complete_checkpoint
from launcher.contract import Rendezvous, RunContract, RunLayout, rank_launch_command

SAVE_TIMEOUT_S = 600  # how long the first node waits for the ranks' save after the signal
PORT_BASE, PORT_SPAN = 20000, 20000


@dataclass(frozen=True)
class NodePlace:
    """Where this task sits in the job: what every node needs to find the others."""

    job_id: str
    node_rank: int
    num_nodes: int
    main_host: str
    attempt: int
    hosts: tuple[str, ...] = ()

    @property
    def port(self) -> int:
        """A rendezvous port from the job id: the same on every node, different across jobs."""
        digits = "".join(ch for ch in self.job_id if ch.isdigit()) or "0"
        return PORT_BASE + int(digits) % PORT_SPAN


def place_from_slurm() -> NodePlace:
    """This node's place, read from SLURM's environment (``srun`` sets it for every task)."""
    task = slurm_task()
    return NodePlace(
        job_id=task.job_id,
        node_rank=task.node_rank,
        num_nodes=task.num_nodes,
        main_host=task.hosts[0],
        attempt=task.restarts,
        hosts=tuple(task.hosts),
    )


def node_command(python: str, layout: RunLayout, place: NodePlace) -> list[str]:
    """The ``accelerate launch`` of one node: the plan's config plus this node's rendezvous."""
    rendezvous = Rendezvous(place.num_nodes, place.node_rank, place.main_host, place.port)
    return rank_launch_command(
        python, layout.accelerate_file, str(layout.root), rendezvous=rendezvous
    )


def ignore_usr2() -> None:
    """Run in the child before exec: the agent must outlive the signal while its ranks save."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def start_ranks(python: str, layout: RunLayout, place: NodePlace) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(node_command(python, layout, place), env=env, preexec_fn=ignore_usr2)


def record_start(layout: RunLayout, place: NodePlace) -> None:
    """Record this attempt's start, after the end of an earlier attempt whose node task could not
    record it (SLURM killed it: its ranks took longer than KillWait to save and exit, or its first
    node died). Its ranks' ``stopped.json`` (still there: the ranks of this attempt remove it)
    tells a save on a signal; without one the attempt is lost."""
    events = [e for e in read_attempts(layout) if e.get("job_id") == place.job_id]
    if events and events[-1].get("event") == "start" and events[-1].get("attempt") != place.attempt:
        earlier = NodePlace(**{**asdict(place), "attempt": events[-1]["attempt"]})
        reason, step, extra = attempt_end(layout, place, -signal.SIGKILL)
        if reason == "failed" and not extra:
            reason = "lost"
        record_end(layout, earlier, reason, step, **extra)
    contract = RunContract.read(layout.contract_file)  # node-local checkpoints: this node's
    newest, _ = latest_complete_checkpoint(contract.checkpoints_folder())
    record_attempt(layout, {
        "event": "start", "job_id": place.job_id, "attempt": place.attempt,
        "nodes": place.num_nodes, "main_host": place.main_host,
        "resumed_from_step": checkpoint_step(newest) if newest else None,
    })  # fmt: skip


def record_end(
    layout: RunLayout, place: NodePlace, reason: str, step: int | None, **extra: object
) -> None:
    record_attempt(layout, {"event": "end", "job_id": place.job_id, "attempt": place.attempt,
                    "reason": reason, "step": step, **extra})  # fmt: skip


def outcome(
    layout: RunLayout, returncode: int, job_id: str | None = None
) -> tuple[str, int | None]:
    """How an attempt ended: completed, time-limit, preempted, cancelled or failed; and at which
    step."""
    if layout.result_file.exists():
        return "completed", json.loads(layout.result_file.read_text()).get("global_step")
    if layout.stopped_file.exists():
        stopped = json.loads(layout.stopped_file.read_text())
        if stopped.get("signal") == "SIGUSR2":
            return "time-limit", stopped.get("step")
        # SIGTERM: preemption (`scontrol requeue`), unless `launcher cancel` asked for it.
        return ("cancelled" if cancel_requested(layout, job_id) else "preempted"), stopped.get(
            "step"
        )
    return ("failed" if returncode else "completed"), None


def cancel_requested(layout: RunLayout, job_id: str | None) -> bool:
    try:
        return json.loads(layout.cancel_file.read_text()).get("job_id") == job_id
    except (OSError, ValueError):
        return False


def wait_for_save(layout: RunLayout, timeout_s: float = SAVE_TIMEOUT_S) -> bool:
    """Wait until rank 0 reports the signal's checkpoint complete (``stopped.json``; rank 0
    removes it when an attempt starts, so one that exists belongs to this attempt)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if layout.stopped_file.exists():
            return True
        time.sleep(0.2)
    return False


def run_attempt(
    layout: RunLayout,
    place: NodePlace,
    python: str,
    record_time_limit: bool,
    token: str | None = None,
) -> tuple[str, int | None, int]:
    """One attempt on this node: start its ranks, wait for them, record how it ended (first
    node only). Returns (reason, step, returncode). Polls rather than ``Popen.wait``, which a
    signal handler interrupting it could deadlock on."""
    os.umask(PRIVATE_UMASK)  # what this task and its ranks create stays private, as locally
    claim_run(layout, place, token)
    if place.node_rank == 0:
        clear_failures(layout)
        record_start(layout, place)
    process = start_ranks(python, layout, place)
    while process.poll() is None:
        time.sleep(0.5)
    reason, step, extra = attempt_end(layout, place, process.returncode)
    if place.node_rank == 0 and (reason != "time-limit" or record_time_limit):
        record_end(layout, place, reason, step, returncode=process.returncode, **extra)
    if place.node_rank == 0 and reason in ENDS_THE_JOB:
        release_run_lock(layout, slurm_job(place.job_id))
    return reason, step, process.returncode


def attempt_end(
    layout: RunLayout, place: NodePlace, returncode: int
) -> tuple[str, int | None, dict[str, object]]:
    """How an attempt ended, at which step, and what to record with it. A node of the
    allocation went down: SLURM stops the job (its ranks save on the SIGTERM when they can, or
    fail when their peers vanish) and requeues it. Otherwise a failure is recorded with its first
    failing rank's reason (a hung rank, a full disk...)."""
    reason, step = outcome(layout, returncode, place.job_id)
    if reason not in ("failed", "preempted"):
        return reason, step, {}
    down = nodes_down(place.hosts)
    if down:
        return "node-failure", step, {"nodes_down": down}
    errors = failure_errors(layout) if reason == "failed" else []
    return reason, step, ({"error": errors[0]} if errors else {})


def nodes_down(hosts: tuple[str, ...]) -> list[str]:
    """The nodes of this allocation that the scheduler sees down, failed, drained (taken out
    after a failure) or not responding."""
    if len(hosts) < 2 or shutil.which("sinfo") is None:
        return []
    try:
        listed = subprocess.run(
            ["sinfo", "-h", "-N", "-n", ",".join(hosts), "-o", "%N %t"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    down = []
    for line in listed.stdout.splitlines():
        node, _, state = line.strip().partition(" ")
        # `*`: not responding; down, fail(ing), drain(ed/ing): out of service.
        if state.endswith("*") or state.rstrip("~#!%$@^-").startswith(("down", "fail", "drain")):
            down.append(node)
    return sorted(set(down))


# How an attempt ends the job (SLURM requeues after a time limit, a preemption, a node failure).
ENDS_THE_JOB = ("completed", "failed", "cancelled")


def claim_run(layout: RunLayout, place: NodePlace, token: str | None) -> None:
    """Be the run's one writer for this job (every node checks, the first one takes the lock);
    a run another writer holds fails the attempt, recorded, before any rank starts."""
    try:
        note = claim_for_job(layout, place.job_id, token, first_node=place.node_rank == 0)
    except RunInUse as error:
        if place.node_rank == 0:
            record_end(layout, place, "refused", None, error=str(error))
        raise
    if note and place.node_rank == 0:
        print(f"[launcher] note: {note}", flush=True)


def run_node(layout: RunLayout, place: NodePlace, python: str, token: str | None = None) -> str:
    """Train on this node until the ranks exit; return the attempt's outcome (a time limit is
    recorded by ``NodeTask.checkpoint``, which requeues)."""
    reason, _, returncode = run_attempt(layout, place, python, False, token)
    if reason == "failed":
        shown = "; ".join(failure_errors(layout)[:2])
        raise RuntimeError(
            f"ranks on node {place.node_rank} exited with {returncode}: {shown or 'see the logs'} "
            f"(rank logs: {layout.logs_dir})"
        )
    return reason


class NodeTask(Checkpointable):
    """What submitit runs on each node; ``checkpoint`` is its time-limit hook (first node only).
    ``token`` is the run lock's token from ``launcher submit`` (``run_lock``)."""

    def __init__(self, run_dir: str, python: str, token: str | None = None):
        self.run_dir, self.python, self.token = run_dir, python, token

    def __call__(self) -> str:
        layout, token = RunLayout(Path(self.run_dir)), getattr(self, "token", None)
        return run_node(layout, place_from_slurm(), self.python, token)

    def checkpoint(self, *args: object, **kwargs: object) -> DelayedSubmission:
        layout = RunLayout(Path(self.run_dir))
        place = place_from_slurm()
        saved = wait_for_save(layout)
        stopped = json.loads(layout.stopped_file.read_text()) if saved else {}
        record_end(layout, place, "time-limit", stopped.get("step"), saved=saved)
        return DelayedSubmission(NodeTask(self.run_dir, self.python, getattr(self, "token", None)))


def standalone_main(run_dir: str) -> int:
    """``srun python -m launcher.backends.slurm_node RUN_DIR``: the same without submitit."""
    layout = RunLayout(Path(run_dir).absolute())
    place = place_from_slurm()
    # The ranks save on either signal; this task only waits for them to exit.
    signal.signal(signal.SIGUSR2, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: None)
    reason, _, _ = run_attempt(layout, place, sys.executable, record_time_limit=True)
    if place.node_rank == 0 and reason == "time-limit":
        if shutil.which("scontrol") is None:  # a container without SLURM's commands
            print(f"time limit: checkpoint saved; no scontrol here to requeue job {place.job_id}")
        else:
            subprocess.run(["scontrol", "requeue", place.job_id], check=False)
    return 1 if reason == "failed" else 0


if __name__ == "__main__":
    sys.exit(standalone_main(sys.argv[1]))
