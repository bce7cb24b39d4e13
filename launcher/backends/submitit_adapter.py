"""submitit behind one small adapter: the launcher's only contact with submitit's private parts.

submitit's public API submits a callable (``SlurmExecutor.submit``) and describes the job a task
runs in (``SlurmJobEnvironment``). The launcher also needs the exact batch scripts: the one
``launcher submit`` hands to sbatch (``launcher plan --cluster`` shows it) and a standalone one for
``launcher sbatch``; only submitit's private functions write those. They are called here and
nowhere else, for the versions in :data:`SUPPORTED_SUBMITIT` (``pyproject.toml`` asks for the same
range), and ``tests/backends/test_submitit_adapter.py`` checks each of them against that range.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED_SUBMITIT = ">=1.5,<1.6"


def script_executor(folder: Path, python: str, max_num_timeout: int) -> Any:
    """A ``SlurmExecutor`` that writes batch scripts where SLURM is not installed: a laptop
    planning for a cluster (``launcher plan --cluster``, ``launcher submit --dry-run``).
    submitit's constructor refuses to run without ``srun`` on PATH; writing a script needs none."""
    from submitit import SlurmExecutor

    class ScriptOnlyExecutor(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:  # what the constructor checks for srun
            return 2

    return ScriptOnlyExecutor(folder=folder, python=python, max_num_timeout=max_num_timeout)


def submission_script(executor: Any) -> str:
    """The batch script ``executor.submit`` would write for one job (``%j``: its job id)."""
    return executor._make_submission_file_text(executor._submitit_command_str, "%j")


def standalone_script(command: str, folder: Path, parameters: dict[str, Any]) -> str:
    """A batch script that runs ``command`` on every node with submitit's ``#SBATCH`` lines for
    ``parameters`` (the same quoting as a submitted job's), for a user to ``sbatch`` by hand."""
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(command=command, folder=folder, **parameters)


@dataclass(frozen=True)
class SlurmTask:
    """This node task's place in its job, as SLURM's environment tells every task."""

    job_id: str
    node_rank: int
    num_nodes: int
    hosts: list[str]
    restarts: int


def slurm_task() -> SlurmTask:
    """Read by submitit's ``SlurmJobEnvironment`` (its host-list parser included, which needs no
    ``scontrol``: container images have none); SLURM's restart count is not part of it."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    environment = SlurmJobEnvironment()
    return SlurmTask(
        job_id=environment.job_id,
        node_rank=environment.node,
        num_nodes=environment.num_nodes,
        hosts=list(environment.hostnames),
        restarts=int(os.environ.get("SLURM_RESTART_COUNT", "0")),
    )
