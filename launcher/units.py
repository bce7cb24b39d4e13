"""Numbers for people: byte counts with binary units."""

from __future__ import annotations


def format_bytes(n: int) -> str:
    """Format a byte count with binary units (1 GiB = 2**30 bytes), e.g. '26.69 GiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{n} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"
