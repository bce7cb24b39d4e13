"""Turn a plan into a run directory, the same way for every backend.

A run directory that already holds a plan is a run to continue: the new plan must resolve to the
same recipe (otherwise the checkpoints would belong to another run), and the ranks resume from its
newest complete checkpoint. Run directories are private to their owner: folders 0700, files 0600,
whatever the user's umask (the launcher and the ranks it starts create everything under umask 077).

Before a launch, :func:`check_local_paths` makes sure the local files and folders the recipe names
exist, so that a typo fails in a second with the key named, not minutes later inside every rank.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import LauncherError, RecipeError, RecipeProblem
from launcher.files import write_text_atomic
from launcher.paths import missing_folder
from launcher.plan.build import Plan
from launcher.plan.memory import OPTIMIZER_STATE_BYTES, adam8bit_state_bytes
from launcher.recipe.loader import differences
from launcher.smoke_data import write_smoke_data
from launcher.units import format_bytes

PRIVATE_DIR = 0o700
PRIVATE_UMASK = 0o077  # new folders 0700, new files 0600
PRIVATE_SCRIPT = 0o700


class RunDirError(LauncherError):
    exit_code = 2


def prepare_run_dir(plan: Plan, from_scratch: bool = False) -> bool:
    """Write the plan (and smoke data) into the run directory; True when continuing a run.

    ``from_scratch`` starts over: an existing run directory is renamed aside (never deleted).
    """
    with private_files():
        return prepare_private_run_dir(plan, from_scratch)


def prepare_private_run_dir(plan: Plan, from_scratch: bool) -> bool:
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
    write_files(plan.files(), script_mode=PRIVATE_SCRIPT)
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
    optimizer = plan.recipe.training.optimizer
    if optimizer.endswith("_8bit"):
        flat = plan.recipe.distributed.strategy == "deepspeed"
        return 4 * plan.parameters.total + adam8bit_state_bytes(plan.parameters, 1, flat)
    return plan.parameters.total * (4 + OPTIMIZER_STATE_BYTES[optimizer])


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


def write_files(files: dict[Path, str], script_mode: int = 0o755) -> None:
    """Write each file atomically (temporary name, then rename) so readers never see half of one;
    shell scripts get ``script_mode``."""
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text, mode=script_mode if path.suffix == ".sh" else None)


@contextmanager
def private_files() -> Iterator[None]:
    """Everything created inside (and by processes started inside) is private to its owner."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def check_local_paths(plan: Plan) -> None:
    """Refuse a launch whose local data files, model or tokenizer folder do not exist, naming
    every such key at once (exit 2). Hub ids are left to the hub client in the ranks.

    Generated smoke data is skipped: it is written into the run directory just before launch.
    """
    recipe, problems = plan.recipe, []
    for split, value in (recipe.data.files or {}).items():
        paths = [value] if isinstance(value, str) else value
        for index, path in enumerate(paths):
            key = f"data.files.{split}" + (f"[{index}]" if isinstance(value, list) else "")
            misread = misread_by_datasets(path)
            if misread:
                problems.append(RecipeProblem(plan.source, key, misread))
                continue
            if Path(path).is_relative_to(plan.layout.smoke_data_dir) or Path(path).is_file():
                continue
            what = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
            message = f"{path} {what} (relative paths are read from where launcher runs)"
            problems.append(RecipeProblem(plan.source, key, message))
    folders = [("model.pretrained", recipe.model.pretrained)]
    tokenizer = recipe.tokenizer
    if tokenizer.train is None or tokenizer.train.algorithm == "retrain":
        folders.append(("tokenizer.pretrained", tokenizer.pretrained))
    for key, name in folders:
        problem = missing_folder(name) if name else None
        if problem:
            problems.append(RecipeProblem(plan.source, key, problem))
    if problems:
        raise RecipeError(problems)


# What `datasets.load_dataset(data_files=...)` reads as something other than the path: `$NAME`
# and `${NAME}` are replaced from the environment (os.path.expandvars), `*?[` are glob patterns.
DATASETS_REWRITES = re.compile(r"\$(?=[A-Za-z_{])|[*?[]")


def misread_by_datasets(path: str) -> str | None:
    """Why the datasets library would load another file than ``path``, or None."""
    found = DATASETS_REWRITES.search(path)
    if found is None:
        return None
    what = "a $ before a name" if found.group() == "$" else f"the glob character {found.group()}"
    return (
        f"{path} holds {what}, which the datasets library expands (it would read another file, "
        "or none); rename the file or folder (a generated file lives in --run-dir)"
    )
