"""Turn a plan into a run directory, the same way for every backend.

A run directory that already holds a plan is a run to continue: the new plan must resolve to the
same recipe (otherwise the checkpoints would belong to another run), and the ranks resume from its
newest complete checkpoint. Run directories are private to their owner (mode 0700).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import LauncherError
from launcher.plan.build import Plan
from launcher.plan.memory import OPTIMIZER_STATE_BYTES, format_bytes
from launcher.recipe.loader import differences
from launcher.smoke_data import write_smoke_data

PRIVATE_DIR = 0o700


class RunDirError(LauncherError):
    exit_code = 2


def prepare_run_dir(plan: Plan, from_scratch: bool = False) -> bool:
    """Write the plan (and smoke data) into the run directory; True when continuing a run.

    ``from_scratch`` starts over: an existing run directory is renamed aside (never deleted).
    """
    layout = plan.layout
    if from_scratch and layout.root.exists() and any(layout.root.iterdir()):
        kept = layout.root.with_name(f"{layout.root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        layout.root.rename(kept)
        print(f"--from-scratch: the previous run is kept in {kept}")
    continuing = layout.recipe_file.exists()
    if continuing:
        check_same_recipe(plan)
    for folder in (layout.root, layout.plan_dir, layout.logs_dir):
        make_private_dir(folder)
    check_writable(layout.root)
    check_free_disk(layout.root, checkpoint_bytes(plan))
    write_files(plan.files())
    if plan.smoke and plan.recipe.data.files:
        write_smoke_data(plan.recipe, layout.smoke_data_dir)
    return continuing


# What may change when a run continues: where and on how many ranks it runs.
MAY_CHANGE_ON_RESUME = ("distributed.nodes", "distributed.processes_per_node", "resources.")


def check_same_recipe(plan: Plan) -> None:
    """A run continues only with the recipe it started with; its world size may change."""
    stored = yaml.safe_load(plan.layout.recipe_file.read_text()) or {}
    current = plan.recipe.model_dump(mode="json")
    all_changes = differences(stored, current)
    changes = [c for c in all_changes if not c[0].startswith(MAY_CHANGE_ON_RESUME)]
    world = [c for c in all_changes if c[0].startswith("distributed.")]
    if world and not changes:
        shown = ", ".join(f"{key} {old} -> {new}" for key, old, new in world)
        print(
            f"warning: continuing {plan.layout.root} on another world size ({shown}): the global "
            f"batch is now {plan.batch.arithmetic()}. DDP checkpoints load; DeepSpeed ZeRO shards "
            "are refused by the ranks."
        )
    if changes:
        shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes[:8])
        raise RunDirError(
            f"{plan.layout.root} holds a run of a different recipe ({shown}). "
            "Continue it with the same recipe and overrides, start over with --from-scratch "
            "(the old run is kept aside), or choose another --run-dir."
        )


def checkpoint_bytes(plan: Plan) -> int | None:
    """About what one checkpoint takes on disk: fp32 weights plus the optimizer's states."""
    if plan.parameters is None:
        return None
    per_parameter = 4 + OPTIMIZER_STATE_BYTES[plan.recipe.training.optimizer]
    return plan.parameters.total * per_parameter


def check_writable(folder: Path) -> None:
    probe = folder / ".launcher-write-test"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise RunDirError(f"the run directory {folder} is not writable: {error.strerror}") from None


def check_free_disk(
    folder: Path, needed: int | None, disk_usage: Callable[[Path], Any] = shutil.disk_usage
) -> None:
    """Refuse before training when one more checkpoint would not fit, not at the first save."""
    if needed is None:
        return
    free = disk_usage(folder).free
    if free < needed:
        raise RunDirError(
            f"not enough free disk for checkpoints in {folder}: {format_bytes(free)} free, one "
            f"checkpoint needs about {format_bytes(needed)} (fp32 weights and optimizer states). "
            "Free space, or choose a --run-dir on a larger filesystem."
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
