"""Which checkpoints of a run are complete; light enough for login nodes and node tasks.

A checkpoint folder counts as complete only once ``launcher-complete.json`` exists in it: every rank
has returned from saving (a barrier), then global rank 0 writes that marker through a rename
(``launcher.ranks.callbacks.CheckpointCompletion``). A run killed while saving leaves a folder
without it, which resume skips and keeps.
"""

from __future__ import annotations

from pathlib import Path

COMPLETE_MARKER = "launcher-complete.json"


def checkpoint_step(folder: Path) -> int | None:
    """``checkpoint-120`` -> 120; None for anything else."""
    prefix, _, number = folder.name.rpartition("-")
    return int(number) if prefix == "checkpoint" and number.isdigit() else None


def latest_complete_checkpoint(checkpoints: Path) -> tuple[Path | None, list[Path]]:
    """The newest complete checkpoint, and the incomplete ones that were skipped."""
    folders = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if checkpoint_step(p) is not None),
        key=checkpoint_step,
    )
    complete = [p for p in folders if (p / COMPLETE_MARKER).exists()]
    return (complete[-1] if complete else None), [p for p in folders if p not in complete]
