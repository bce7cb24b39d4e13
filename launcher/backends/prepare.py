"""Turn a plan into a run directory, the same way for every backend.

A run directory that already holds a plan is a run to continue: the new plan must resolve to the
same recipe (otherwise the checkpoints would belong to another run), and the ranks resume from its
newest complete checkpoint. Run directories are private to their owner (mode 0700).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from launcher.errors import LauncherError
from launcher.plan.build import Plan
from launcher.recipe.loader import differences
from launcher.smoke_data import write_smoke_data

PRIVATE_DIR = 0o700


class RunDirError(LauncherError):
    exit_code = 2


def prepare_run_dir(plan: Plan) -> bool:
    """Write the plan (and smoke data) into the run directory; True when continuing a run."""
    layout = plan.layout
    continuing = layout.recipe_file.exists()
    if continuing:
        check_same_recipe(plan)
    for folder in (layout.root, layout.plan_dir, layout.logs_dir):
        make_private_dir(folder)
    write_files(plan.files())
    if plan.smoke and plan.recipe.data.files:
        write_smoke_data(plan.recipe, layout.smoke_data_dir)
    return continuing


def check_same_recipe(plan: Plan) -> None:
    stored = yaml.safe_load(plan.layout.recipe_file.read_text()) or {}
    current = plan.recipe.model_dump(mode="json")
    changes = differences(stored, current)
    if changes:
        shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes[:8])
        raise RunDirError(
            f"{plan.layout.root} holds a run of a different recipe ({shown}). "
            "Continue it with the same recipe and overrides, or choose another --run-dir."
        )


def make_private_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        os.chmod(path, PRIVATE_DIR)
    except OSError as error:
        raise RunDirError(f"cannot create the run directory {path}: {error.strerror}") from None


def write_files(files: dict[Path, str]) -> None:
    """Write each file atomically (temporary name, then rename) so readers never see half of one."""
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(text)
        if path.suffix == ".sh":
            partial.chmod(0o755)
        partial.replace(path)
