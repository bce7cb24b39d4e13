"""``launcher plan``."""

from __future__ import annotations

from pathlib import Path


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
        from launcher.backends.slurm import batch_script

        script = batch_script(resolved.plan, resolved.profile)
        print(f"\nbatch script for cluster {resolved.profile.name}:\n{script}")
    if output:
        from launcher.backends.run_dir import write_files

        files = resolved.plan.files()
        write_files({output / path.name: text for path, text in files.items()})
        print(f"\nplan files written to {output}")
    return 0
