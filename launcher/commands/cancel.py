"""``launcher cancel``."""

from __future__ import annotations


def cancel(target: str) -> int:
    """Cancel a cluster run's job.

    Args:
        target: run directory or job id
    """
    from launcher.backends.jobs import cancel as cancel_job
    from launcher.backends.jobs import locate

    print(cancel_job(*locate(target)))
    return 0
