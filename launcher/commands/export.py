"""``launcher export``."""

from __future__ import annotations

from pathlib import Path


def export(
    run_dir: Path, *, output: Path, checkpoint: int | None = None, merge: bool = False
) -> int:
    """Write a checkpoint (DDP or ZeRO shards) as one Hugging Face model folder.

    Args:
        run_dir: run directory
        output: folder to create (new or empty)
        checkpoint: step to export (default: the newest complete checkpoint)
        merge: LoRA runs: write the base model with the adapter merged in, not the adapter
    """
    from launcher.export import export_checkpoint

    export_checkpoint(run_dir, output, checkpoint, merge)
    return 0
