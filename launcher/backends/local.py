"""Run a plan on this machine: ``accelerate launch`` with N processes, wait, report.

The launch runs in its own process group so that Ctrl-C or a kill reaches every rank, and its
output goes both to the terminal and to ``logs/launcher.log`` (the agent's repetition of a rank's
failure to the log only: ``launch_output``); each rank also keeps its own log.
The ranks get secrets (tokens) through the inherited environment only, and a secret value that
shows up in their output anyway is masked before it is shown or logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import TextIO

from launcher.backends.attempts import clear_failures
from launcher.backends.launch_output import LaunchOutput
from launcher.backends.run_dir import (
    check_local_paths,
    finished_message,
    prepare_run_dir,
    private_files,
)
from launcher.backends.run_lock import heartbeat, release_run_lock, this_process
from launcher.contract import PROGRESS_ENV, RunLayout
from launcher.errors import LauncherError, RecipeError, RecipeProblem
from launcher.plan.build import Plan
from launcher.secret_env import mask, secret_values


class RunFailed(LauncherError):
    exit_code = 1


def run_locally(plan: Plan, out: TextIO = sys.stdout, from_scratch: bool = False) -> int:
    """Prepare the run directory, launch the ranks, stream their output, report the result.

    Everything the run creates is private to its owner (umask 077, inherited by the ranks)."""
    if plan.batch.nodes != 1:  # a recipe problem: exit 2, nothing written
        message = (
            f"{plan.batch.nodes}: a local run uses this machine only; set distributed.nodes=1, "
            "or submit to a cluster (`launcher submit --cluster PROFILE`)"
        )
        raise RecipeError([RecipeProblem(plan.source, "distributed.nodes", message)])
    check_local_paths(plan)
    with private_files():
        return run_private(plan, out, from_scratch)


def run_private(plan: Plan, out: TextIO, from_scratch: bool) -> int:
    """Train as the run directory's one writer (``run_lock``), for as long as the ranks run."""
    holder = this_process("launcher run")
    continuing = prepare_run_dir(plan, from_scratch=from_scratch, holder=holder)
    try:
        with heartbeat(plan.layout):
            return run_held(plan, out, continuing)
    finally:
        release_run_lock(plan.layout, holder)


def run_held(plan: Plan, out: TextIO, continuing: bool) -> int:
    layout = plan.layout
    if layout.result_file.exists():
        print(finished_message(layout, "run"), file=out)
    else:
        verb = "continuing" if continuing else "starting"
        print(f"{verb} run in {layout.root}", file=out)
        print(plan.summary(), file=out, flush=True)
        clear_failures(layout)
        started = time.monotonic()
        returncode = launch(plan, out)
        elapsed = time.monotonic() - started
        if layout.result_file.exists():  # the ranks saved the model and wrote the result
            if returncode != 0:  # e.g. Ctrl-C while they exited: nothing was lost
                print(
                    f"\nnote: the launch ended with exit code {returncode} after the ranks had "
                    "saved the model and their result; the run is complete.",
                    file=out,
                )
        elif layout.stopped_file.exists():
            stopped = json.loads(layout.stopped_file.read_text())
            print(
                f"\nstopped on {stopped['signal']} with a complete checkpoint at step "
                f"{stopped['step']}; run the same command again to continue.",
                file=out,
            )
            return 130
        elif returncode != 0:
            from launcher.backends.jobs import failure_lines

            details = failure_lines(layout, streamed=True) or [
                "no rank recorded an error: one was killed from outside (out of memory?)",
                f"            all logs: {layout.logs_dir}",
            ]
            raise RunFailed(f"training failed (exit code {returncode}).\n" + "\n".join(details))
        print(f"\nfinished in {format_duration(elapsed)}", file=out)
    print(ending(layout), file=out)
    return 0


def ending(layout: RunLayout) -> str:
    """The last lines of a finished run: its step, loss and evaluation rounded for people, the
    checkpoints it kept and where the model is."""
    from launcher.backends.jobs import eval_summary, newest_metrics
    from launcher.checkpoints import complete_checkpoints

    result = json.loads(layout.result_file.read_text())
    trained, evaluated = newest_metrics(layout)
    loss = f", training loss {trained['loss']:.4g}" if trained else ""
    lines = [f"step:        {result['global_step']}{loss}"]
    if evaluated:
        lines.append(f"eval:        {eval_summary(evaluated)} (step {evaluated.get('step')})")
    kept = [folder.name for folder in complete_checkpoints(layout.checkpoints_dir)]
    if kept:
        lines.append(f"checkpoints: {', '.join(kept)} in {layout.checkpoints_dir}")
    lines.append(f"model:       {layout.root / result['model_dir']}")
    lines.append(f"metrics:     {layout.metrics_file} (`launcher plot {layout.root}` draws them)")
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 07 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Terminated(KeyboardInterrupt):
    """SIGTERM to the launcher (``kill``): it stops the ranks as Ctrl-C does (SIGINT)."""


def interrupt(number: int, frame: object) -> None:
    raise Terminated


def signal_to_pass_on(stop: KeyboardInterrupt) -> signal.Signals:
    """The signal the ranks get when the launcher is stopped: the one it got (Ctrl-C is SIGINT),
    so that the run reports what the user did."""
    return signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT


def launch(plan: Plan, out: TextIO) -> int:
    # The ranks inherit the environment as it is, secrets included; nothing writes it down.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PROGRESS_ENV: "bar" if out.isatty() else "lines"}
    hidden = secret_values(plan.recipe.secrets)
    signal.signal(signal.SIGTERM, interrupt)  # `kill` of the launcher stops the ranks cleanly too
    # Ctrl-C, even where the launcher was started with SIGINT ignored (a shell's background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log = open(plan.layout.launcher_log, "a", encoding="utf-8")
    try:
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
            logging = True
            sorter = LaunchOutput()
            for line in process.stdout:
                for sorted_line, shown in sorter.lines(mask(line, hidden)):
                    logging = show_and_log(sorted_line, shown, out, log if logging else None)
            for sorted_line, shown in sorter.end():
                logging = show_and_log(sorted_line, shown, out, log if logging else None)
            return process.wait()
        except KeyboardInterrupt as stop:
            # The ranks save a checkpoint at the end of their current step, then exit.
            passed_on = signal_to_pass_on(stop)
            print(
                f"\ninterrupted ({passed_on.name}): asking the ranks to save and stop",
                file=out,
                flush=True,
            )
            stop_group(process, passed_on)
            return process.returncode if process.returncode is not None else 130
        finally:
            if process.poll() is None:
                stop_group(process)
            # The ranks are gone: a late Ctrl-C must not turn the report into a traceback. (A
            # Python handler, not SIG_IGN, which programs started later would inherit.)
            signal.signal(signal.SIGINT, lambda number, frame: None)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    finally:
        with contextlib.suppress(OSError):  # what did not fit on a full disk
            log.close()


def show_and_log(line: str, shown: bool, out: TextIO, log: TextIO | None) -> bool:
    """Show ``line`` (unless the agent only repeats a failure) and append it to
    ``logs/launcher.log``; False once the log cannot be written (``write_log``)."""
    if shown:
        out.write(line)
        out.flush()
    return log is not None and write_log(log, line, out)


def write_log(log: TextIO, line: str, out: TextIO) -> bool:
    """Append to ``logs/launcher.log``; False once it cannot be written (a full disk), after
    saying so: the run goes on, and its output still reaches the terminal."""
    try:
        log.write(line)
        log.flush()
        return True
    except OSError as error:
        print(f"[launcher] {log.name} stopped: {error.strerror}", file=out, flush=True)
        return False


def stop_group(
    process: subprocess.Popen[str], first: signal.Signals = signal.SIGTERM, grace_s: float = 60.0
) -> None:
    """Signal the whole launch (agent and ranks) with ``first``, wait for every process of the
    group (the ranks save a checkpoint first), and SIGKILL what is left after ``grace_s``.

    Waiting for the leader alone is not enough: a one-process ``accelerate launch`` dies of the
    signal at once while its rank is still writing the checkpoint.
    """
    try:
        os.killpg(process.pid, first)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while group_alive(process) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(process):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def group_alive(process: subprocess.Popen[str]) -> bool:
    process.poll()  # reap the leader, so that only live members answer
    try:
        os.killpg(process.pid, 0)
        return True
    except ProcessLookupError:
        return False
