"""Writing a file so that no reader ever sees half of it: write a temporary sibling, then rename.

A rename within one folder is atomic on POSIX file systems: a reader finds the old file, the new
one, or none, never a torn write (a killed rank, a full disk). ``durable`` also flushes the data to
disk before the rename, for files whose presence promises that other files are complete (the
checkpoint manifest).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_text_atomic(
    path: Path, text: str, *, mode: int | None = None, durable: bool = False
) -> None:
    """Write ``text`` to ``path`` through ``.NAME.partial`` and one rename; ``mode`` sets the
    file's permissions before it appears under its name."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="utf-8") as stream:
        stream.write(text)
        if durable:
            stream.flush()
            os.fsync(stream.fileno())
    if mode is not None:
        partial.chmod(mode)
    partial.replace(path)


def write_folder_atomic(folder: Path, write: Callable[[Path], None]) -> None:
    """``write`` a whole folder (a model, a tokenizer) into ``NAME.partial``, then rename it to
    ``folder``, replacing what was there: a half-written folder is never loaded."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
