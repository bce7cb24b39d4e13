"""What ``launcher predict`` reads: texts from a ``.txt`` file (one per line), JSON lines or a
csv/tsv file (the text column, and gold labels when the file has them), or ``--text``.

Column names follow the run's recipe (``data.text_column``, ``data.label_column``,
``data.tokens_column``/``data.tags_column``), so the run's own evaluation file works as is; for a
bare model folder they are the usual ``text``, ``label``, ``tokens`` and ``ner_tags``. A file whose
rows have one text column only is read from that column whatever its name.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.errors import LauncherError
from launcher.recipe.data_template import fill, template_fields


@dataclass(frozen=True)
class Columns:
    text: str = "text"
    label: str = "label"
    tokens: str = "tokens"
    tags: str = "ner_tags"
    template: str | None = None  # the run's data.template: rows with its columns are filled
    prompt_template: str | None = None  # its prompt, when it made prompt-completion pairs
    messages: str = "messages"  # the run's name of a conversation column (data.columns)
    prompt: str = "prompt"
    chat: bool = False  # the run trained on conversations: a bare text is a user's message


@dataclass
class Example:
    """One input: a text, or (token classification with gold tags) a sentence of words."""

    text: str = ""
    words: list[str] | None = None
    gold: Any = None  # a label name or id, or a list of tags; None when the input has none
    extra: dict[str, Any] = field(default_factory=dict)  # the row's other columns, kept
    messages: list[dict[str, Any]] | None = None  # a conversation to answer (SFT on chats)


def columns_of(recipe: dict[str, Any] | None) -> Columns:
    data = (recipe or {}).get("data") or {}
    defaults = Columns()
    template = data.get("template")
    mapped = data.get("columns") or {}
    return Columns(
        text=data.get("text_column") or defaults.text,
        label=data.get("label_column") or defaults.label,
        tokens=data.get("tokens_column") or defaults.tokens,
        tags=data.get("tags_column") or defaults.tags,
        template=template if isinstance(template, str) else None,
        prompt_template=template.get("prompt") if isinstance(template, dict) else None,
        messages=mapped.get("messages") or defaults.messages,
        prompt=mapped.get("prompt") or defaults.prompt,
        chat=trained_on_chats(data),
    )


def trained_on_chats(data: dict[str, Any]) -> bool:
    """Whether the run's SFT samples were conversations (its recipe, as saved in the plan)."""
    return (
        data.get("sample_format") == "messages"
        or data.get("loss_on") == "assistant"
        or "messages" in (data.get("columns") or {})
    )


def read_examples(path: Path | None, texts: list[str], columns: Columns) -> list[Example]:
    if path is None:
        if not texts:
            raise LauncherError("nothing to predict: give --input FILE or --text TEXT")
        return [text_example(text, columns) for text in texts]
    if texts:
        raise LauncherError("give --input or --text, not both")
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise LauncherError(f"--input: {path} is {what}; give a .txt, .jsonl or .csv file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = read_json_lines(path)
    elif suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [text_example(line, columns) for line in lines if line.strip()]
    examples = [example_of(row, columns, path, number) for number, row in enumerate(rows, 1)]
    if not examples:
        raise LauncherError(f"--input: {path} holds no rows")
    return examples


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise LauncherError(f"--input: {path} line {number}: not JSON ({error})") from None
        if not isinstance(row, dict):
            raise LauncherError(f"--input: {path} line {number}: not a JSON object")
        rows.append(row)
    return rows


def text_example(text: str, columns: Columns) -> Example:
    """A bare text: a user's message to a model trained on conversations, else the text."""
    return Example(
        text=text, messages=[{"role": "user", "content": text}] if columns.chat else None
    )


def example_of(row: dict[str, Any], columns: Columns, path: Path, number: int) -> Example:
    """The text (or words) of a row and its gold label or tags when it has them."""
    for column in (columns.messages, columns.prompt):  # a conversation, or a prompt in messages
        if isinstance(row.get(column), list):
            return conversation_example(row, column, path, number)
    if columns.prompt_template and set(template_fields(columns.prompt_template)) <= set(row):
        # The prompt filled as training filled it (``data.template.prompt``); the model answers.
        return Example(text=fill(columns.prompt_template, row), extra=dict(row))
    if isinstance(row.get(columns.prompt), str):
        extra = {k: v for k, v in row.items() if k != columns.prompt}
        return Example(text=row[columns.prompt], extra=extra)
    if isinstance(row.get(columns.tokens), list):
        words = [str(word) for word in row[columns.tokens]]
        tags = row.get(columns.tags)
        extra = {k: v for k, v in row.items() if k not in (columns.tokens, columns.tags)}
        return Example(text=" ".join(words), words=words, gold=tags, extra=extra)
    if columns.template and set(template_fields(columns.template)) <= set(row):
        # Filled as training filled it (``data.template``), from the row's own columns.
        text = fill(columns.template, row)
        gold = row.get(columns.label)
        extra = {k: v for k, v in row.items() if k != columns.label}
        return Example(text=text, gold=gold if gold not in ("", None) else None, extra=extra)
    text_column = columns.text
    if text_column not in row:
        strings = [key for key, value in row.items() if isinstance(value, str)]
        if len(strings) != 1:
            raise LauncherError(
                f"--input: {path} row {number} has no {text_column!r} column "
                f"(columns: {', '.join(row)})"
            )
        text_column = strings[0]
    text = row[text_column]
    if not isinstance(text, str):
        raise LauncherError(f"--input: {path} row {number}: {text_column!r} is not text")
    gold = row.get(columns.label)
    extra = {k: v for k, v in row.items() if k not in (text_column, columns.label)}
    return Example(text=text, gold=gold if gold not in ("", None) else None, extra=extra)


def conversation_example(row: dict[str, Any], column: str, path: Path, number: int) -> Example:
    """A conversation up to its last turn that is not the assistant's: the model writes the
    next answer (an answer already there is kept in the row, for comparison)."""
    from launcher.ranks.sft_samples import chatml

    turns = chatml([turn for turn in row[column] if isinstance(turn, dict)])
    while turns and turns[-1].get("role") == "assistant":
        turns.pop()
    if not turns:
        raise LauncherError(f"--input: {path} row {number}: the conversation has no turn to answer")
    extra = {k: v for k, v in row.items() if k != column}
    return Example(text=str(turns[-1].get("content", "")), messages=turns, extra=extra)
