"""What every benchmark shares: timing fresh processes, a markdown table, the machine line.

These machines are shared and noisy, so a benchmark never reports a bare time: it measures its
baseline in the same run, interleaved with what it compares (A B A B ...), and reports medians and
their ratio. Nothing here imports torch, so the latency benchmark measures only what it runs.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Timing:
    """Wall times of several fresh runs of one command, and the CPU time (user + system) each
    took, in seconds. CPU time moves less than wall time when other jobs share the cores."""

    runs: tuple[float, ...]
    cpu: tuple[float, ...] = ()

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)


def time_command(
    argv: Sequence[str], *, cwd: Path = REPO, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh process, start to exit; a failing command stops the
    benchmark. CPU is the user + system time of the process and the children it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        list(argv),
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(
            f"benchmark command failed ({result.returncode}): {' '.join(argv)}\n"
            f"{result.stderr[-3000:]}"
        )
    return elapsed, cpu


@dataclass(frozen=True)
class Command:
    """A command line and, when it differs from the benchmark's, its own environment."""

    argv: Sequence[str]
    env: dict[str, str] | None = None


def interleaved_medians(
    commands: dict[str, Sequence[str] | Command],
    rounds: int,
    *,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
    warmup: int = 1,
) -> dict[str, Timing]:
    """Time each command ``rounds`` times, one of each per round, so that load drift during the
    benchmark reaches every command alike. ``warmup`` untimed rounds fill the page cache (and a
    bytecode cache, when the environment names one) first."""
    jobs = {name: c if isinstance(c, Command) else Command(c, None) for name, c in commands.items()}
    for _ in range(warmup):
        for job in jobs.values():
            time_command(job.argv, cwd=cwd, env=job.env or env)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, job in jobs.items():
            times[name].append(time_command(job.argv, cwd=cwd, env=job.env or env))
    return {
        name: Timing(tuple(w for w, _ in values), tuple(c for _, c in values))
        for name, values in times.items()
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table, columns padded so that it also reads well in a terminal."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"

    separator = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(cells[0]), separator, *(line(row) for row in cells[1:])])


def cpu_model() -> str:
    try:
        for text_line in Path("/proc/cpuinfo").read_text().splitlines():
            if text_line.startswith("model name"):
                return text_line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version_of(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def machine_line() -> str:
    """One line that says where and when a table was measured (RESULTS.md quotes it)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {load}; "
        f"python {platform.python_version()}, torch {version_of('torch')}, "
        f"transformers {version_of('transformers')}, accelerate {version_of('accelerate')}, "
        f"trl {version_of('trl')}, deepspeed {version_of('deepspeed')}; "
        f"date {time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


def command_line() -> str:
    """The command that produced this output, as RESULTS.md records it."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(REPO)
    except ValueError:
        pass
    return "python " + " ".join([str(script), *sys.argv[1:]])


def console_script(name: str) -> list[str]:
    """The installed console script (what a user types), else ``python -m`` of the module."""
    script = BIN / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", name]
