"""``attempts.jsonl``: one JSON line per event of a cluster run's attempts (start, end and why).

Written by the first node's task and by ``launcher cancel``; read by ``launcher status``. Appends
of one short line each, so readers never see half an event.
"""

from __future__ import annotations

import json
import time

from launcher.contract import RunLayout


def record_attempt(layout: RunLayout, event: dict) -> None:
    """Append ``event`` (``event``: start or end, ``job_id``, ``attempt``, ...) with the time."""
    with open(layout.attempts_file, "a", encoding="utf-8") as stream:
        stream.write(json.dumps({"time": time.time(), **event}) + "\n")


def read_attempts(layout: RunLayout) -> list[dict]:
    """Every event recorded so far, oldest first (none before the first attempt starts)."""
    if not layout.attempts_file.exists():
        return []
    return [json.loads(line) for line in layout.attempts_file.read_text().splitlines() if line]


def clear_failures(layout: RunLayout) -> None:
    """Forget the failure reports of earlier attempts (their rank logs keep the details), so that
    ``launcher status`` shows only how the current attempt fails, if it does."""
    for path in layout.logs_dir.glob("failure-rank-*.json"):
        path.unlink(missing_ok=True)


def failure_errors(layout: RunLayout) -> list[str]:
    """The one-line error of each rank that failed in this attempt, rank order."""
    return [record.get("error", "") for record in layout.failure_records()]
