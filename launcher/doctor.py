"""``launcher doctor``: one report to paste into a bug report, or to read on a new cluster.

    launcher doctor                      # versions, GPUs, SLURM, disk, and a two-rank all-reduce
    launcher doctor --runs-dir /scratch/me/runs --skip-launch

Each line is one check: ``ok``, ``missing`` (not there; the reason says whether that matters),
``failed`` (there but broken, with the reason), or ``skipped``. Nothing here raises a traceback:
a check that breaks becomes a ``failed`` line. The exit code is 0 when everything a run needs
works, 1 otherwise, and the last line names what failed. Optional parts (CUDA, NCCL, SLURM) are
reported but a CPU laptop without them is healthy.

The all-reduce goes through the same path as a run: an Accelerate config made by
``plan/accelerate.py`` for two DDP ranks, ``python -m accelerate.commands.launch``, and ranks
that set up their distributed state with ``ranks/runtime.py`` (see ``ranks/allreduce_check.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

RANKS = 2
LAUNCH_TIMEOUT_S = 300
SLURM_TIMEOUT_S = 10
# Distribution names; each is a dependency of the launcher, so a missing one is a problem.
PACKAGES = ("accelerate", "transformers", "trl", "tokenizers", "datasets", "bitsandbytes")
STATUS_WIDTH = 8
NAME_WIDTH = 14


@dataclass(frozen=True)
class Check:
    """One line of the report. ``needed``: a run cannot work unless this one is ok."""

    name: str
    status: str  # ok, missing, failed, skipped
    detail: str
    needed: bool = True

    @property
    def problem(self) -> bool:
        return self.needed and self.status in ("missing", "failed")

    def line(self) -> str:
        """Name and status columns, the detail wrapped to 100 columns beside them (a path longer
        than that stays whole on its line, so that it can be copied)."""
        pad = " " * (NAME_WIDTH + STATUS_WIDTH + 4)
        width = 100 - len(pad)
        wrapped = [
            piece
            for line in self.detail.splitlines() or [""]
            for piece in textwrap.wrap(line, width, break_on_hyphens=False, break_long_words=False)
            or [""]
        ]
        first = f"  {self.name:<{NAME_WIDTH}} {self.status:<{STATUS_WIDTH}} {wrapped[0]}"
        return "\n".join([first, *(pad + piece for piece in wrapped[1:])])


def run_doctor(runs_dir: Path, skip_launch: bool) -> int:
    """``launcher doctor [--runs-dir DIR] [--skip-launch]``: prints each check as it is done;
    0 when everything a run needs works, 1 otherwise."""
    print(f"launcher doctor on {socket.gethostname()} ({platform.platform()})", flush=True)
    checks: list[Check] = []
    for check in run_checks(Path(runs_dir), skip_launch):
        checks.append(check)
        print(check.line(), flush=True)
    problems = [check for check in checks if check.problem]
    if problems:
        listed = ", ".join(f"{check.name} {check.status}" for check in problems)
        print(f"doctor: {len(problems)} problem(s): {listed}")
        return 1
    absent = [check.name for check in checks if check.status == "missing"]
    optional = f" (not here, optional: {', '.join(absent)})" if absent else ""
    skipped = [check.name for check in checks if check.status == "skipped"]
    if skipped:
        print(f"doctor: no problem found; not checked: {', '.join(skipped)}{optional}")
    else:
        print(f"doctor: everything a run needs works{optional}")
    return 0


def run_checks(runs_dir: Path, skip_launch: bool) -> Iterator[Check]:
    yield check_python()
    torch_check, torch_module = guarded("torch", check_torch)
    yield torch_check
    yield from gpu_checks(torch_module)
    for name in PACKAGES:
        yield package_check(name)
    yield package_check("deepspeed")
    yield guarded("deepspeed ops", check_deepspeed_ops, needed=False)[0]
    yield guarded("SLURM", check_slurm, needed=False)[0]
    yield guarded("disk", lambda: check_disk(runs_dir))[0]
    yield check_environment()
    if skip_launch:
        yield Check("all-reduce", "skipped", "--skip-launch")
    elif torch_module is None:
        yield Check("all-reduce", "failed", "not tried: torch does not import")
    else:
        yield guarded("all-reduce", lambda: check_all_reduce(torch_module))[0]


def guarded(name: str, check: Callable, needed: bool = True) -> tuple[Check, object]:
    """Run ``check`` (returning a Check, or a Check and a value); an exception becomes a
    ``failed`` line with its first line, never a traceback."""
    try:
        result = check()
    except Exception as error:
        return Check(name, "failed", one_line(error), needed), None
    return result if isinstance(result, tuple) else (result, None)


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def check_python() -> Check:
    return Check("python", "ok", f"{platform.python_version()} ({sys.executable})")


def version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def package_check(name: str) -> Check:
    """The installed version from the package metadata (cheap: nothing is imported)."""
    found = version(name)
    if found is None:
        return Check(name, "missing", f"not installed in {sys.prefix}; pip install {name}")
    return Check(name, "ok", found)


def check_torch() -> tuple[Check, object]:
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    return Check("torch", "ok", f"{torch.__version__} ({build})"), torch


def gpu_checks(torch: object | None) -> Iterator[Check]:
    """CUDA, NCCL and the GPUs; all optional (CPU ranks train with gloo)."""
    if torch is None:
        yield Check("CUDA", "failed", "not checked: torch does not import")
        return
    cuda = torch.cuda  # type: ignore[attr-defined]
    if not cuda.is_available():
        why = (
            "torch is a CPU-only build"
            if not torch.version.cuda  # type: ignore[attr-defined]
            else "none visible (driver, CUDA_VISIBLE_DEVICES?)"
        )
        yield Check("CUDA", "missing", f"no CUDA GPU: {why}", needed=False)
        yield Check("NCCL", "missing", "no CUDA GPU (CPU ranks use gloo)", needed=False)
        yield Check("GPUs", "missing", "no CUDA GPU", needed=False)
        return
    yield Check("CUDA", "ok", f"CUDA {torch.version.cuda}, {cuda.device_count()} GPU(s)")  # type: ignore[attr-defined]
    yield guarded("NCCL", lambda: Check("NCCL", "ok", nccl_version(cuda)), needed=False)[0]
    gpus = []
    for index in range(cuda.device_count()):
        props = cuda.get_device_properties(index)
        gpus.append(f"{index}: {props.name}, {props.total_memory / 2**30:.1f} GiB")
    yield Check("GPUs", "ok", "\n".join(gpus))


def nccl_version(cuda: object) -> str:
    found = cuda.nccl.version()  # type: ignore[attr-defined]
    return ".".join(map(str, found)) if isinstance(found, tuple) else str(found)


def check_deepspeed_ops() -> Check:
    """Which DeepSpeed C++/CUDA ops are built into the wheel, and which can be built just in
    time here: ``ds_report``'s own functions, without its colours."""
    # DeepSpeed prints its accelerator choice on import; the report says it in one line instead.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from deepspeed.accelerator import get_accelerator
        from deepspeed.git_version_info import accelerator_name, installed_ops
        from deepspeed.ops.op_builder.all_ops import ALL_OPS
        from deepspeed.ops.op_builder.builder import probe_is_compatible
        from torch.utils.cpp_extension import is_ninja_available

        accelerator = get_accelerator()._name
        built = [
            name
            for name in ALL_OPS
            if installed_ops.get(name, False) and accelerator_name == accelerator
        ]
        compatible = [name for name, builder in ALL_OPS.items() if probe_is_compatible(builder)]
    incompatible = sorted(set(ALL_OPS) - set(compatible))
    return Check(
        "deepspeed ops",
        "ok",
        f"accelerator {accelerator}; built into the wheel: {', '.join(built) or 'none'}\n"
        f"JIT-buildable here: {', '.join(sorted(compatible)) or 'none'}"
        f" (ninja {'found' if is_ninja_available() else 'missing'})\n"
        f"not buildable here: {', '.join(incompatible) or 'none'}",
        needed=False,
    )


def check_slurm() -> Check:
    """Whether a SLURM controller answers from here (a login node), with its partitions."""
    if shutil.which("scontrol") is None:
        return Check("SLURM", "missing", "no scontrol on PATH: not a SLURM machine", needed=False)
    try:
        # `scontrol ping` answers at once; sinfo retries a dead controller for ~10 s.
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=SLURM_TIMEOUT_S
        )
        controllers = [line.strip() for line in ping.stdout.splitlines() if " is " in line]
        if ping.returncode != 0 or not any(line.endswith("UP") for line in controllers):
            shown = "; ".join(controllers) or (ping.stderr.strip() or "no answer")
            return Check("SLURM", "missing", f"not reachable: {shown}", needed=False)
        partitions = slurm_output(["sinfo", "--noheader", "--format=%P %a %D %T"])
        config = slurm_output(["scontrol", "show", "config"])
    except subprocess.TimeoutExpired:
        return Check("SLURM", "missing", f"no answer within {SLURM_TIMEOUT_S} s", needed=False)
    except subprocess.CalledProcessError as error:
        why = (error.stderr or error.stdout or "").strip().splitlines()
        reason = why[-1] if why else f"exit code {error.returncode}"
        return Check("SLURM", "missing", f"not reachable: {reason}", needed=False)
    cluster = next(
        (line.split("=", 1)[1].strip() for line in config.splitlines() if "ClusterName" in line),
        "?",
    )
    rows = [" ".join(line.split()) for line in partitions.strip().splitlines()]
    listed = "; ".join(rows) or "no partitions"
    return Check(
        "SLURM",
        "ok",
        f"cluster {cluster}; partitions (name avail nodes state): {listed}",
        needed=False,
    )


def slurm_output(command: list[str]) -> str:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=SLURM_TIMEOUT_S, check=True
    ).stdout


def check_disk(runs_dir: Path) -> Check:
    """Free space where runs go; a runs directory that does not exist yet is measured at its
    nearest existing parent, which is where it will be created."""
    from launcher.units import format_bytes

    target = runs_dir.absolute()
    existing = target
    while not existing.exists():
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    where = "" if existing == target else f" ({target} does not exist yet; measured at {existing})"
    detail = f"{target}: {format_bytes(usage.free)} free of {format_bytes(usage.total)}{where}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check("disk", "failed", f"{existing} is not writable by this user; {detail}")
    return Check("disk", "ok", detail)


# Variables that change how ranks find each other; a wrong one is a classic cause of hangs.
DISTRIBUTED_VARIABLES = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "CUDA_VISIBLE_DEVICES",
    "TORCH_DISTRIBUTED_DEBUG",
)
DISTRIBUTED_PREFIXES = ("NCCL_", "GLOO_", "ACCELERATE_")


def check_environment() -> Check:
    """The distributed settings inherited from the shell (names and values; none is a secret)."""
    found = sorted(
        name
        for name in os.environ
        if name in DISTRIBUTED_VARIABLES or name.startswith(DISTRIBUTED_PREFIXES)
    )
    shown = ", ".join(f"{name}={os.environ[name]}" for name in found)
    return Check("environment", "ok", shown or "no NCCL_*, GLOO_*, MASTER_* or ACCELERATE_* set")


def check_all_reduce(torch: object) -> Check:
    """``RANKS`` ranks through ``accelerate launch`` all-reduce ``rank + 1``."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    note = ""
    if 0 < gpus < RANKS:
        # NCCL refuses two ranks on one GPU; the launch path is still checked, on CPU ranks.
        env["CUDA_VISIBLE_DEVICES"] = ""
        note = f" ({gpus} GPU here: NCCL needs {RANKS}, so the ranks ran on CPU)"
    folder = Path(tempfile.mkdtemp(prefix="launcher-doctor-"))
    result_file, log_file = folder / "result.json", folder / "launch.log"
    command = launch_command(folder, result_file, free_port())
    started = time.monotonic()
    returncode, output = run_launch(command, env)
    seconds = time.monotonic() - started
    log_file.write_text(output)
    result = json.loads(result_file.read_text()) if result_file.is_file() else None
    if returncode == 0 and result is not None and result["ok"]:
        shutil.rmtree(folder, ignore_errors=True)
        return Check("all-reduce", "ok", f"{result['message']}; launch {seconds:.1f} s{note}")
    reason = (
        f"no result within {LAUNCH_TIMEOUT_S} s (ranks waiting for each other?)"
        if returncode is None
        else failure_reason(output, result, returncode)
    )
    return Check("all-reduce", "failed", f"{reason}\nfull output: {log_file}")


def launch_command(folder: Path, result_file: Path, port: int) -> list[str]:
    """``accelerate launch`` with the Accelerate config a two-rank DDP plan has."""
    import yaml

    from launcher.contract import rank_launch_command
    from launcher.plan.accelerate import accelerate_config
    from launcher.plan.batch import batch_numbers
    from launcher.recipe.schema import Recipe

    recipe = Recipe.model_validate(
        {
            "name": "doctor",
            "task": "sft",
            "distributed": {"strategy": "ddp", "processes_per_node": RANKS},
            "training": {"precision": "fp32"},
        }
    )
    config_file = folder / "accelerate.yaml"
    config = accelerate_config(recipe, batch_numbers(recipe), folder / "deepspeed.json")
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return rank_launch_command(
        sys.executable,
        config_file,
        str(RANKS),
        str(result_file),
        module="launcher.ranks.allreduce_check",
        port=port,
    )


def free_port() -> int:
    """A port nothing listens on now, so the check does not collide with a run on 29500."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def run_launch(command: list[str], env: dict[str, str]) -> tuple[int | None, str]:
    """Exit code (None on timeout) and the combined output; a hung launch is killed whole."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=LAUNCH_TIMEOUT_S)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def failure_reason(output: str, result: dict | None, returncode: int) -> str:
    """The line that says why: the rank's own verdict, else the last error line of the output."""
    if result is not None and not result["ok"]:
        return result["message"]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    verdicts = [line for line in lines if line.startswith("[doctor] rank")]
    errors = [line for line in lines if is_error_line(line)]
    reason = (verdicts or errors or lines or ["no output"])[-1]
    return f"exit code {returncode}: {reason}"


def is_error_line(line: str) -> bool:
    """``SomeError: message`` as Python prints an exception (maybe with a module path)."""
    head = line.split(":", 1)[0]
    return ":" in line and " " not in head and head.endswith(("Error", "Exception"))
