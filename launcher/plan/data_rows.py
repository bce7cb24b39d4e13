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

from launcher.recipe.data_sources import (
    STOPPING,
    expected_shares,
    mix_mode,
    probabilities,
    source_label,
)
from launcher.recipe.data_template import TemplateError, template_fields
from launcher.recipe.sample_formats import planned_format, planned_loss
from launcher.recipe.schema import Recipe


def data_rows(recipe: Recipe, summary_file: Path | None = None) -> list[tuple[str, str]]:
    """``[("data", first line), ("", more lines)...]``, or nothing when the data is read as is.
    ``summary_file``: the run directory's record of the data it last prepared, whose padding
    share is shown when it exists (planning a run again, or continuing it)."""
    lines = [*drawn_rows(recipe), *made_text(recipe), *sft_samples(recipe), *mlm_samples(recipe)]
    lines = mixture_rows(recipe) + lines + measured(summary_file)
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


def mixture_rows(recipe: Recipe) -> list[str]:
    """``data.sources``: how they are mixed, then each source's expected share of the rows."""
    data = recipe.data
    if not data.sources:
        return []
    count = len(data.sources)
    if mix_mode(data) == "concatenate":
        head = "concatenated: every row of each; the sources' sizes make the shares"
    else:
        drawn = "drawn by weight" if probabilities(data) else "one row of each in turn"
        head = (
            f"interleaved, {drawn} (datasets.interleave_datasets, seed {data.shuffle_seed}; "
            f"{STOPPING[data.mix_stopping]})"
        )
    lines = [f"mixture of {count} source{'s' if count > 1 else ''}, {head}:"]
    for source, share in zip(data.sources, expected_shares(data), strict=True):
        sampled = f", {source.samples:,} rows drawn at random" if source.samples else ""
        shown = f"{share:6.1%}" if share is not None else "all rows"
        lines.append(f"  {shown}  {source_label(source)}{sampled}")
    return lines


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
    made = template if isinstance(template, dict) else {recipe.data.text_column: template}
    lines = []
    for column, text in made.items():
        try:
            fields = ", ".join(template_fields(text))
        except TemplateError:  # refused by the recipe checks; nothing to describe
            return []
        key = f"data.template.{column}" if isinstance(template, dict) else "data.template"
        lines.append(f"{column} = {key} filled from columns {fields}")
    return lines


# What each SFT sample format is made of, and the loss each `data.loss_on` keeps.
SAMPLE_FORMATS = {
    "text": "plain text ({column}), EOS appended",
    "messages": "conversations (messages) rendered by the chat template",
    "prompt_completion": "prompt-completion pairs (text, or messages through the chat template)",
}
LOSS_ON = {
    "all": "every token",
    "completion": "the completions only (prompt tokens are labelled -100)",
    "assistant": "the assistant turns only (the template's {% generation %} blocks)",
}


def sft_samples(recipe: Recipe) -> list[str]:
    """SFT's sample format and the tokens its loss is on, as the ranks will read them: a
    format set in the recipe, implied by its column mapping or template, or read from the data's
    columns (``auto``: only the rank sees them)."""
    data = recipe.data
    chat_keys = (data.columns, isinstance(data.template, dict), recipe.tokenizer.chat_template)
    said = data.sample_format != "auto" or data.loss_on != "auto" or any(chat_keys)
    if recipe.task != "sft" or not said:  # plain text as before, or whatever the data holds
        return []
    fmt, loss = planned_format(data), planned_loss(data)
    if fmt == "auto":
        described = (
            "read from the columns as TRL reads them: messages, else prompt + completion, else "
            f"plain text ({data.text_column})"
        )
    else:
        described = SAMPLE_FORMATS[fmt].format(column=data.text_column)
    if loss == "auto":
        on = "the completions for prompt-completion pairs, else every token (data.loss_on)"
    else:
        on = LOSS_ON[loss]
    length = data.max_length
    shaped = (
        f"packed into rows of {length} tokens, each attending to itself only"
        if data.packing
        else f"cut to {length} tokens"
    )
    return [f"samples: {described}", f"loss on {on}; samples {shaped}"]


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
