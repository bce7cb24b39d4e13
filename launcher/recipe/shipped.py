"""The shipped recipes (``recipes/``) by name, and the text of a copy to edit.

``launcher recipes --copy NAME DEST.yaml`` writes the shipped recipe's own text, comments included
(they explain the keys), under a ``base: NAME`` line. Every key starts at the base's value, so
``launcher plan DEST.yaml`` shows only what the user has changed since (``recipe.changes``), and a
key deleted from the copy keeps the base's value instead of falling back to the schema default.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from pathlib import Path

from launcher.errors import LauncherError
from launcher.recipe.loader import SHIPPED_RECIPES, closest_key, why_not_there

# The shipped recipe's own `base:` line (a top-level key): the copy's base already inherits it.
BASE_LINE = re.compile(r"^base:.*(\n|$)", re.MULTILINE)


class UnknownRecipeError(LauncherError):
    """A name that is no shipped recipe's."""

    exit_code = 2


def shipped_names() -> list[str]:
    return sorted(path.stem for path in SHIPPED_RECIPES.glob("*.yaml"))


def shipped_recipe(name: str) -> Path:
    """The file of the shipped recipe ``name`` (``sft-mistral``; ``sft-mistral.yaml`` too)."""
    names = shipped_names()
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    if stem in names:
        return SHIPPED_RECIPES / f"{stem}.yaml"
    close = closest_key(Path(stem).name, names)
    hint = f"did you mean `{close}`? " if close else ""
    raise UnknownRecipeError(
        f"{name!r} is not a shipped recipe; {hint}shipped: {', '.join(names)} (`launcher recipes`)"
    )


def copy_text(name: str, destination: Path) -> str:
    """The text of a copy of shipped recipe ``name`` to be written at ``destination``."""
    source = shipped_recipe(name)
    base = source.stem
    # `base: NAME` is looked for beside the copy first: where something there has that name, the
    # copy names the shipped file itself.
    if why_not_there(destination.absolute().parent / base) != "no such file":
        base = json.dumps(str(source))  # a path, quoted: YAML reads it as written
    shown = shlex.quote(str(destination))
    body = BASE_LINE.sub("", source.read_text(encoding="utf-8"), count=1)
    # The shipped recipe opens with the commands that run it: in the copy, they run the copy.
    body = "\n".join(
        line.replace(f"recipes/{source.name}", shown) if line.startswith("# launcher ") else line
        for line in body.split("\n")
    )
    about = (
        f"A copy of the shipped recipe {source.stem} to edit (`launcher recipes --copy`). Every "
        f"key below starts at {source.stem}'s value, and a key deleted keeps it (`base:`); "
        f"`launcher plan {shown}` shows what has changed from it. A new `name` gives the runs a "
        "folder of their own (runs/NAME)."
    )
    header = textwrap.fill(
        about, width=99, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False
    )
    return f"{header}\nbase: {base}\n\n{body}"
