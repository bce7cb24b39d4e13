"""``launcher submit``."""

from __future__ import annotations

import shlex
from pathlib import Path


def submit(
    recipe: str,
    overrides: list[str],
    *,
    cluster: str,
    smoke: bool = False,
    run_dir: Path | None = None,
    nodes: int | None = None,
    from_scratch: bool = False,
    dry_run: bool = False,
) -> int:
    """Resolve, then submit to SLURM and return.

    Args:
        dry_run: print the plan and the batch script only
    """
    from launcher.backends import slurm
    from launcher.commands.resolve import resolve_plan

    resolved = resolve_plan(
        recipe, overrides, smoke=smoke, run_dir=run_dir, cluster=cluster, nodes=nodes
    )
    plan, profile = resolved.plan, resolved.profile
    assert profile is not None
    if dry_run:
        print(plan.summary())
        print(f"\nbatch script:\n{slurm.batch_script(plan, profile)}")
        return 0
    job_id = slurm.submit(plan, profile, from_scratch=from_scratch)
    print(
        f"submitted job {job_id} to {profile.name}: {plan.batch.nodes} node(s) x "
        f"{plan.batch.processes_per_node} rank(s)"
    )
    print(f"run dir: {plan.layout.root}")
    print(f"watch:   launcher status {shlex.quote(str(plan.layout.root))}")
    return 0
