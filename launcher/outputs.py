"""Where a command writes what the user asked for (``-o``, the file of ``recipes --copy``): checked
before any work is done.

A folder given where a file goes, a file where a folder goes, a place the user cannot write, or a
pseudo file system like ``/proc`` is one clear error (exit 2) before the plan is resolved, the
tokenizer trained or the checkpoint loaded, never a traceback after minutes of work or a success
message over nothing written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from launcher.errors import LauncherError


class OutputPathError(LauncherError):
    """An output path (``-o``) that cannot receive what the command writes."""

    exit_code = 2


def output_folder(path: Path, what: str, *, must_be_empty: bool = False) -> Path:
    """``path`` as a folder that exists and takes files (made if missing); raises OutputPathError.
    ``what`` says what goes there, for the message."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"-o {path}: this is a file, not a folder for {what}")
    if must_be_empty and path.is_dir() and any(path.iterdir()):
        raise OutputPathError(
            f"-o {path}: this folder is not empty; name a new folder for {what}, or remove it"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise OutputPathError(f"-o {path}: cannot write {what} here ({reason(error)})") from None
    return path


def output_file(path: Path, what: str) -> Path:
    """``path`` as a file that can be written (its folder made if missing); raises
    OutputPathError. Nothing is left behind by the check."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(
            f"-o {path}: this is a folder; name the file for {what} (e.g. {path / 'metrics.png'})"
        )
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
        if not existed:
            path.unlink()
    except OSError as error:
        raise OutputPathError(f"-o {path}: cannot write {what} here ({reason(error)})") from None
    return path


def new_file(path: Path, what: str) -> Path:
    """``path`` as a file that does not exist yet, in a folder that does and takes files; raises
    OutputPathError. Nothing is written or made: what exists is never replaced, and a missing
    folder is an error (a typo in its name), not made."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(f"{path}: this is a folder; name the file for {what}")
    if path.exists() or path.is_symlink():
        raise OutputPathError(
            f"{path}: already exists and is not overwritten; name a new file for {what}, or "
            "remove this one"
        )
    folder = path.parent
    if not folder.is_dir():
        why = f"{folder} is a file, not a folder" if folder.exists() else f"no folder {folder}"
        raise OutputPathError(f"{path}: {why}; name a file in a folder that exists")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputPathError(f"{path}: cannot write {what} here ({reason(error)})") from None
    return path


def write_new_file(path: Path, text: str, what: str) -> None:
    """Write ``text`` to ``path``, which must not exist (not even one made since it was checked);
    a failed write leaves nothing behind."""
    try:
        stream = open(path, "x", encoding="utf-8")
    except FileExistsError:
        raise OutputPathError(f"{path}: already exists and is not overwritten") from None
    except OSError as error:
        raise OutputPathError(f"{path}: cannot write {what} here ({reason(error)})") from None
    try:
        with stream:
            stream.write(text)
    except BaseException as error:
        path.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OutputPathError(f"{path}: cannot write {what} ({reason(error)})") from None
        raise


def reason(error: OSError) -> str:
    """The system's words for an OSError, without Python's decoration."""
    return error.strerror or os.strerror(error.errno or 0) or type(error).__name__
