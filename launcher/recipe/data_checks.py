"""Plan-time checks of the data options the tutorials use: ``column_names``, ``template``,
``train_samples`` / ``eval_samples`` and ``group_texts``; each yields (key path, message) pairs
for ``launcher.recipe.checks``.

They catch, before any rank starts, what the ranks would otherwise find minutes later (a template
that does not parse, a text column the headerless file does not name) or never report at all (an
option the task ignores).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path

from launcher.recipe.data_template import TemplateError, template_fields
from launcher.recipe.sample_formats import planned_format, renders_chats
from launcher.recipe.schema import Recipe, file_paths

Problem = tuple[str, str]
CSV_SUFFIXES = (".csv", ".tsv")  # what `data.format: auto` reads as csv


def data_option_problems(recipe: Recipe) -> Iterator[Problem]:
    yield from column_names_problems(recipe)
    yield from template_problems(recipe)
    yield from sft_sample_problems(recipe)
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
        fields = []
        for template in templates(data.template).values():
            try:
                fields += template_fields(template)
            except TemplateError:
                pass  # reported by template_problems
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
    if recipe.data.template is not None:
        yield from template_problems_at("data.template", recipe.data.template, recipe.task)


# The parts a mapping template makes (SFT's prompt-completion pairs).
TEMPLATE_PARTS = ("prompt", "completion")


def template_problems_at(key: str, template: str | dict[str, str], task: str) -> Iterator[Problem]:
    """The problems of one template (``data.template`` or a source's) at key path ``key``."""
    if task == "token_classification":
        yield (
            key,
            "token classification reads words and tags (data.tokens_column, "
            "data.tags_column), not a text a template could make",
        )
        return
    if isinstance(template, dict) and task != "sft":
        yield (
            key,
            f"a prompt/completion mapping is for task 'sft'; {task} reads one text: "
            "give one format string",
        )
        return
    if isinstance(template, dict):
        for part in template:
            if part not in TEMPLATE_PARTS:
                close = difflib.get_close_matches(part, TEMPLATE_PARTS, n=1)
                hint = f"did you mean `{close[0]}`? " if close else ""
                yield (
                    f"{key}.{part}",
                    f"not a part of a template; {hint}allowed: prompt, completion",
                )
    for at, text in templates(template, key).items():
        try:
            template_fields(text)
        except TemplateError as error:
            yield at, f"{text!r}: {error}"


def templates(template: str | dict[str, str], key: str = "data.template") -> dict[str, str]:
    """A template's format strings by key path (one, or a prompt and a completion)."""
    if isinstance(template, dict):
        return {f"{key}.{part}": text for part, text in template.items() if part in TEMPLATE_PARTS}
    return {key: template}


def sft_sample_problems(recipe: Recipe) -> Iterator[Problem]:
    """SFT's sample formats: keys other tasks would ignore, and masks a format cannot give."""
    data = recipe.data
    fmt, loss = data.sample_format, data.loss_on
    set_keys = {
        "data.columns": bool(data.columns),
        "data.sample_format": fmt != "auto",
        "data.loss_on": loss != "auto",
    }
    if recipe.task != "sft":
        for key, is_set in set_keys.items():
            if is_set:
                yield key, "only for task 'sft' (conversations, prompts and completions)"
        return
    pairs = isinstance(data.template, dict)
    if pairs and fmt not in ("auto", "prompt_completion"):
        yield "data.sample_format", f"{fmt!r}, but data.template makes prompt-completion pairs"
    both = sorted(set(data.template) & set(data.columns or {})) if pairs else []
    if both:
        yield "data.columns", f"{', '.join(both)} set here and by data.template: one of the two"
    planned = planned_format(data)  # the format set, or implied by the mapping and template
    if loss == "completion" and planned in ("text", "messages"):
        yield "data.loss_on", f"'completion' needs prompt-completion samples, not {planned}"
    if loss == "assistant" and planned == "text":
        yield "data.loss_on", "'assistant' needs conversations (messages), not plain text"
    if loss == "assistant" and pairs:
        yield (
            "data.loss_on",
            "'assistant' needs conversations, and data.template makes text prompt-completion "
            "pairs (no assistant turns to put the loss on); use 'completion', the "
            "default for pairs",
        )
    train = recipe.tokenizer.train
    trained = train is not None and train.algorithm != "retrain"
    if trained and renders_chats(data) and not recipe.tokenizer.chat_template:
        yield (
            "tokenizer.chat_template",
            "the run trains its tokenizer, which has no chat template, and the samples are "
            "conversations: give one (Jinja text, or the path of a .jinja file)",
        )
    if data.columns:
        for column, own in data.columns.items():
            if not own.strip():
                yield f"data.columns.{column}", "names no column (empty)"


def sample_problems(recipe: Recipe) -> Iterator[Problem]:
    data = recipe.data
    if data.eval_samples and not (data.eval_split or data.eval_fraction):
        yield (
            "data.eval_samples",
            "there is no evaluation data to sample: set data.eval_split or data.eval_fraction",
        )
