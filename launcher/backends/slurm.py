"""Submit a plan to SLURM through submitit: one task per node, signal before the limit, requeue.

Pure parts first: :func:`cluster_overrides` (what the profile adds to the recipe) and
:func:`executor_parameters` (the sbatch settings). The edge: :func:`submit` (sbatch via submitit)
and :func:`standalone_batch_script` (a script for users who run ``sbatch`` themselves). No torch,
transformers or deepspeed is imported here: submitting happens on login nodes.

Shell safety: every value in the batch script is quoted (submitit quotes ``#SBATCH`` values and
paths; the interpreter, exports and the standalone command are quoted here). ``#SBATCH`` lines
end at a newline, so values with line breaks are refused rather than quoted. Secrets reach the job
through the environment ``sbatch`` exports from the submitting shell, never through the script:
the profile's ``env`` (written into the script) may not name one.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from typing import Any

from launcher.backends.profile import ClusterProfile
from launcher.backends.run_dir import (
    check_local_paths,
    finished_message,
    make_private_dir,
    prepare_run_dir,
    private_files,
)
from launcher.backends.run_lock import (
    Holder,
    hand_to_job,
    new_token,
    release_run_lock,
    this_process,
)
from launcher.backends.submitit_adapter import (
    script_executor,
    standalone_script,
    submission_script,
)
from launcher.errors import LauncherError, RecipeError, RecipeProblem
from launcher.files import write_text_atomic
from launcher.plan.build import Plan
from launcher.recipe.schema import ENV_NAME, Recipe
from launcher.secret_env import secret_names

NODE_MODULE = "launcher.backends.slurm_node"


def cluster_overrides(
    recipe: Recipe, profile: ClusterProfile, nodes: int | None, smoke: bool = False
) -> list[str]:
    """What the cluster adds to the recipe, as overrides the plan shows.

    The profile describes the nodes: its GPUs, CPUs and memory per node replace the recipe's
    ``resources`` (a recipe cannot ask a CPU cluster for GPUs), a ``null`` there included (memory
    is not a resource there: no ``--mem``, whatever the recipe says). The recipe describes the job:
    its own node count, ranks per node and time limit win over the profile's defaults. ``--nodes``
    beats both. A ``smoke`` run asks for no memory: a tiny model needs the site's default only.
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
        "memory_gb": None if smoke else profile.memory_gb,
    }
    for key, value in hardware.items():
        if value != getattr(resources, key):
            chosen[f"resources.{key}"] = "null" if value is None else value
    if "time_limit_min" not in resources.model_fields_set:
        chosen["resources.time_limit_min"] = profile.time_limit_min
    return [f"{key}={value}" for key, value in chosen.items()]


def executor_parameters(plan: Plan, profile: ClusterProfile) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters (sbatch options) for this plan on this cluster."""
    check_script_values(plan, profile)
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


def check_script_values(plan: Plan, profile: ClusterProfile) -> None:
    """Refuse what quoting cannot make safe in a batch script: line breaks in ``#SBATCH`` values
    and paths, export names that are not names, and secrets in the profile's ``env``."""
    source = f"cluster profile {profile.name}"
    problems = []
    one_line = {
        "--run-dir": str(plan.layout.root),
        "python": node_python(profile),
        "partition": profile.partition,
        "account": profile.account,
        "qos": profile.qos,
        "constraint": profile.constraint,
        **{f"slurm.{key}": value for key, value in profile.slurm.items()},
    }
    for key, value in one_line.items():
        if isinstance(value, str) and any(ch in value for ch in "\n\r\0"):
            problems.append(
                RecipeProblem(source, key, f"{value!r} holds a line break; a batch script cannot")
            )
    secret = set(secret_names(plan.recipe.secrets))
    for name in profile.env:
        if not ENV_NAME.fullmatch(name):
            message = "not an environment variable name (letters, digits, '_')"
            problems.append(RecipeProblem(source, f"env.{name}", message))
        elif name in secret:
            message = (
                "is a secret, and the profile's env is written into the batch script. Export "
                "it in the shell that runs `launcher submit` instead: sbatch passes it on."
            )
            problems.append(RecipeProblem(source, f"env.{name}", message))
    if problems:
        raise RecipeError(problems)


def node_python(profile: ClusterProfile) -> str:
    return profile.python or sys.executable


def make_executor(plan: Plan, profile: ClusterProfile, to_submit: bool = True) -> Any:
    """submitit's executor for this job; ``to_submit=False`` for one that only writes the batch
    script (it works where SLURM is not installed)."""
    import submitit

    if to_submit and shutil.which("sbatch") is None:
        raise LauncherError(
            f"`launcher submit` needs SLURM's sbatch, and there is none on PATH here. Submit from "
            f"a login node of cluster {profile.name!r}, or add --dry-run to see the batch script "
            "without submitting."
        )
    # submitit puts `python` into the script as it is given (it quotes only its own default).
    options = {
        "folder": plan.layout.slurm_dir,
        "python": shlex.quote(node_python(profile)),
        "max_num_timeout": 100,
    }
    executor = submitit.SlurmExecutor(**options) if to_submit else script_executor(**options)
    executor.update_parameters(**executor_parameters(plan, profile))
    return executor


def batch_script(plan: Plan, profile: ClusterProfile) -> str:
    """The batch script ``launcher submit`` hands to sbatch (submitit writes it the same way)."""
    return submission_script(make_executor(plan, profile, to_submit=False))


def standalone_batch_script(plan: Plan, profile: ClusterProfile) -> str:
    """A batch script for ``sbatch job.sh``: every node runs the node task, without submitit."""
    parameters = executor_parameters(plan, profile)
    python = node_python(profile)
    command = shlex.join([python, "-u", "-m", NODE_MODULE, str(plan.layout.root)])
    return standalone_script(command, plan.layout.slurm_dir, parameters)


def prepare_cluster_run(
    plan: Plan, from_scratch: bool = False, holder: Holder | None = None
) -> None:
    """The run directory of a cluster run: the plan, and the folder for the batch scripts.
    ``holder`` keeps the run lock (``launcher submit``, until it hands it to the job)."""
    check_local_paths(plan)
    prepare_run_dir(plan, from_scratch=from_scratch, holder=holder)
    if plan.layout.result_file.exists():
        if holder is not None:
            release_run_lock(plan.layout, holder)
        raise LauncherError(finished_message(plan.layout, "submit"))
    make_private_dir(plan.layout.slurm_dir)


class SchedulerRefusal(LauncherError):
    """The scheduler would never run the job as planned: a request to change, exit 2."""

    exit_code = 2


def check_scheduler_accepts(script: str, plan: Plan, profile: ClusterProfile) -> bool:
    """Ask the scheduler whether it could ever run the job (``sbatch --test-only``: nothing is
    queued) before the run directory is touched. A refusal names what the job asks for and where
    each request comes from, instead of sbatch's bare "Requested node configuration is not
    available" after the fact. True when the scheduler accepted it; False when none answered
    (no sbatch here, or no controller)."""
    import subprocess
    import tempfile

    if shutil.which("sbatch") is None:
        return False

    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="launcher-test-only-") as file:
        file.write(script)
        file.flush()
        try:
            answer = subprocess.run(
                ["sbatch", "--test-only", file.name], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            return False  # no answer: sbatch itself decides on submission
    unreachable = ("Unable to contact slurm controller", "Socket timed out", "Connection refused")
    if answer.returncode == 0:
        return True
    if any(words in answer.stderr for words in unreachable):
        return False  # no scheduler answered: nothing to say about the job
    said = " ".join(
        line.removeprefix("sbatch: error: ").strip()
        for line in answer.stderr.splitlines()
        if line.strip()
    )
    resources = plan.recipe.resources
    asked = [
        f"{plan.batch.nodes} node(s) (distributed.nodes)",
        f"partition {profile.partition}" if profile.partition else "the default partition",
        f"{resources.time_limit_min} min (resources.time_limit_min)",
    ]
    if resources.gpus_per_node:
        asked.append(f"{resources.gpus_per_node} GPU(s) per node (resources.gpus_per_node)")
    if resources.cpus_per_task:
        asked.append(f"{resources.cpus_per_task} CPU(s) per node (resources.cpus_per_task)")
    if resources.memory_gb:
        asked.append(f"{resources.memory_gb} GB per node (resources.memory_gb)")
    raise SchedulerRefusal(
        f"cluster {profile.name} cannot run this job as planned; nothing was submitted. "
        f"sbatch --test-only: {said or f'exit code {answer.returncode}'}. The job asks for "
        f"{', '.join(asked)}; the profile (cluster/{profile.name}.yaml) sets the nodes' "
        "resources, the recipe or --nodes the rest (`launcher plan --cluster` shows the script)."
    )


def submit(plan: Plan, profile: ClusterProfile, from_scratch: bool = False) -> str:
    """Prepare the run directory, submit, record the job; return its id at once. The job is
    the run's one writer from then on (``run_lock``: the lock goes to it with a token)."""
    from launcher.backends.slurm_node import NodeTask

    executor = make_executor(plan, profile)  # checks the script's values before anything is made
    check_scheduler_accepts(submission_script(executor), plan, profile)
    holder = this_process("launcher submit", token=new_token())
    prepare_cluster_run(plan, from_scratch, holder)
    # The task pickled into slurm/ holds the run directory, interpreter and lock token only.
    task = NodeTask(str(plan.layout.root), node_python(profile), holder.token)
    with private_files():
        try:
            job = executor.submit(task)
        except Exception as error:  # submitit wraps sbatch's complaint in its own error types
            release_run_lock(plan.layout, holder)
            raise LauncherError(f"sbatch refused the job: {str(error).strip()}") from None
        hand_to_job(plan.layout, holder, str(job.job_id))
        record = {"job_id": str(job.job_id), "cluster": profile.name, "submitted": time.time()}
        write_text_atomic(plan.layout.job_file, json.dumps(record, indent=2) + "\n")
    return str(job.job_id)
