"""``launcher logs``."""

from __future__ import annotations


def logs(target: str, *, rank: int = 0, follow: bool = False) -> int:
    """Print a rank's log.

    Args:
        target: run directory or job id
        rank: global rank (default 0)
        follow: keep printing while it runs
    """
    from launcher.backends.jobs import locate, show_log

    layout, job_id = locate(target)
    show_log(layout, rank, follow, job_id)
    return 0
