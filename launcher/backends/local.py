"""Run a plan on this machine: ``accelerate launch`` with N processes, wait, report.

The launch runs in its own process group so that Ctrl-C or a kill reaches every rank, and its
output goes both to the terminal and to ``logs/launcher.log``; each rank also keeps its own log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import TextIO

from launcher.backends.prepare import prepare_run_dir
from launcher.errors import LauncherError
from launcher.plan.build import Plan


class RunFailed(LauncherError):
    exit_code = 1


def run_locally(plan: Plan, out: TextIO = sys.stdout) -> int:
    """Prepare the run directory, launch the ranks, stream their output, report the result."""
    if plan.batch.nodes != 1:
        raise LauncherError(
            f"distributed.nodes is {plan.batch.nodes}: a local run uses this machine only. "
            "Set distributed.nodes=1 or submit to a cluster."
        )
    continuing = prepare_run_dir(plan)
    layout = plan.layout
    if layout.result_file.exists():
        print(f"{layout.root} has already finished; nothing to run.", file=out)
    else:
        verb = "continuing" if continuing else "starting"
        print(f"{verb} run in {layout.root}", file=out)
        print(plan.summary(), file=out, flush=True)
        returncode = launch(plan, out)
        if returncode != 0:
            raise RunFailed(
                f"training failed (exit code {returncode}). Rank logs: "
                f"{layout.logs_dir}/rank-*.log; launcher log: {layout.launcher_log}"
            )
    result = json.loads(layout.result_file.read_text())
    print(f"\nmodel:   {layout.model_dir} (step {result['global_step']})", file=out)
    print(f"metrics: {layout.metrics_file}", file=out)
    for key, value in result.get("final_metrics", {}).items():
        print(f"  {key} = {value}", file=out)
    return 0


def launch(plan: Plan, out: TextIO) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(plan.layout.launcher_log, "a", encoding="utf-8") as log:
        process = subprocess.Popen(
            plan.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            start_new_session=True,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                out.write(line)
                out.flush()
                log.write(line)
            return process.wait()
        except KeyboardInterrupt:
            stop_group(process)
            raise
        finally:
            if process.poll() is None:
                stop_group(process)


def stop_group(process: subprocess.Popen[str], grace_s: float = 30.0) -> None:
    """SIGTERM the whole launch (agent and ranks), then SIGKILL what is left after ``grace_s``."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
