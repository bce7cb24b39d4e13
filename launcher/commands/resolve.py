"""A recipe and its overrides (and a cluster profile) resolved into a plan: a pure function of its
inputs, shared by every command that plans."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launcher.backends.profile import ClusterProfile
    from launcher.plan.build import Plan


@dataclass(frozen=True)
class Resolved:
    plan: Plan
    profile: ClusterProfile | None


def resolve_plan(
    recipe: str,
    overrides: list[str],
    *,
    smoke: bool = False,
    run_dir: Path | None = None,
    cluster: str | None = None,
    nodes: int | None = None,
) -> Resolved:
    """The plan of ``recipe`` (a path or a shipped recipe's name) with ``overrides``; with a
    ``cluster`` profile, what the cluster adds comes first, so that the overrides still win.
    ``run_dir`` defaults to ``runs/NAME`` (``runs/NAME-smoke`` for ``--smoke``); a given one is
    made absolute (``~`` expanded, ``..`` folded)."""
    from launcher.plan.build import build_plan
    from launcher.recipe.changes import changes_from_base
    from launcher.recipe.loader import SHIPPED_RECIPES, display_path, find_yaml, load_recipe

    path = find_yaml(recipe, SHIPPED_RECIPES)
    overrides = list(overrides)
    loaded = load_recipe(path, overrides)
    profile = None
    if cluster:
        from launcher.backends.profile import load_profile
        from launcher.backends.slurm import cluster_overrides

        profile = load_profile(cluster)
        overrides = cluster_overrides(loaded, profile, nodes, smoke) + overrides
        loaded = load_recipe(path, overrides)
    # Folded first, so that `runs/../x/../..` is checked (and shown) as the folder it names.
    folder = Path(os.path.abspath(run_dir.expanduser())) if run_dir else None
    folder = folder or Path("runs") / (loaded.name + ("-smoke" if smoke else ""))
    plan = build_plan(
        loaded,
        folder,
        source=display_path(path),
        overrides=tuple(overrides),
        smoke=smoke,
        base_changes=changes_from_base(path),
    )
    return Resolved(plan, profile)
