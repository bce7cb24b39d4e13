"""``data.template``: a Python format string over a row's columns, the recipe form of the
formatting function TRL's SFT tutorials pass (``f"### Question: {row['q']}\\n### Answer: ..."``).

Standard library only: the plan checks a template (it parses, it names columns) without the data,
the smoke data generator fills the columns it names, and the ranks fill it from each row.
"""

from __future__ import annotations

import string
from collections.abc import Iterator


class TemplateError(ValueError):
    """A template that cannot fill any row; the message is written for the recipe's user."""


def template_fields(template: str) -> list[str]:
    """The columns ``template`` names, in order of first use (``{a[0]}`` and ``{a.b}`` name ``a``).

    Raises :class:`TemplateError` when it does not parse, names no column, or has a positional
    field (``{}``, ``{0}``): a row's columns are named, never numbered."""
    try:
        names = list(dict.fromkeys(field_names(template)))
    except ValueError as error:  # string.Formatter's own words: "Single '}' encountered ..."
        raise TemplateError(f"not a valid format string: {error}") from None
    positional = [name for name in names if name == "" or name.isdigit()]
    if positional:
        shown = "{}" if positional[0] == "" else "{" + positional[0] + "}"
        raise TemplateError(
            f"{shown} is a positional field; name a column instead, e.g. {{text}} "
            "(write {{ and }} for literal braces)"
        )
    if not names:
        raise TemplateError(
            "names no column, so every row would get the same text; use fields like {question}"
        )
    return names


def field_names(template: str) -> Iterator[str]:
    """Column names of every replacement field, also those nested in a format spec
    (``{a:>{width}}``)."""
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is None:
            continue
        yield column_of(field)
        if spec:
            yield from field_names(spec)


def column_of(field: str) -> str:
    """``a[0].b`` -> ``a``: the column a field reads (what comes before indexing or attributes)."""
    for position, character in enumerate(field):
        if character in ".[":
            return field[:position]
    return field


def fill(template: str, row: dict[str, object]) -> str:
    """``template`` filled from ``row``'s columns (a missing column raises ``KeyError``)."""
    return template.format_map(row)
