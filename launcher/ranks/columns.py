"""The one message for a recipe key that names a column the data does not have.

Every key that names a column (``data.text_column``, ``data.label_column``, ``data.columns.*``,
``data.template``, the token-classification columns) is checked when the rank reads the split,
since a hub dataset's columns are known only then; a close name is suggested, as the plan does
for recipe keys.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def not_a_column(key: str, column: str, split: str, columns: Sequence[str]) -> str:
    """``KEY: 'x' is not a column of the SPLIT split (columns: a, b; did you mean 'a'?)``."""
    return not_columns(key, [column], split, columns)


def not_columns(key: str, missing: Sequence[str], split: str, columns: Sequence[str]) -> str:
    """The message for one or more columns ``key`` names that ``split`` lacks."""
    guesses = [
        (name, close[0])
        for name in missing
        if (close := difflib.get_close_matches(name, list(columns), n=1))
    ]
    if len(missing) == 1 and guesses:
        hint = f"; did you mean {guesses[0][1]!r}?"
    elif guesses:
        hint = "; did you mean " + ", ".join(f"{guess!r} for {name!r}" for name, guess in guesses)
        hint += "?"
    else:
        hint = ""
    named = ", ".join(map(repr, missing))
    verb = "is not a column" if len(missing) == 1 else "are not columns"
    return f"{key}: {named} {verb} of the {split} split (columns: {', '.join(columns)}{hint})"
