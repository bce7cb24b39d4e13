"""Turn a plan into a run directory, the same way for every backend.

A run directory is only ever one the launcher made: a new folder, an empty one, or one holding the
launcher's marker (``launcher-run.json``; runs made before the marker existed are recognised by
their ``plan/contract.json``). Anything else (a folder of the user's files, a home directory) is
refused before anything is written into it or its mode changed, and ``--from-scratch`` renames
only a launcher run directory. The run directory then gets one writer (``run_lock``).

A run directory that already holds a plan is a run to continue: the new plan must resolve to the
same recipe (otherwise the checkpoints would belong to another run), and the ranks resume from its
newest complete checkpoint. Run directories are private to their owner: folders 0700, files 0600,
whatever the user's umask (the launcher and the ranks it starts create everything under umask 077).

Before a launch, :func:`check_local_paths` makes sure the local files and folders the recipe names
exist, so that a typo fails in a second with the key named, not minutes later inside every rank.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from launcher import __version__
from launcher.backends.run_lock import Holder, release_run_lock, take_run_lock, this_process
from launcher.checkpoints import list_checkpoints
from launcher.contract import RunContract, RunLayout
from launcher.errors import LauncherError, RecipeError, RecipeProblem
from launcher.files import write_text_atomic
from launcher.paths import is_local_path, missing_folder
from launcher.plan.build import Plan
from launcher.plan.memory import OPTIMIZER_STATE_BYTES, adam8bit_state_bytes
from launcher.recipe.data_sources import source_files
from launcher.recipe.loader import differences
from launcher.recipe.schema import Recipe
from launcher.smoke_data import write_smoke_data
from launcher.units import format_bytes

PRIVATE_DIR = 0o700
PRIVATE_UMASK = 0o077  # new folders 0700, new files 0600
PRIVATE_SCRIPT = 0o700


class RunDirError(LauncherError):
    exit_code = 2


def prepare_run_dir(plan: Plan, from_scratch: bool = False, holder: Holder | None = None) -> bool:
    """Write the plan (and smoke data) into the run directory; True when continuing a run.

    ``holder`` becomes the run's one writer and keeps the lock (the caller releases it or hands
    it to a job); without one, the lock is only checked: no one else may be writing.
    ``from_scratch`` starts over: an existing run directory is renamed aside (never deleted).
    """
    with private_files():
        check_ours(plan.layout.root)
        make_run_dir(plan.layout)
        writer = holder or this_process("launcher")
        note = take_run_lock(plan.layout, writer)
        if note:
            print(f"note: {note}")
        try:
            continuing = prepare_private_run_dir(plan, from_scratch, writer)
        except BaseException:
            release_run_lock(plan.layout, writer)
            raise
        if holder is None:
            release_run_lock(plan.layout, writer)
        return continuing


def prepare_private_run_dir(plan: Plan, from_scratch: bool, holder: Holder) -> bool:
    layout = plan.layout
    if from_scratch and any(p.name not in FRESH_RUN_DIR for p in layout.root.iterdir()):
        kept = layout.root.with_name(f"{layout.root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        layout.root.rename(kept)
        make_run_dir(layout)
        take_run_lock(layout, holder)
        (kept / layout.lock_file.name).unlink(missing_ok=True)
        print(f"--from-scratch: the previous run is kept in {kept}")
    if layout.result_file.exists():
        return True  # a finished run stays as it was: nothing rewritten (finished_message)
    continuing = layout.recipe_file.exists()
    if continuing:
        check_same_recipe(plan)
    for folder in (layout.plan_dir, layout.logs_dir):
        make_private_dir(folder)
    check_free_disk(layout.root, checkpoint_bytes(plan))
    write_files(plan.files(), script_mode=PRIVATE_SCRIPT)
    if plan.smoke and (plan.recipe.data.files or plan.recipe.data.sources):
        write_smoke_data(plan.recipe, layout.smoke_data_dir)
    return continuing


def saved_anything(layout: RunLayout) -> bool:
    """Whether the run in ``layout`` may have a checkpoint to continue from: one in its folder,
    or checkpoints kept on the nodes' own disks, which cannot be seen from here."""
    try:
        contract = RunContract.read(layout.contract_file)
    except (OSError, ValueError, TypeError):
        return True  # unreadable: keep the strict rule
    if contract.checkpoints_on_each_node:
        return True
    return bool(list_checkpoints(contract.checkpoints_folder()))


def finished_message(layout: RunLayout, doing: str) -> str:
    """What to say when asked to run or submit a run that has finished: nothing was done, and
    the ways to train again."""
    return (
        f"{layout.root} has already finished; nothing to {doing} (its plan and files are as the "
        "run left them). To train again: choose another --run-dir for a new run, or add "
        "--from-scratch to start over here (the finished run is kept aside)."
    )


# What a run directory holds before its first plan is written.
FRESH_RUN_DIR = {"launcher-run.json", "lock.json", ".lock.guard"}


def check_ours(root: Path) -> None:
    """Refuse ``root`` unless it is new, empty, or a launcher run directory; nothing is written
    or changed before this check."""
    if root.is_symlink() and not root.exists():
        raise RunDirError(f"the run directory {root} is a broken symbolic link")
    if not root.exists():
        return
    if not root.is_dir():
        raise RunDirError(
            f"the run directory {root} is a file, not a folder: choose another --run-dir"
        )
    layout = RunLayout(root)
    if layout.marker_file.is_file() or layout.contract_file.is_file():
        return
    try:
        entries = sorted(p.name for p in root.iterdir())
    except OSError as error:
        raise RunDirError(f"cannot read the run directory {root}: {error.strerror}") from None
    if entries:
        shown = ", ".join(entries[:5]) + (
            f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        )
        raise RunDirError(
            f"{shown_path(root)} already exists and is not a launcher run directory: it "
            f"holds {shown}, and no {layout.marker_file.name}. A run is written only into a new "
            "or empty folder, or continued in a run directory the launcher made; nothing was "
            "changed. Choose another --run-dir (a new folder name)."
        )


def shown_path(root: Path) -> str:
    """``root``, and where it really leads when a link makes that another place."""
    real = root.resolve()
    return str(root) if real == root else f"{root} ({real})"


def make_run_dir(layout: RunLayout) -> None:
    """Create the run directory (0700) and mark it as the launcher's, once."""
    make_private_dir(layout.root)
    check_writable(layout.root)
    if not layout.marker_file.exists() and not layout.contract_file.exists():
        marker = {"launcher": __version__, "created": time.time()}
        write_text_atomic(layout.marker_file, json.dumps(marker, indent=1) + "\n")


# What may change when a run continues: where and on how many ranks it runs, and how long a
# collective may wait (none of which changes what is trained).
WORLD_KEYS = ("distributed.nodes", "distributed.processes_per_node")
MAY_CHANGE_ON_RESUME = (*WORLD_KEYS, "distributed.timeout_min", "resources.")


def check_same_recipe(plan: Plan) -> None:
    """A run continues only with the recipe it started with, unless it saved nothing yet; its
    world size may change."""
    stored = with_new_defaults(yaml.safe_load(plan.layout.recipe_file.read_text()) or {})
    current = plan.recipe.model_dump(mode="json")
    all_changes = differences(stored, current)
    changes = [c for c in all_changes if not c[0].startswith(MAY_CHANGE_ON_RESUME)]
    world = [c for c in all_changes if c[0].startswith(WORLD_KEYS)]
    if world and not changes:
        shown = ", ".join(f"{key} {old} -> {new}" for key, old, new in world)
        print(
            f"warning: continuing {plan.layout.root} on another world size ({shown}): the global "
            f"batch is now {plan.batch.arithmetic()}. DDP checkpoints load; DeepSpeed ZeRO shards "
            "are refused by the ranks."
        )
    if changes and not saved_anything(plan.layout):
        # Nothing to continue from (a run that failed before its first save, its recipe fixed
        # since): it starts again with the recipe as it is now, no --from-scratch needed.
        print(f"note: {plan.layout.root} has no checkpoint yet; it starts again with this recipe")
        return
    if changes:
        shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes[:8])
        raise RunDirError(
            f"{plan.layout.root} holds a run of a different recipe ({shown}). "
            "Continue it with the same recipe and overrides, start over with --from-scratch "
            "(the old run is kept aside), or choose another --run-dir."
        )


def with_new_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A run's recipe as this version of the launcher reads it: a key added since the run
    started has its default (which does what the older version did), so that upgrading the
    launcher does not make a run look like another recipe. As stored where it no longer
    validates."""
    from pydantic import ValidationError

    try:
        return Recipe.model_validate(stored).model_dump(mode="json")
    except ValidationError:
        return stored


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


def not_cached_offline(name: str, marker: str) -> str | None:
    """Why hub id ``name`` cannot load: the hub is off (``HF_HUB_OFFLINE``) and the local cache
    holds no copy (its ``marker`` file); None when it is a local folder, cached, or online."""
    if is_local_path(name) or Path(name).expanduser().exists():
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on"):
        return None
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, marker), str):
        return None
    return (
        f"{name} is a hub id, HF_HUB_OFFLINE is set, and the local cache ({constants.HF_HUB_CACHE}) "
        f"holds no copy of it: download it where the hub is reachable (`hf download {name}`), "
        "unset HF_HUB_OFFLINE, or name a local folder"
    )


def check_local_paths(plan: Plan) -> None:
    """Refuse a launch whose local data files, model or tokenizer folder do not exist, naming
    every such key at once (exit 2). Hub ids are left to the hub client in the ranks.

    Generated smoke data is skipped: it is written into the run directory just before launch.
    """
    recipe, problems = plan.recipe, []
    named = [
        (f"data.files.{split}" + (f"[{index}]" if isinstance(value, list) else ""), path)
        for split, value in (recipe.data.files or {}).items()
        for index, path in enumerate([value] if isinstance(value, str) else value)
    ]
    for key, path in named + source_files(recipe.data):
        misread = misread_by_datasets(path)
        if misread:
            problems.append(RecipeProblem(plan.source, key, misread))
            continue
        if Path(path).is_relative_to(plan.layout.smoke_data_dir) or Path(path).is_file():
            continue
        what = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        message = f"{path} {what} (relative paths are read from where launcher runs)"
        problems.append(RecipeProblem(plan.source, key, message))
    folders = [("model.pretrained", recipe.model.pretrained, "config.json")]
    tokenizer = recipe.tokenizer
    if tokenizer.train is None or tokenizer.train.algorithm == "retrain":
        # (None: the model's own, checked above)
        folders.append(("tokenizer.pretrained", tokenizer.pretrained, "tokenizer_config.json"))
    for key, name, marker in folders:
        problem = (missing_folder(name) or not_cached_offline(name, marker)) if name else None
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
