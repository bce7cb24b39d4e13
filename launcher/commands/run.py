"""``launcher run``."""

from __future__ import annotations

from pathlib import Path


def run(
    recipe: str,
    overrides: list[str],
    *,
    smoke: bool = False,
    run_dir: Path | None = None,
    from_scratch: bool = False,
) -> int:
    """Resolve, then train on this machine."""
    from launcher.backends.local import run_locally
    from launcher.commands.resolve import resolve_plan

    resolved = resolve_plan(recipe, overrides, smoke=smoke, run_dir=run_dir)
    return run_locally(resolved.plan, from_scratch=from_scratch)
