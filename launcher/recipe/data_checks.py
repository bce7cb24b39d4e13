"""Plan-time checks of the data options the tutorials use: ``column_names``, ``template``,
``train_samples`` / ``eval_samples`` and ``group_texts``; each yields (key path, message) pairs
for ``launcher.recipe.checks``.

They catch, before any rank starts, what the ranks would otherwise find minutes later (a template
that does not parse, a text column the headerless file does not name) or never report at all (an
option the task ignores).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from launcher.recipe.data_template import TemplateError, template_fields
from launcher.recipe.schema import Recipe, file_paths

Problem = tuple[str, str]
CSV_SUFFIXES = (".csv", ".tsv")  # what `data.format: auto` reads as csv


def data_option_problems(recipe: Recipe) -> Iterator[Problem]:
    yield from column_names_problems(recipe)
    yield from template_problems(recipe)
    yield from sample_problems(recipe)
    if recipe.data.group_texts and recipe.task != "mlm":
        packing = " (SFT fills rows with data.packing)" if recipe.task == "sft" else ""
        yield "data.group_texts", f"only for task 'mlm', not {recipe.task!r}{packing}"


def column_names_problems(recipe: Recipe) -> Iterator[Problem]:
    """Headerless csv/tsv files: the names must fit the files and name the columns the task
    reads."""
    data = recipe.data
    names = data.column_names
    if not names:
        return
    if not data.files:
        yield "data.column_names", "names the columns of headerless csv/tsv files (data.files)"
        return
    paths = file_paths(data.files)
    csv_files = data.format == "csv" or (
        data.format == "auto" and all(Path(p).suffix.lower() in CSV_SUFFIXES for p in paths)
    )
    if not csv_files:
        suffixes = sorted({Path(p).suffix.lower() or "(no extension)" for p in paths})
        read_as = f"{', '.join(suffixes)} files" if data.format == "auto" else data.format
        yield (
            "data.column_names",
            f"only for headerless csv/tsv files, not {read_as} ({', '.join(paths)})",
        )
        return
    if any(not name.strip() for name in names):
        yield "data.column_names", f"{names}: a column name cannot be empty"
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        yield (
            "data.column_names",
            f"{', '.join(map(repr, repeated))} named twice: names must be distinct",
        )
    yield from named_columns(recipe, names)


def named_columns(recipe: Recipe, names: list[str]) -> Iterator[Problem]:
    """The columns the task reads must be among ``data.column_names``."""
    data = recipe.data
    listed = ", ".join(names)
    if data.template:
        try:
            fields = template_fields(data.template)
        except TemplateError:
            fields = []  # reported by template_problems
        missing = [field for field in fields if field not in names]
        if missing:
            yield (
                "data.template",
                f"{', '.join(map(repr, missing))} not among data.column_names ({listed})",
            )
    elif data.text_column not in names:
        yield "data.text_column", f"{data.text_column!r} is not among data.column_names ({listed})"
    if recipe.task == "classification" and data.label_column not in names:
        yield (
            "data.label_column",
            f"{data.label_column!r} is not among data.column_names ({listed})",
        )


def template_problems(recipe: Recipe) -> Iterator[Problem]:
    """A template must parse and name columns; token classification reads words, not a text."""
    template = recipe.data.template
    if template is None:
        return
    if recipe.task == "token_classification":
        yield (
            "data.template",
            "token classification reads words and tags (data.tokens_column, "
            "data.tags_column), not a text a template could make",
        )
        return
    try:
        template_fields(template)
    except TemplateError as error:
        yield "data.template", f"{template!r}: {error}"


def sample_problems(recipe: Recipe) -> Iterator[Problem]:
    data = recipe.data
    if data.eval_samples and not (data.eval_split or data.eval_fraction):
        yield (
            "data.eval_samples",
            "there is no evaluation data to sample: set data.eval_split or data.eval_fraction",
        )
