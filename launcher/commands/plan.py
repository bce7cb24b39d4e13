"""``launcher plan``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launcher.plan.build import Plan


def run_script(plan: Plan, overrides: list[str], cluster: str | None, nodes: int | None) -> str:
    """A script that runs this plan from anywhere: ``launcher run`` (or ``submit`` to the
    cluster) of the same recipe, overrides and run directory, from the directory the plan was
    made in (relative paths stay true)."""
    import os
    import shlex
    import sys

    verb = ["submit", "--cluster", cluster] if cluster else ["run"]
    command = [sys.executable, "-m", "launcher", *verb, plan.source, *overrides]
    command += ["--nodes", str(nodes)] if nodes is not None else []
    command += [*(["--smoke"] if plan.smoke else []), "--run-dir", str(plan.layout.root)]
    return (
        "#!/usr/bin/env bash\nset -euo pipefail\n"
        f"cd {shlex.quote(os.getcwd())}\nexec {shlex.join(command)}\n"
    )


def plan(
    recipe: str,
    overrides: list[str],
    *,
    smoke: bool = False,
    run_dir: Path | None = None,
    cluster: str | None = None,
    nodes: int | None = None,
    output: Path | None = None,
) -> int:
    """Resolve a recipe and print the plan.

    Args:
        cluster: also show the batch script for this cluster profile (cluster/NAME.yaml)
        output: also write the plan's files into this folder
    """
    from launcher.commands.resolve import resolve_plan

    if output:
        from launcher.outputs import output_folder

        output = output_folder(output, "the plan's files")
    resolved = resolve_plan(
        recipe, overrides, smoke=smoke, run_dir=run_dir, cluster=cluster, nodes=nodes
    )
    print(resolved.plan.summary())
    if resolved.profile is not None:
        from launcher.backends.slurm import batch_script, check_scheduler_accepts

        script = batch_script(resolved.plan, resolved.profile)
        print(f"\nbatch script for cluster {resolved.profile.name}:\n{script}")
        # Where a scheduler answers: would it ever run this job?
        if check_scheduler_accepts(script, resolved.plan, resolved.profile):
            print(f"sbatch --test-only: cluster {resolved.profile.name} can run this job")
    if output:
        from launcher.backends.run_dir import write_files

        plan_files = resolved.plan.files()
        # The run directory's command.sh starts ranks on a plan written there; a copy elsewhere
        # gets the command that writes this plan there and runs it.
        plan_files[resolved.plan.layout.command_file] = run_script(
            resolved.plan, overrides, cluster, nodes
        )
        write_files({output / path.name: text for path, text in plan_files.items()})
        print(f"\nplan files written to {output}")
    return 0
