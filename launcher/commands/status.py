"""``launcher status``."""

from __future__ import annotations


def status(target: str) -> int:
    """A cluster run's state, attempts and failures.

    Args:
        target: run directory or job id
    """
    from launcher.backends.jobs import locate, status_report

    print(status_report(*locate(target)))
    return 0
