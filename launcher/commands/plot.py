"""``launcher plot``."""

from __future__ import annotations

from pathlib import Path


def plot(run_dir: Path, *, output: Path | None = None) -> int:
    """Draw loss, learning rate and throughput of a run as a PNG.

    Args:
        run_dir: run directory
        output: image to write (default: RUN_DIR/metrics.png)
    """
    from launcher.plot import plot_run

    return plot_run(run_dir, output)
