"""Data as the tutorials ship it: headerless csv/tsv files (``data.column_names``), a random
subset of a split (``data.train_samples`` / ``data.eval_samples``) and rows made into text by a
format string (``data.template``).

Each one is a step the user would otherwise write in a notebook around ``load_dataset``; here it
runs on the raw splits, before tokenizing, so the tokenizer stage and the data cache see the same
rows. Mistakes stop with the recipe key named.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from launcher.errors import LauncherError
from launcher.ranks.columns import not_a_column, not_columns
from launcher.recipe.data_template import TemplateError, fill, template_fields
from launcher.recipe.schema import DataSection

# Errors a format string raises on a row it cannot fill: `{n:d}` of a text, `{a[3]}` of a short list.
FILL_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError)


class DataOptionError(LauncherError):
    exit_code = 2


# --- data.column_names ------------------------------------------------------------------------


def headerless_options(data: DataSection, paths: list[str], delimiter: str) -> dict[str, Any]:
    """``load_dataset("csv", ...)`` options for ``data.column_names`` (none when unset).

    The csv builder takes the names and then reads the first line as data. Its reader (pandas)
    does not complain when the count is wrong: fewer names than fields turn the first fields into
    an unnamed index, more names add empty columns. The count is checked here instead, against
    the first line of each file."""
    names = data.column_names
    if not names:
        return {}
    for path in paths:
        fields = first_line_fields(Path(path), delimiter)
        if fields is not None and len(fields) != len(names):
            raise DataOptionError(
                f"data.column_names: names {len(names)} columns ({', '.join(names)}), but the "
                f"first line of {path} has {len(fields)} fields (delimiter {delimiter!r}): "
                f"{fields[:8]}"
            )
    return {"column_names": list(names)}


def first_line_fields(path: Path, delimiter: str) -> list[str] | None:
    """The fields of a file's first non-blank line, as a csv reader splits it (None: no line)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        for fields in csv.reader(handle, delimiter=delimiter):
            if any(field.strip() for field in fields):
                return fields
    return None


# --- data.columns -----------------------------------------------------------------------------


def map_columns(split: Any, data: DataSection, name: str) -> Any:
    """``split`` with the data's own column names renamed to the ones SFT reads
    (``data.columns``: ``{messages: conversations}``); a missing column names the key."""
    mapping = dict(data.columns or {})
    renames = {own: standard for standard, own in mapping.items() if own != standard}
    missing = [own for own in mapping.values() if own not in split.column_names]
    if missing:
        key = next(f"data.columns.{std}" for std, own in mapping.items() if own == missing[0])
        raise DataOptionError(not_a_column(key, missing[0], name, split.column_names))
    clashes = [std for std in renames.values() if std in split.column_names]
    if clashes:  # the data has both: keep the mapped one, as asked
        split = split.remove_columns(clashes)
    return split.rename_columns(renames) if renames else split


# --- data.template ----------------------------------------------------------------------------


def fill_template(split: Any, data: DataSection, name: str) -> Any:
    """``split`` with ``data.text_column`` set to ``data.template`` filled from each row, or, for
    a mapping template (SFT instruction data), its ``prompt`` and ``completion`` columns.

    Other columns stay (a classification label is still read from its own column)."""
    assert data.template is not None
    templates = (
        data.template if isinstance(data.template, dict) else {data.text_column: data.template}
    )
    fields: dict[str, list[str]] = {}
    for column, template in templates.items():
        key = template_key(data, column)
        try:
            fields[column] = template_fields(template)
        except TemplateError as error:  # the plan refuses it; a library caller may not have planned
            raise DataOptionError(f"{key}: {error}") from None
        missing = [field for field in fields[column] if field not in split.column_names]
        if missing:
            raise DataOptionError(not_columns(key, missing, name, split.column_names))

    def texts(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {column: [] for column in templates}
        for position, index in enumerate(indices):
            for column, template in templates.items():
                row = {field: batch[field][position] for field in fields[column]}
                try:
                    out[column].append(fill(template, row))
                except FILL_ERRORS as error:
                    raise DataOptionError(
                        f"{template_key(data, column)}: cannot fill row {index} of the {name} "
                        f"split ({type(error).__name__}: {error}); its values: {row}"
                    ) from None
        return out

    return split.map(
        texts,
        batched=True,
        with_indices=True,
        desc=f"filling data.template for {name}",
    )


def template_key(data: DataSection, column: str) -> str:
    """``data.template``, or ``data.template.prompt`` for one template of a mapping."""
    return f"data.template.{column}" if isinstance(data.template, dict) else "data.template"


# --- data.train_samples / data.eval_samples ---------------------------------------------------


def take_samples(splits: dict[str, Any], data: DataSection) -> dict[str, Any]:
    """Each split cut to its sample count by ``shuffle(shuffle_seed).select(range(n))``.

    A count larger than the split is an error, not a silent clamp: a run asked for 1,000 samples
    that trains on 800 is a different experiment that looks like the same one."""
    counts = {"train": data.train_samples, "eval": data.eval_samples}
    out = dict(splits)
    for name, count in counts.items():
        if count is None or name not in out:
            continue
        rows = len(out[name])
        if count > rows:
            raise DataOptionError(
                f"data.{name}_samples: {count:,} samples asked for, but the {name} split has "
                f"{rows:,} rows ({split_origin(data, name)}); lower it, or unset it to use them all"
            )
        out[name] = out[name].shuffle(seed=data.shuffle_seed).select(range(count))
    return out


def split_origin(data: DataSection, name: str) -> str:
    """Where a split's rows came from, for the error above."""
    if name == "eval" and not data.eval_split:
        return f"held out by data.eval_fraction {data.eval_fraction}"
    split = data.train_split if name == "train" else data.eval_split
    origin = f"data.{name}_split {split!r}"
    if name == "train" and data.eval_fraction:
        origin += f", less the data.eval_fraction {data.eval_fraction} held out"
    return origin
