"""A disk that fills up while a run saves: say so, with the numbers, instead of a library's riddle.

The libraries report a full disk in their own words: safetensors says "No space left on device (os
error 28)", Python raises ``OSError`` with errno 28, and ``torch.save`` says "unexpected pos 576 vs
534" (its zip writer notices the short write only as a wrong offset). So a failure counts as a
full disk when its text says so, or when the file system of the checkpoints has almost nothing left
at the moment of the failure.

Nothing needs saving here: the checkpoint cut short has no manifest, so the previous complete one
stays the newest, and the next resume sets the partial one aside as for a killed run.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from launcher.checkpoints import latest_complete_checkpoint, read_manifest
from launcher.errors import first_line
from launcher.units import format_bytes

NO_SPACE_WORDS = ("No space left on device", "os error 28", "Disk quota exceeded")
NEARLY_FULL_BYTES = 64 << 20


def is_disk_full(error: BaseException, folder: Path) -> bool:
    """Whether ``error`` (or what caused it) is a full disk, or the disk of ``folder`` is full."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(seen) for words in NO_SPACE_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def disk_full_report(checkpoints: Path, error: BaseException) -> str:
    """What happened, what is safe, and how much space to free before the same command resumes."""
    free = shutil.disk_usage(checkpoints).free
    newest, incomplete = latest_complete_checkpoint(checkpoints)
    needed = sum((read_manifest(newest) or {}).get("files", {}).values()) if newest else None
    lines = [f"the disk of {checkpoints} is full: {format_bytes(free)} free"]
    if needed:
        lines[0] += f", and one checkpoint of this run takes {format_bytes(needed)}"
    lines[0] += "."
    if newest is not None:
        lines.append(f"The newest complete checkpoint, {newest.name}, is intact.")
    else:
        lines.append("No checkpoint was complete yet.")
    if incomplete:
        partial = incomplete[-1]
        lines.append(
            f"{partial.name} was cut short ({format_bytes(folder_bytes(partial))} written); the "
            "resume sets it aside (delete it to get its space back)."
        )
    to_free = f"at least {format_bytes(max(needed - free, 0))} more" if needed else "space"
    lines.append(
        f"Free {to_free} on that disk (or old runs' checkpoints), then run the same command to "
        f"resume. ({first_line(error)})"
    )
    return " ".join(lines)
