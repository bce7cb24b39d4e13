"""The ``data`` rows of the plan summary: how rows are drawn and made before tokenizing, and, for
MLM, whether texts are grouped into full blocks or padded one per sample.

The plan states the padding share's cause, not its value. The value depends on the tokenizer
(often trained later, by the run's first stage) and on the text (a hub dataset is not read at
plan time, which must stay fast and import no ``datasets``); an estimate from characters per line
would be off by the tokenizer's unknown characters-per-token ratio. The data stage measures it
exactly and logs it (``data: ... padding X% at MAX_LENGTH``, ``launcher.ranks.data_cache``), and
records it in the run directory (``data-summary.json``), from where a later plan of the same run
shows the measured value.
"""

from __future__ import annotations

import json
from pathlib import Path

from launcher.recipe.data_template import TemplateError, template_fields
from launcher.recipe.schema import Recipe


def data_rows(recipe: Recipe, summary_file: Path | None = None) -> list[tuple[str, str]]:
    """``[("data", first line), ("", more lines)...]``, or nothing when the data is read as is.
    ``summary_file``: the run directory's record of the data it last prepared, whose padding
    share is shown when it exists (planning a run again, or continuing it)."""
    lines = [*drawn_rows(recipe), *made_text(recipe), *mlm_samples(recipe)]
    lines += measured(summary_file)
    return [("data" if i == 0 else "", line) for i, line in enumerate(lines)]


def measured(summary_file: Path | None) -> list[str]:
    if summary_file is None or not summary_file.is_file():
        return []
    from launcher.ranks.data_cache import summary_line

    try:
        splits = json.loads(summary_file.read_text())["splits"]
        line = summary_line(splits)
    except (OSError, ValueError, KeyError, TypeError):
        return []  # an unreadable record says nothing; the run writes it again
    return [f"as this run last prepared it: {line}"]


def drawn_rows(recipe: Recipe) -> list[str]:
    data = recipe.data
    lines = []
    if data.column_names:
        lines.append(f"headerless files, columns: {', '.join(data.column_names)}")
    for name, count in (("training", data.train_samples), ("evaluation", data.eval_samples)):
        if count:
            lines.append(
                f"{count:,} {name} rows drawn at random: "
                f"shuffle(seed={data.shuffle_seed}).select(range({count}))"
            )
    return lines


def made_text(recipe: Recipe) -> list[str]:
    template = recipe.data.template
    if not template or recipe.task == "token_classification":
        return []
    try:
        fields = ", ".join(template_fields(template))
    except TemplateError:  # refused by the recipe checks; nothing to describe
        return []
    return [f"{recipe.data.text_column} = data.template filled from columns {fields}"]


def mlm_samples(recipe: Recipe) -> list[str]:
    if recipe.task != "mlm":
        return []
    length = recipe.data.max_length
    if recipe.data.group_texts:
        return [
            f"texts concatenated and cut into full blocks of {length} tokens (data.group_texts): "
            "no padding; the last partial block is dropped"
        ]
    return [
        f"one sample per text, truncated to {length} tokens; its padding share is measured when "
        "the data is prepared (the run log's `data:` line); data.group_texts: true fills blocks"
    ]
