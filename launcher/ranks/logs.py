"""Each rank keeps its own log, ``logs/rank-N.log``, as well as printing to the launch's output.

Installed before transformers is imported, so the library's log handlers (bound to ``sys.stderr``
when created) write through the tee too. The tee hides secret values (``launcher.secret_env``) in
what it writes, to the terminal and to the file alike: the always-secret tokens from the start,
the recipe's own ``secrets`` once :func:`guard_secrets` has read them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from launcher.secret_env import mask, presence_line, secret_values


class Tee:
    """A text stream that writes to the original stream and to the rank's log file. When the
    file cannot be written (a full disk), the stream alone goes on: a log must never be what
    ends a rank, nor hide why it ends."""

    def __init__(self, stream: TextIO, log: TextIO, hidden: Iterable[str] = ()):
        self.stream, self.log = stream, log
        self.hidden = list(hidden)
        self.log_failed = False

    def write(self, text: str) -> int:
        shown = mask(text, self.hidden)
        self.stream.write(shown)
        if not self.log_failed:
            try:
                self.log.write(shown)
            except (OSError, ValueError) as error:
                self.drop_log(error)
        return len(text)

    def write_log_only(self, text: str) -> None:
        """Keep ``text`` in the rank's log without showing it (masked all the same)."""
        if not self.log_failed:
            try:
                self.log.write(mask(text, self.hidden))
                self.log.flush()
            except (OSError, ValueError) as error:
                self.drop_log(error)

    def flush(self) -> None:
        self.stream.flush()
        if not self.log_failed:
            try:
                self.log.flush()
            except (OSError, ValueError) as error:
                self.drop_log(error)

    def drop_log(self, error: BaseException) -> None:
        self.log_failed = True
        if isinstance(error, OSError):  # not the file closed at exit (a late library message)
            reason = error.strerror or error
            self.stream.write(f"[launcher] the rank log stopped ({reason}); output goes on here\n")

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str):  # fileno, encoding, ... come from the real stream
        return getattr(self.stream, name)


class LogOnly:
    """A stdout whose text goes to the rank's log only (through the tee's ``write_log_only``)."""

    def __init__(self, tee: Tee) -> None:
        self.tee = tee

    def write(self, text: str) -> int:
        self.tee.write_log_only(text)
        return len(text)

    def flush(self) -> None:
        pass


@contextmanager
def prints_to_log_only() -> Iterator[None]:
    """What libraries ``print`` in this block is kept in the rank's log, not shown: DeepSpeed
    prints "DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully" in every rank
    of every CPU run as it joins. Their loggers keep the stream they were made with (warnings and
    errors still show)."""
    stdout = sys.stdout
    if not isinstance(stdout, Tee):
        yield
        return
    sys.stdout = LogOnly(stdout)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout = stdout


@contextmanager
def rank_log(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", encoding="utf-8", buffering=1)  # closed below, even on a full disk
    stdout, stderr = sys.stdout, sys.stderr
    hidden = secret_values()
    sys.stdout, sys.stderr = Tee(stdout, log, hidden), Tee(stderr, log, hidden)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        try:
            log.close()
        except OSError:
            pass  # the last lines did not fit on the disk; they went to the terminal


def guard_secrets(declared: Iterable[str]) -> str:
    """Hide the recipe's ``secrets`` too from now on; return the line that names (never shows)
    the secrets this rank received."""
    declared = list(declared)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, Tee):
            stream.hidden = secret_values(declared)
    return presence_line(declared)
