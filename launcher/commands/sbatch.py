"""``launcher sbatch``."""

from __future__ import annotations

import shlex
from pathlib import Path


def sbatch(
    recipe: str,
    overrides: list[str],
    *,
    cluster: str,
    output: Path,
    smoke: bool = False,
    run_dir: Path | None = None,
    nodes: int | None = None,
    from_scratch: bool = False,
) -> int:
    """Write a batch script to submit with sbatch.

    Args:
        output: the script to write
    """
    from launcher.backends.run_dir import write_files
    from launcher.backends.slurm import (
        check_scheduler_accepts,
        prepare_cluster_run,
        standalone_batch_script,
    )
    from launcher.commands.resolve import resolve_plan
    from launcher.outputs import output_file

    resolved = resolve_plan(
        recipe, overrides, smoke=smoke, run_dir=run_dir, cluster=cluster, nodes=nodes
    )
    plan, profile = resolved.plan, resolved.profile
    assert profile is not None
    script = standalone_batch_script(plan, profile)  # refusals come before the run dir exists
    output = output_file(output, "the batch script")
    check_scheduler_accepts(script, plan, profile)  # where a scheduler answers
    prepare_cluster_run(plan, from_scratch=from_scratch)
    write_files({output: script})
    output.chmod(0o755)
    print(f"run dir prepared: {plan.layout.root}")
    print(f"submit it with:   sbatch {shlex.quote(str(output))}")
    return 0
