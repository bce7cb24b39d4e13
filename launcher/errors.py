"""Errors written for the user.

Every problem the launcher can explain is a :class:`LauncherError`; the CLI prints its message and
exits with its ``exit_code`` and never shows a traceback for it. Recipe problems are collected first
and reported together (torchtune's ``ConfigError`` style) so a user fixes a recipe in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

# The "key path" of a problem with a file as a whole (empty, too big, not a mapping, an alias
# bomb): every recipe problem then reads `SOURCE: WHERE: MESSAGE`, WHERE being a dotted key path,
# `line L, column C` (for text that is not YAML), or this.
WHOLE_FILE = "(whole file)"


class LauncherError(Exception):
    """A failure with a message meant for the user; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


@dataclass(frozen=True)
class RecipeProblem:
    """One thing wrong in a recipe: where it came from, which key, and what is allowed.

    ``key`` is a dotted key path (``training.learning_rate``, ``data.labels.0``), a position
    (``line 3, column 7``) or :data:`WHOLE_FILE`; empty only when there is no content to point
    into (a file that does not exist)."""

    source: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.key}" if self.key else self.source
        return f"{where}: {self.message}"


class RecipeError(LauncherError):
    """Every problem found in a recipe (and its overrides), reported at once; exit code 2."""

    exit_code = 2
    subject = "the recipe"

    def __init__(self, problems: list[RecipeProblem]):
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in {self.subject}:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


class ProfileError(RecipeError):
    """Every problem found in a cluster profile (``cluster/*.yaml``), reported at once; exit 2."""

    subject = "the cluster profile"


def first_line(error: BaseException) -> str:
    """The first line of an error's message (libraries' messages run on for screens), or its
    type's name when it has none: what a one-line report quotes."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def quoted(value: str) -> str:
    """A value the user gave, quoted in a message: whole when short, else its start and length
    (a path of 5,000 characters, a template read from the wrong file)."""
    if len(value) <= 60:
        return repr(value)
    return f"{value[:40]!r}... ({len(value):,} characters)"
