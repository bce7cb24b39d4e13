"""Which checkpoints of a run are complete; light enough for login nodes and node tasks.

A checkpoint counts as complete only once its manifest, ``launcher-complete.json``, exists: every
rank has returned from saving (a barrier), then global rank 0 lists each file with its size,
flushes the list to disk and renames it into place (``write_manifest``). A checkpoint is used only
when every file of its manifest is there with that size. A run killed while saving leaves a folder
without a manifest (or with files that do not match it): resume skips it, names it, and moves it
aside so that the resumed run never writes into it; nothing is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

COMPLETE_MARKER = "launcher-complete.json"
SET_ASIDE_PREFIX = "incomplete-"


def checkpoint_step(folder: Path) -> int | None:
    """``checkpoint-120`` -> 120; None for anything else."""
    prefix, _, number = folder.name.rpartition("-")
    return int(number) if prefix == "checkpoint" and number.isdigit() else None


def write_manifest(folder: Path, step: int, world_size: int) -> None:
    """Record ``folder`` as complete: its files and sizes, written last and atomically."""
    files = {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(f".{COMPLETE_MARKER}")
    }
    manifest = {"step": step, "world_size": world_size, "time": time.time(), "files": files}
    partial = folder / f".{COMPLETE_MARKER}.partial"
    with open(partial, "w", encoding="utf-8") as stream:
        json.dump(manifest, stream, indent=1)
        stream.flush()
        os.fsync(stream.fileno())
    partial.replace(folder / COMPLETE_MARKER)


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def problem_with(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from, or None when its manifest checks out."""
    manifest = read_manifest(folder)
    if manifest is None:
        return "no completion manifest (the save did not finish)"
    for name, size in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {size}"
    return None


def latest_complete_checkpoint(checkpoints: Path) -> tuple[Path | None, list[Path]]:
    """The newest complete checkpoint, and the incomplete ones (newest last)."""
    folders = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if checkpoint_step(p) is not None),
        key=checkpoint_step,
    )
    complete = [p for p in folders if problem_with(p) is None]
    return (complete[-1] if complete else None), [p for p in folders if p not in complete]


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """The complete checkpoints of a folder, oldest first."""
    folders = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if checkpoint_step(p) is not None),
        key=checkpoint_step,
    )
    return [p for p in folders if problem_with(p) is None]


def rotate(checkpoints: Path, keep: int | None, protected: set[Path]) -> list[Path]:
    """Delete complete checkpoints beyond the newest ``keep``, never one in ``protected`` (the
    best one, the one this attempt resumed from); return what was deleted. Runs only after the
    newest checkpoint's manifest is written, so a complete checkpoint always remains."""
    if keep is None:
        return []
    complete = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if checkpoint_step(p) is not None
         and problem_with(p) is None),
        key=checkpoint_step,
    )  # fmt: skip
    keep_set = set(complete[-keep:]) | {p.resolve() for p in protected} | set(protected)
    doomed = [p for p in complete if p not in keep_set and p.resolve() not in keep_set]
    for folder in doomed:
        shutil.rmtree(folder)
    return doomed


def set_aside(folder: Path) -> Path:
    """Rename an incomplete checkpoint out of the Trainer's way (it would save into it again)."""
    target = folder.with_name(f"{SET_ASIDE_PREFIX}{folder.name}-{int(time.time())}")
    folder.rename(target)
    return target
