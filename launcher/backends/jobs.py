"""Watching and stopping cluster runs: ``launcher status``, ``logs`` and ``cancel``.

Works with SLURM accounting off (no ``sacct``): the scheduler's view comes from ``squeue`` while a
job is queued or running and ``scontrol show job`` shortly after; everything else comes from the
run directory's own record (attempts, checkpoints, result, per-rank failure reports).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from launcher.backends.attempts import read_attempts, record_attempt
from launcher.checkpoints import SET_ASIDE_PREFIX, latest_complete_checkpoint
from launcher.contract import RunContract, RunLayout
from launcher.errors import LauncherError
from launcher.files import write_text_atomic


def locate(target: str) -> tuple[RunLayout, str | None]:
    """A run directory, or a job id whose run directory the scheduler still knows."""
    path = Path(target)
    if (path / "plan").is_dir():
        layout = RunLayout(path.absolute())
        job = json.loads(layout.job_file.read_text()) if layout.job_file.exists() else {}
        # A run of `launcher sbatch`'s script was submitted by the user: its attempts name the job.
        started = [
            event["job_id"] for event in read_attempts(layout) if event.get("event") == "start"
        ]
        return layout, job.get("job_id") or (started[-1] if started else None)
    if target.isdigit():
        fields = scontrol_job(target)
        stdout = fields.get("StdOut", "")
        if "/slurm/" in stdout:
            return RunLayout(Path(stdout.split("/slurm/")[0])), target
        raise LauncherError(
            f"job {target} is not known to the scheduler any more; pass its run directory instead"
        )
    raise LauncherError(f"{target}: neither a run directory (no plan/ in it) nor a job id")


def scontrol_job(job_id: str) -> dict[str, str]:
    result = run(["scontrol", "show", "job", "--oneliner", job_id])
    if result is None or result.returncode != 0:
        return {}
    # `Key=Value` pairs separated by spaces; values (paths) may hold spaces themselves.
    items = re.split(r"\s+(?=[A-Za-z][A-Za-z0-9_:/]*=)", result.stdout.strip())
    pairs = (item.partition("=") for item in items)
    return {key: value for key, _, value in pairs}


def scheduler_state(job_id: str) -> str:
    """The scheduler's one-line view of a job, or why there is none."""
    queued = run(["squeue", "-h", "-j", job_id, "-o", "%T (%r) on %N, running %M of %l"])
    if queued is not None and queued.returncode == 0 and queued.stdout.strip():
        return queued.stdout.strip()
    fields = scontrol_job(job_id)
    if fields:
        return f"{fields.get('JobState', '?')} (restarts: {fields.get('Restarts', '0')})"
    return "no longer known to the scheduler (accounting is off); see the run's record below"


def run(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def status_report(layout: RunLayout, job_id: str | None) -> str:
    lines = [f"run dir     {layout.root}"]
    if job_id:
        lines.append(f"job         {job_id}: {scheduler_state(job_id)}")
    for event in read_attempts(layout):
        when = time.strftime("%H:%M:%S", time.localtime(event["time"]))
        if event["event"] == "start":
            origin = event.get("resumed_from_step")
            resumed = f"resumed from step {origin}" if origin is not None else "from step 0"
            lines.append(
                f"attempt {event['attempt']}   {when} start, job {event['job_id']}, {resumed}"
            )
        else:
            why = event["reason"]
            if event.get("nodes_down"):
                why += f" ({', '.join(event['nodes_down'])} down)"
            line = f"attempt {event['attempt']}   {when} end: {why} at step {event.get('step')}"
            lines.append(line + (f": {event['error']}" if event.get("error") else ""))
    newest, incomplete = latest_complete_checkpoint(layout.checkpoints_dir)
    contract = RunContract.read(layout.contract_file) if layout.contract_file.exists() else None
    if contract is not None and contract.checkpoints_on_each_node:
        lines.append(f"checkpoint  on each node's own disk: {contract.checkpoints_dir}")
    else:
        lines.append(f"checkpoint  {newest or 'none complete yet'}")
    set_aside = sorted(p.name for p in layout.checkpoints_dir.glob(f"{SET_ASIDE_PREFIX}*"))
    if incomplete or set_aside:
        names = ", ".join([p.name for p in incomplete] + set_aside)
        lines.append(f"incomplete  {names} (never resumed from; kept)")
    lines += metrics_lines(layout)
    if layout.result_file.exists():
        result = json.loads(layout.result_file.read_text())
        model = layout.root / result["model_dir"]  # relative to the run directory
        lines.append(f"finished    step {result['global_step']}; model in {model}")
    elif layout.stopped_file.exists():
        stopped = json.loads(layout.stopped_file.read_text())
        lines.append(
            f"stopped     on {stopped['signal']} at step {stopped['step']}, with a complete "
            "checkpoint; run the same command again (`launcher run` or `launcher submit`) to "
            "continue"
        )
    lines += failure_lines(layout)
    return "\n".join(lines)


def newest_metrics(layout: RunLayout, tail_bytes: int = 1 << 16) -> tuple[dict, dict]:
    """The newest record with a training loss and the newest evaluation in ``metrics.jsonl``
    (empty when none), read from its tail."""
    try:
        with open(layout.metrics_file, "rb") as stream:
            stream.seek(max(stream.seek(0, 2) - tail_bytes, 0))
            text = stream.read().decode("utf-8", errors="replace")
    except OSError:
        return {}, {}
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the first, cut line of the tail, or a line being written
        if isinstance(record, dict):
            records.append(record)
    trained = [r for r in records if isinstance(r.get("loss"), int | float)]
    evaluated = [r for r in records if any(key.startswith("eval_") for key in r)]
    return (trained[-1] if trained else {}), (evaluated[-1] if evaluated else {})


def eval_summary(record: dict) -> str:
    """``eval_loss 5.432, eval_accuracy 0.5123``: the evaluation's metrics, 4 digits."""
    return ", ".join(
        f"{key} {value:.4g}"
        for key, value in record.items()
        if key.startswith("eval_")
        and isinstance(value, int | float)
        and not key.endswith(("_runtime", "_per_second"))
    )


def metrics_lines(layout: RunLayout) -> list[str]:
    """The newest training loss and evaluation, rounded for people, for ``status``."""
    trained, evaluated = newest_metrics(layout)
    lines = []
    if trained:
        lines.append(f"metrics     step {trained.get('step')}: loss {trained['loss']:.4g}")
    if evaluated:
        lines.append(f"            eval at step {evaluated.get('step')}: {eval_summary(evaluated)}")
    return lines


def failure_lines(layout: RunLayout, streamed: bool = False) -> list[str]:
    """The failing rank(s): node, error (with its traceback's tail unless the run's output
    already showed them, ``streamed``), and where the full logs are, naming only folders that
    exist. A rank that only lost its peer after another rank's error is listed after it, as
    stopped, so that the cause comes first."""
    failures = layout.failure_records()
    failures.sort(key=lambda failure: (failure.get("after_rank") is not None, failure["rank"]))
    lines = []
    for failure in failures:
        where = failure.get("node") or failure.get("host")
        if failure.get("after_rank") is not None:
            lines.append(
                f"stopped     rank {failure['rank']} on {where}, after rank "
                f"{failure['after_rank']} failed (a collective lost its peer)"
            )
        elif streamed:
            lines.append(f"FAILED      rank {failure['rank']} on {where}: its error is above")
        else:
            lines.append(f"FAILED      rank {failure['rank']} on {where}: {failure['error']}")
            lines += [f"            {line}" for line in failure["traceback_tail"].splitlines()[-8:]]
        lines.append(f"            log: {failure['log']}")
    if lines:
        folders = [str(f) for f in (layout.logs_dir, layout.slurm_dir) if f.is_dir()]
        lines.append(f"            all logs: {' and '.join(folders)}")
    return lines


def cancel(layout: RunLayout, job_id: str | None) -> str:
    if not job_id:
        raise LauncherError(f"{layout.root} has no job to cancel (it was not submitted)")
    write_text_atomic(layout.cancel_file, json.dumps({"job_id": job_id, "time": time.time()}))
    result = run(["scancel", job_id])
    if result is None or result.returncode != 0:
        layout.cancel_file.unlink(missing_ok=True)
        raise LauncherError(
            f"scancel {job_id} failed: {result.stderr.strip() if result else 'not found'}"
        )
    cancelled = {"event": "end", "job_id": job_id, "attempt": "-", "reason": "cancelled"}
    record_attempt(layout, {**cancelled, "step": None})
    return f"cancelled job {job_id} ({layout.root})"


def show_log(layout: RunLayout, rank: int, follow: bool, job_id: str | None) -> None:
    """Print a rank's log; with ``follow``, keep printing until the job leaves the queue."""
    path = layout.rank_log(rank)
    position = 0
    while True:
        if path.exists():
            with open(path, encoding="utf-8", errors="replace") as stream:
                stream.seek(position)
                chunk = stream.read()
                position = stream.tell()
            print(chunk, end="", flush=True)
        if not follow or (job_id and not still_queued(job_id)) or layout.result_file.exists():
            if not path.exists() and not follow:
                raise LauncherError(f"no log for rank {rank} yet: {path}")
            return
        time.sleep(1.0)


def still_queued(job_id: str) -> bool:
    queued = run(["squeue", "-h", "-j", job_id, "-o", "%T"])
    return bool(queued and queued.returncode == 0 and queued.stdout.strip())
