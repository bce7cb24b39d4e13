"""Cluster profiles (``cluster/*.yaml``): what a site's scheduler needs besides the recipe.

Cluster-neutral names (nodes, GPUs per node, time limit) are translated by the SLURM backend;
scheduler-only options go under ``slurm:`` and are passed through with their names checked against
sbatch's options, so a typo is an error with a suggestion instead of a job that ignores it.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import Field, ValidationError

from launcher.errors import ProfileError, RecipeProblem
from launcher.recipe.loader import (
    LayeredRecipe,
    describe_validation_errors,
    display_path,
    find_yaml,
    read_yaml_mapping,
)
from launcher.recipe.schema import Section

SHIPPED_PROFILES = Path(__file__).resolve().parent.parent.parent / "cluster"

# sbatch long options a profile may pass through (those the profile's own fields cover are left out).
SBATCH_OPTIONS = (
    "acctg-freq",
    "array",
    "batch",
    "begin",
    "bb",
    "chdir",
    "clusters",
    "comment",
    "container",
    "core-spec",
    "cores-per-socket",
    "cpu-freq",
    "cpus-per-gpu",
    "deadline",
    "delay-boot",
    "dependency",
    "distribution",
    "exclude",
    "export",
    "extra-node-info",
    "get-user-env",
    "gid",
    "gpu-bind",
    "gpu-freq",
    "gpus",
    "gpus-per-socket",
    "gpus-per-task",
    "gres",
    "gres-flags",
    "hint",
    "hold",
    "ignore-pbs",
    "licenses",
    "mail-type",
    "mail-user",
    "mcs-label",
    "mem-bind",
    "mem-per-cpu",
    "mem-per-gpu",
    "mincpus",
    "network",
    "nice",
    "no-kill",
    "no-requeue",
    "nodefile",
    "nodelist",
    "ntasks-per-core",
    "ntasks-per-gpu",
    "ntasks-per-socket",
    "overcommit",
    "oversubscribe",
    "power",
    "prefer",
    "priority",
    "profile",
    "propagate",
    "reboot",
    "reservation",
    "sockets-per-node",
    "spread-job",
    "switches",
    "thread-spec",
    "threads-per-core",
    "time-min",
    "tmp",
    "uid",
    "use-min-nodes",
    "wckey",
)


class ClusterProfile(Section):
    name: str = Field(..., min_length=1, description="Profile name.")
    partition: str | None = Field(None, description="sbatch --partition.")
    account: str | None = Field(None, description="sbatch --account.")
    qos: str | None = Field(None, description="sbatch --qos.")
    time_limit_min: int = Field(60, gt=0, description="sbatch --time of one attempt, minutes.")
    nodes: int = Field(1, gt=0, description="Nodes, unless the recipe or --nodes says otherwise.")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node; one rank per GPU.")
    cpus_per_node: int | None = Field(None, gt=0, description="CPUs for the node's task.")
    memory_gb: int | None = Field(None, gt=0, description="sbatch --mem per node, GiB.")
    constraint: str | None = Field(None, description="sbatch --constraint.")
    exclusive: bool = Field(False, description="sbatch --exclusive: whole nodes.")
    signal_lead_s: int = Field(
        120, ge=10, description="USR2 this many seconds before the time limit, to save in time."
    )
    setup: list[str] = Field(
        default_factory=list, description="Shell lines run on each node first (module load ...)."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra job environment.")
    slurm: dict[str, str | int | bool] = Field(
        default_factory=dict, description="Scheduler-only sbatch options, passed through."
    )
    python: str | None = Field(
        None, description="Python of the compute nodes; default: the one running the launcher."
    )


def load_profile(name: str) -> ClusterProfile:
    path = find_yaml(name, SHIPPED_PROFILES)
    source = display_path(path)
    data, problem = read_yaml_mapping(path)
    if problem:
        raise ProfileError([problem])
    try:
        profile = ClusterProfile.model_validate(data)
    except ValidationError as error:
        layered = LayeredRecipe(data=data, main_source=source)
        raise ProfileError(
            describe_validation_errors(error.errors(), data, layered, ClusterProfile)
        ) from None
    problems = [
        RecipeProblem(source, f"slurm.{key}", unknown_option_message(key))
        for key in profile.slurm
        if key not in SBATCH_OPTIONS
    ]
    if problems:
        raise ProfileError(problems)
    return profile


def unknown_option_message(key: str) -> str:
    close = difflib.get_close_matches(key.replace("_", "-"), SBATCH_OPTIONS, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return (
        f"not an sbatch option this profile can pass through; {hint}"
        "(partition, account, qos, time, nodes, GPUs, CPUs, memory, constraint and exclusive have "
        f"their own profile keys); allowed: {', '.join(SBATCH_OPTIONS)}"
    )
