"""Labels in the data as ids in the recipe's ``data.labels`` order: one rule for the labels of
classification and the tags of token classification.

A value is an id (0 to the number of names - 1) or a name, matched exactly, then ignoring case.
"""

from __future__ import annotations

from typing import Any

from launcher.errors import LauncherError


class LabelIds:
    """``names`` in id order; ``noun`` (label, tag) and ``column_key`` name them in errors."""

    def __init__(
        self, names: list[str], noun: str, column_key: str, error: type[LauncherError]
    ) -> None:
        self.names, self.noun, self.column_key, self.error = names, noun, column_key, error
        self.exact = {name: i for i, name in enumerate(names)}
        self.lowered = {name.lower(): i for i, name in enumerate(names)}

    def id_of(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error(
                f"{self.column_key}: {self.noun} {value!r} is neither a name nor an id"
            )
        if isinstance(value, int):
            if not 0 <= value < len(self.names):
                raise self.error(
                    f"data.labels: {self.noun} id {value} outside 0..{len(self.names) - 1}"
                )
            return value
        found = self.exact.get(value, self.lowered.get(value.lower()))
        if found is None:
            raise self.error(
                f"data.labels: {self.noun} {value!r} in the data is not one of {self.names}"
            )
        return found
