"""Which ranks did not arrive when a collective timed out.

A collective (an all-reduce, a barrier) waits for every rank. When one rank hangs (stopped, stuck
on a file system, deadlocked in its data loader), the others wait ``distributed.timeout_min`` and
then fail with an error that names no one ("Timed out waiting 900000ms for recv operation"). To
name the rank that hung, every rank keeps a heartbeat, ``logs/heartbeat-rank-N.json`` (its host,
pid, last finished step and the time), refreshed by a thread every few seconds and at every step
end. The rank that timed out reads them all: a rank whose heartbeat stopped (a frozen or dead
process) or that is steps behind the others is one that did not arrive.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from transformers import TrainerCallback

from launcher.contract import RunLayout
from launcher.errors import first_line
from launcher.files import write_text_atomic

EVERY_S = 5.0
# Words torch's backends use for a collective that waited too long (gloo, NCCL's watchdog).
TIMEOUT_WORDS = ("Timed out", "timed out", "Watchdog caught collective operation timeout")


def heartbeat_file(layout: RunLayout, rank: int) -> Path:
    return layout.logs_dir / f"heartbeat-rank-{rank}.json"


class Heartbeat(TrainerCallback):
    """This rank's heartbeat: started before the first collective, stopped with the rank."""

    def __init__(self, layout: RunLayout, rank: int, every_s: float = EVERY_S):
        self.path, self.rank, self.every_s = heartbeat_file(layout, rank), rank, every_s
        self.step = 0
        self.done = threading.Event()
        self.beat()
        self.thread = threading.Thread(target=self.run, name="launcher-heartbeat", daemon=True)
        self.thread.start()

    def beat(self) -> None:
        record = {
            "rank": self.rank, "host": socket.gethostname(), "pid": os.getpid(),
            "step": self.step, "time": time.time(),
        }  # fmt: skip
        try:
            write_text_atomic(self.path, json.dumps(record))
        except OSError:
            pass  # a full or vanished disk must not end the rank from this thread

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            self.beat()

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.step = state.global_step
        self.beat()

    def close(self) -> None:
        self.done.set()


def is_collective_timeout(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and any(w in str(error) for w in TIMEOUT_WORDS)


def missing_ranks(layout: RunLayout, me: int, now: float, every_s: float = EVERY_S) -> list[dict]:
    """The heartbeats of the ranks that did not arrive: silent for three beats, or behind the
    newest step. Each record gains ``silent_s``."""
    beats = []
    for path in sorted(layout.logs_dir.glob("heartbeat-rank-*.json")):
        try:
            beats.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    newest = max((beat.get("step", 0) for beat in beats), default=0)
    missing = []
    for beat in beats:
        silent = now - beat.get("time", now)
        if beat.get("rank") != me and (silent > 3 * every_s or beat.get("step", 0) < newest):
            missing.append({**beat, "silent_s": silent})
    return missing


def timeout_report(layout: RunLayout, me: int, timeout_min: float, error: BaseException) -> str:
    """One line for the user: which collective rule fired, and who did not come."""
    missing = missing_ranks(layout, me, time.time())
    if missing:
        who = "; ".join(
            f"rank {beat['rank']} (host {beat.get('host')}, pid {beat.get('pid')}, last finished "
            f"step {beat.get('step')}, silent for {beat['silent_s']:.0f} s)"
            for beat in missing
        )
    else:
        who = "not known (every heartbeat is recent: a rank may be stuck inside its own code)"
    return (
        f"a collective waited longer than distributed.timeout_min ({timeout_min:g} min) on rank "
        f"{me}; ranks that did not arrive: {who}. The run stopped instead of waiting for the "
        f"time limit; resume with the same command. ({first_line(error)})"
    )
