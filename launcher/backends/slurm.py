"""Submit a plan to SLURM through submitit: one task per node, signal before the limit, requeue.

Pure parts first: :func:`cluster_overrides` (what the profile adds to the recipe) and
:func:`executor_parameters` (the sbatch settings). The edge: :func:`submit` (sbatch via submitit)
and :func:`standalone_script` (a script for users who run ``sbatch`` themselves). No torch,
transformers or deepspeed is imported here: submitting happens on login nodes.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from typing import Any

from launcher.backends.prepare import prepare_run_dir
from launcher.backends.profile import ClusterProfile
from launcher.errors import LauncherError
from launcher.plan.build import Plan
from launcher.recipe.schema import Recipe

NODE_MODULE = "launcher.backends.slurm_node"


def cluster_overrides(recipe: Recipe, profile: ClusterProfile, nodes: int | None) -> list[str]:
    """What the cluster adds to the recipe, as overrides the plan shows.

    The profile describes the nodes: its GPUs, CPUs and memory per node replace the recipe's
    ``resources`` (a recipe cannot ask a CPU cluster for GPUs). The recipe describes the job: its
    own node count, ranks per node and time limit win over the profile's defaults. ``--nodes``
    beats both.
    """
    dist, resources = recipe.distributed, recipe.resources
    chosen: dict[str, Any] = {}
    if nodes is not None:
        chosen["distributed.nodes"] = nodes
    elif "nodes" not in dist.model_fields_set:
        chosen["distributed.nodes"] = profile.nodes
    if "processes_per_node" not in dist.model_fields_set:
        chosen["distributed.processes_per_node"] = max(profile.gpus_per_node, 1)
    hardware = {
        "gpus_per_node": profile.gpus_per_node,
        "cpus_per_task": profile.cpus_per_node,
        "memory_gb": profile.memory_gb,
    }
    for key, value in hardware.items():
        if value is not None and value != getattr(resources, key):
            chosen[f"resources.{key}"] = value
    if "time_limit_min" not in resources.model_fields_set:
        chosen["resources.time_limit_min"] = profile.time_limit_min
    return [f"{key}={value}" for key, value in chosen.items()]


def executor_parameters(plan: Plan, profile: ClusterProfile) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters (sbatch options) for this plan on this cluster."""
    resources = plan.recipe.resources
    exports = [f"export {name}={shlex.quote(value)}" for name, value in profile.env.items()]
    parameters: dict[str, Any] = {
        "job_name": plan.recipe.name,
        "partition": profile.partition,
        "account": profile.account,
        "qos": profile.qos,
        "time": resources.time_limit_min,
        "nodes": plan.batch.nodes,
        "ntasks_per_node": 1,  # one task per node starts that node's ranks
        "cpus_per_task": resources.cpus_per_task,
        "gpus_per_node": resources.gpus_per_node or None,
        "mem": f"{resources.memory_gb}GB" if resources.memory_gb else None,
        "constraint": profile.constraint,
        "exclusive": True if profile.exclusive else None,
        "signal_delay_s": profile.signal_lead_s,
        # Exports first, so that the setup lines (module loads, activation) can use them.
        "setup": [*exports, "export PYTHONUNBUFFERED=1", *profile.setup],
        "stderr_to_stdout": True,
        # Requeue-able, so that preemption (`scontrol requeue`) brings the job back.
        "additional_parameters": {"requeue": True, **profile.slurm},
    }
    parameters = {key: value for key, value in parameters.items() if value is not None}
    parameters["wckey"] = None  # submitit would tag every job `--wckey=submitit`
    return parameters


def node_python(profile: ClusterProfile) -> str:
    return profile.python or sys.executable


def make_executor(plan: Plan, profile: ClusterProfile) -> Any:
    import submitit

    executor = submitit.SlurmExecutor(
        folder=plan.layout.slurm_dir, python=node_python(profile), max_num_timeout=100
    )
    executor.update_parameters(**executor_parameters(plan, profile))
    return executor


def batch_script(plan: Plan, profile: ClusterProfile) -> str:
    """The batch script ``launcher submit`` hands to sbatch (submitit writes it the same way)."""
    executor = make_executor(plan, profile)
    return executor._make_submission_file_text(executor._submitit_command_str, "%j")


def standalone_script(plan: Plan, profile: ClusterProfile) -> str:
    """A batch script for ``sbatch job.sh``: every node runs the node task, without submitit."""
    from submitit.slurm.slurm import _make_sbatch_string

    parameters = executor_parameters(plan, profile)
    python = node_python(profile)
    command = shlex.join([python, "-u", "-m", NODE_MODULE, str(plan.layout.root)])
    return _make_sbatch_string(command=command, folder=plan.layout.slurm_dir, **parameters)


def prepare_cluster_run(plan: Plan, from_scratch: bool = False) -> None:
    """The run directory of a cluster run: the plan, and the folder for the batch scripts."""
    prepare_run_dir(plan, from_scratch=from_scratch)
    plan.layout.slurm_dir.mkdir(parents=True, exist_ok=True)


def submit(plan: Plan, profile: ClusterProfile, from_scratch: bool = False) -> str:
    """Prepare the run directory, submit, record the job; return its id at once."""
    from launcher.backends.slurm_node import NodeTask

    prepare_cluster_run(plan, from_scratch)
    executor = make_executor(plan, profile)
    try:
        job = executor.submit(NodeTask(str(plan.layout.root), node_python(profile)))
    except Exception as error:  # submitit wraps sbatch's complaint in its own error types
        raise LauncherError(f"sbatch refused the job: {str(error).strip()}") from None
    record = {"job_id": str(job.job_id), "cluster": profile.name, "submitted": time.time()}
    plan.layout.job_file.write_text(json.dumps(record, indent=2) + "\n")
    return str(job.job_id)
