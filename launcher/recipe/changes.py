"""What a recipe with ``base:`` changes from its base: the keys whose value differs.

The base side is the ``base:`` chain alone (its recipes merged and validated, as if the base were
run); the other side is the recipe file on top of it, without command-line overrides (the plan
lists those on its own line). Keys a recipe sets to the base's own value are no change, so a copy
of a shipped recipe (``launcher recipes --copy``), which repeats every key, shows only what was
edited in it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.recipe.loader import (
    FREE_FORM_PATHS,
    layer_sources,
    read_base_chain,
    read_yaml_mapping,
    validate,
)

# A summary line, not a diff: values for a few changes (a copy's edits), else the keys alone.
SHOWN_VALUES = 6
SHOWN_KEYS = 20
SHOWN_VALUE = 40  # characters of one value


@dataclass(frozen=True)
class BaseChanges:
    """The recipe's base (as its ``base:`` names it) and each (key, base's value, value) changed."""

    base: str
    changes: tuple[tuple[str, Any, Any], ...]

    def describe(self) -> str:
        """``changed from base NAME: key old -> new, ...``, or that nothing has changed yet."""
        count = len(self.changes)
        if not count:
            return f"no changes from base {self.base} yet"
        if count <= SHOWN_VALUES:
            shown = ", ".join(f"{key} {show(old)} -> {show(new)}" for key, old, new in self.changes)
            return f"changed from base {self.base}: {shown}"
        keys = ", ".join(key for key, _, _ in self.changes[:SHOWN_KEYS])
        more = f" and {count - SHOWN_KEYS} more" if count > SHOWN_KEYS else ""
        return f"changed from base {self.base}, {count} keys: {keys}{more}"


def changes_from_base(path: Path) -> BaseChanges | None:
    """The changes of the recipe at ``path`` from its ``base:``; None when it has none (or its
    files cannot be read, which loading the recipe reports)."""
    top, problem = read_yaml_mapping(path)
    chain, problems = read_base_chain(path)
    if problem or problems or len(chain) < 2 or not isinstance(top.get("base"), str):
        return None
    # The chain names each file as the working directory reaches it: the base's own path.
    base, _ = layer_sources(Path(chain[-2][0]), [])
    recipe, _ = layer_sources(path, [])
    base_recipe, _ = validate(base)
    file_recipe, _ = validate(recipe)
    if base_recipe is not None and file_recipe is not None:
        old, new = base_recipe.model_dump(mode="json"), file_recipe.model_dump(mode="json")
    else:
        # A base that is not a whole recipe alone (shared settings only), or a recipe completed
        # by its overrides: the keys as written, without the schema's defaults.
        old, new = base.data, recipe.data
    return BaseChanges(top["base"], tuple(changed_keys(old, new)))


def changed_keys(old: Any, new: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """Key paths whose values differ, a section one side lacks counting as empty; a free-form
    mapping (``model.config``) is one key, shown whole, as a recipe sets it."""
    sides = [{} if side is None else side for side in (old, new)]
    if key not in FREE_FORM_PATHS and all(isinstance(side, dict) for side in sides) and old != new:
        old, new = sides
        keys = list(old) + [k for k in new if k not in old]
        return [
            change
            for part in keys
            for change in changed_keys(
                old.get(part), new.get(part), f"{key}.{part}" if key else part
            )
        ]
    return [] if old == new else [(key, old, new)]


def show(value: Any) -> str:
    """A value as YAML would show it (text bare where it cannot be read as anything else: an id,
    a path, a word), shortened."""
    text = (
        value
        if isinstance(value, str) and is_plain_text(value)
        else json.dumps(value, ensure_ascii=False, default=str)
    )
    return text if len(text) <= SHOWN_VALUE else f"{text[: SHOWN_VALUE - 3]}..."


def is_plain_text(text: str) -> bool:
    if not PLAIN_TEXT.fullmatch(text) or text.lower() in ("null", "true", "false", "yes", "no"):
        return False
    try:
        float(text)
    except ValueError:
        return True
    return False


PLAIN_TEXT = re.compile(r"[A-Za-z0-9_./@:+~][A-Za-z0-9_./@:+~-]*")
