"""``launcher doctor``."""

from __future__ import annotations

from pathlib import Path


def doctor(*, runs_dir: Path = Path("runs"), skip_launch: bool = False) -> int:
    """Report versions, GPUs, SLURM, disk, and test a two-rank all-reduce.

    Args:
        runs_dir: where runs go (free disk is checked)
        skip_launch: skip the two-rank all-reduce (faster)
    """
    from launcher.doctor import run_doctor

    return run_doctor(runs_dir, skip_launch)
