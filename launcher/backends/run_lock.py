"""One writer per run directory: ``lock.json`` names who trains into it now.

Two writers on one run (two terminals, or a local run beside a SLURM job of the same run) log every
step twice and break retention. Whoever writes holds ``RUN/lock.json``: a ``launcher run`` on one
machine (host, pid), or a SLURM job (its id: all of its nodes and every requeued attempt are one
writer). A second ``run``/``submit`` is refused at once, naming the holder and the way out.

A holder that is gone never blocks: a process that exited (or whose pid now belongs to another
program), a job that left the queue, or a run on another host whose heartbeat stopped. Its lock is
found stale and taken over, saying so. Checking and taking happen under an ``flock`` of
``RUN/.lock.guard``, so that two launchers started at the same moment cannot both win.

``launcher submit`` takes the lock under a token it hands to the job; the job's first node finds
its token and relabels the lock with the job id, so the job never meets its own submitter as a
second writer, however fast it starts.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from launcher.contract import RunLayout
from launcher.errors import LauncherError
from launcher.files import write_text_atomic

HEARTBEAT_S = 30  # a local holder refreshes the lock's time this often...
STALE_AFTER_S = 180  # ...and a holder on another host whose lock is older than this is gone
# squeue's states of a job that may still write (queued, running, on its way back from a requeue).
JOB_ALIVE = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
    "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD",
}  # fmt: skip


class RunInUse(LauncherError):
    exit_code = 2


@dataclass(frozen=True)
class Holder:
    """Who holds a run directory: a process on a host, or a SLURM job."""

    command: str
    host: str
    since: float
    pid: int | None = None
    process_start: str | None = None  # tells a pid apart from a later process given that pid
    job_id: str | None = None
    token: str | None = None  # handed by `launcher submit` to the job it submits

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        if self.job_id:
            return f"SLURM job {self.job_id} (since {since})"
        return f"`{self.command}`, pid {self.pid} on host {self.host} (since {since})"


def this_host() -> str:
    return socket.gethostname()


def this_process(command: str, token: str | None = None) -> Holder:
    pid = os.getpid()
    return Holder(command, this_host(), time.time(), pid, process_start(pid), token=token)


def slurm_job(job_id: str) -> Holder:
    return Holder("SLURM job", this_host(), time.time(), job_id=job_id)


def new_token() -> str:
    return uuid.uuid4().hex


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), or None where /proc is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22; the name in (...) may hold spaces


def process_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process is alive
    return started is None or process_start(pid) in (None, started)


def job_state(job_id: str) -> str | None:
    """The scheduler's state of a job ("" once it left the queue), or None when it cannot be
    asked here (no squeue, or no answer)."""
    if shutil.which("squeue") is None:
        return None
    try:
        result = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        # A job the controller forgot is gone; any other complaint leaves the question open.
        return "" if "Invalid job id" in result.stderr else None
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""


def still_holding(holder: Holder, lock_age_s: float) -> tuple[bool, str]:
    """Whether ``holder`` may still write, and how that is known (for the message)."""
    if holder.job_id:
        state = job_state(holder.job_id)
        if state is None:
            return True, "its state cannot be asked here (no answer from squeue)"
        return state in JOB_ALIVE, f"it is {state or 'no longer known to the scheduler'}"
    if holder.host == this_host() and holder.pid is not None:
        alive = process_alive(holder.pid, holder.process_start)
        return alive, "it is running" if alive else "that process is gone"
    alive = lock_age_s < STALE_AFTER_S
    heard = f"last heard from {int(lock_age_s)} s ago"
    return alive, heard if alive else f"it is on another host, {heard}"


def read_holder(layout: RunLayout) -> tuple[Holder, float] | None:
    """The holder recorded in ``lock.json`` and the lock's age in seconds; None when there is
    none, or when the file is not one (a lock cut short is no lock)."""
    try:
        fields = json.loads(layout.lock_file.read_text())
        age = time.time() - layout.lock_file.stat().st_mtime
        return Holder(**fields), age
    except (OSError, ValueError, TypeError):
        return None


@contextmanager
def guarded(layout: RunLayout) -> Iterator[None]:
    """Hold ``.lock.guard`` (an exclusive flock) while a lock is checked and written."""
    with open(layout.root / ".lock.guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def write_holder(layout: RunLayout, holder: Holder) -> None:
    write_text_atomic(layout.lock_file, json.dumps(asdict(holder), indent=1) + "\n")


def take_run_lock(layout: RunLayout, holder: Holder, write: bool = True) -> str | None:
    """Make ``holder`` the run's one writer; refuse when another one still holds it. Returns a
    note when a stale lock was taken over (None otherwise). ``write=False`` only checks (the
    other nodes of a job). The run directory must exist."""
    with guarded(layout):
        found = read_holder(layout)
        note = None
        if found is not None:
            current, age = found
            if same_writer(current, holder):
                holder = replace(holder, token=holder.token or current.token)
            else:
                holding, how = still_holding(current, age)
                if holding:
                    raise RunInUse(in_use_message(layout, current, how))
                note = f"taking over {layout.root} from {current.describe()}: {how}"
        if write:
            write_holder(layout, holder)
    return note


def same_writer(current: Holder, holder: Holder) -> bool:
    """The same holder, a job's requeued attempt, or the job ``launcher submit`` handed its
    token to."""
    if current == holder:
        return True
    if current.job_id is not None and current.job_id == holder.job_id:
        return True
    return current.token is not None and current.token == holder.token


def in_use_message(layout: RunLayout, holder: Holder, how: str) -> str:
    if holder.job_id:
        way_out = (
            f"Wait for the job, watch it (`launcher status {layout.root}`), stop it "
            f"(`launcher cancel {layout.root}`)"
        )
    else:
        way_out = f"Wait for it to end, stop it (Ctrl-C in its terminal, or `kill {holder.pid}`)"
    return (
        f"{layout.root} is in use by {holder.describe()}; {how}. One run directory has one "
        f"writer at a time. {way_out}, or choose another --run-dir."
    )


def hand_to_job(layout: RunLayout, holder: Holder, job_id: str) -> None:
    """``launcher submit``: the lock it took now belongs to the job it submitted (unless the
    job's first node relabelled it already)."""
    with guarded(layout):
        found = read_holder(layout)
        if found is None or same_writer(found[0], holder):
            write_holder(layout, replace(slurm_job(job_id), token=holder.token))


def claim_for_job(
    layout: RunLayout, job_id: str, token: str | None, first_node: bool
) -> str | None:
    """At each attempt of a job: its first node takes the lock as the job (a note when a stale
    holder was replaced), the others check it; all refuse when another writer holds the run."""
    return take_run_lock(layout, replace(slurm_job(job_id), token=token), write=first_node)


def release_run_lock(layout: RunLayout, holder: Holder) -> None:
    """Give the run up, if ``holder`` (or its job) still holds it."""
    try:
        with guarded(layout):
            found = read_holder(layout)
            if found is not None and same_writer(found[0], holder):
                layout.lock_file.unlink(missing_ok=True)
    except FileNotFoundError:
        pass  # the run directory went away


@contextmanager
def heartbeat(layout: RunLayout, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Refresh the lock's time while a local run trains, so that a launcher on another host
    sharing the file system can tell a live holder from one that died with its machine."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            try:
                os.utime(layout.lock_file)
            except OSError:
                return

    thread = threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
