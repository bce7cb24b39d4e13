"""A mixture of sources (``data.sources``) as one training split.

Each source is read by the same ``load_split`` a single ``data.dataset`` / ``data.files`` goes
through (``launcher.recipe.data_sources.source_section``), so its format, column mapping and
template mean what they mean there. The sources keep the columns the task reads that all of them
have, cast to the first source's types, and are then mixed as the user would mix them:
``datasets.interleave_datasets(parts, probabilities, seed, stopping_strategy)`` or
``datasets.concatenate_datasets(parts)``. The rows each source gave are counted and logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from launcher.errors import LauncherError
from launcher.recipe.data_sources import (
    mix_mode,
    probabilities,
    source_key,
    source_label,
    source_section,
)
from launcher.recipe.schema import DataSection

# The standard columns a task may read from text rows (SFT: text, messages, prompt-completion).
SFT_COLUMNS = ("messages", "prompt", "completion")
# Marks each row with its source's index while mixing (counted, then removed).
SOURCE_COLUMN = "__launcher_source__"


class MixtureError(LauncherError):
    exit_code = 2


@dataclass(frozen=True)
class Mixture:
    """The mixed training split and the rows each source gave to it."""

    split: Any
    rows: list[int]
    labels: list[str]


def load_mixture(data: DataSection, words: bool = False, log: Callable[[str], None] = print) -> Any:
    """The training split of ``data.sources``, mixed; logs the rows each source gave."""
    mixture = mix_sources(data, words)
    log(mixture_line(data, mixture))
    return mixture.split


def mix_sources(data: DataSection, words: bool = False) -> Mixture:
    from launcher.ranks.data import load_split

    assert data.sources, "load_mixture needs data.sources"
    if data.eval_split:
        raise MixtureError(
            "data.eval_split: with data.sources the evaluation rows are held out of the mixture "
            "(data.eval_fraction)"
        )
    labels = [source_label(source) for source in data.sources]
    parts = []
    for index, source in enumerate(data.sources):
        section = source_section(data, source)
        try:
            part = load_split(section, source.split, f"{source_key(index)}.split", words)
        except LauncherError as error:
            raise MixtureError(f"{source_key(index)} ({labels[index]}): {error}") from error
        part = standard_text_column(part, section.text_column, data.text_column)
        if source.samples is not None:
            part = sample_rows(part, source.samples, data.shuffle_seed, index, labels[index])
        parts.append(part)
    parts = common_columns(parts, data, words, labels)
    parts = same_features(parts, labels)
    parts = [
        part.add_column(SOURCE_COLUMN, [index] * len(part)) for index, part in enumerate(parts)
    ]
    mixed = mix(parts, data)
    rows = rows_by_source(mixed, len(parts))
    return Mixture(mixed.remove_columns(SOURCE_COLUMN), rows, labels)


def mix(parts: list[Any], data: DataSection) -> Any:
    import datasets

    if mix_mode(data) == "concatenate":
        return datasets.concatenate_datasets(parts)
    if data.shuffle:  # a source not used up gives a random subset of its rows, not its first ones
        parts = [part.shuffle(seed=data.shuffle_seed + index) for index, part in enumerate(parts)]
    return datasets.interleave_datasets(
        parts,
        probabilities=probabilities(data),
        seed=data.shuffle_seed,
        stopping_strategy=data.mix_stopping,
    )


def standard_text_column(part: Any, own: str, standard: str) -> Any:
    """A source's ``text_column`` renamed to ``data.text_column`` (the one the task reads)."""
    if own == standard or own not in part.column_names:
        return part
    if standard in part.column_names:
        part = part.remove_columns(standard)
    return part.rename_column(own, standard)


def sample_rows(part: Any, count: int, seed: int, index: int, label: str) -> Any:
    """``samples`` rows drawn at random, as ``data.train_samples`` draws them."""
    if count > len(part):
        raise MixtureError(
            f"{source_key(index)}.samples: {count:,} rows asked for, but {label} has "
            f"{len(part):,}; lower it, or unset it to use them all"
        )
    return part.shuffle(seed=seed).select(range(count))


def wanted_columns(data: DataSection, words: bool) -> list[str]:
    """The columns a task may read, in order: tagged words, or text / SFT columns / a label."""
    if words:
        return [data.tokens_column, data.tags_column]
    return list(dict.fromkeys([data.text_column, *SFT_COLUMNS, data.label_column]))


def common_columns(
    parts: list[Any], data: DataSection, words: bool, labels: list[str]
) -> list[Any]:
    """Each part cut to the wanted columns every source has (a column one source lacks cannot be
    read from the mixture's rows); none in common is an error that lists each source's columns."""
    wanted = wanted_columns(data, words)
    kept = [c for c in wanted if all(c in part.column_names for part in parts)]
    if not kept or (words and kept != wanted):
        listed = "; ".join(
            f"{source_key(i)} ({labels[i]}): {', '.join(part.column_names)}"
            for i, part in enumerate(parts)
        )
        needs = "need all of" if words else "share none of"
        raise MixtureError(
            f"data.sources: the sources {needs} the columns the task reads "
            f"({', '.join(wanted)}); give them the same names (a source's `text_column`, "
            f"`columns` or `template`). Their columns: {listed}"
        )
    return [part.select_columns(kept) for part in parts]


def same_features(parts: list[Any], labels: list[str]) -> list[Any]:
    """The parts cast to the first one's column types (two JSON files may infer the same
    ``messages`` differently); types that do not convert name both sources."""
    first = parts[0].features
    out = [parts[0]]
    for index, part in enumerate(parts[1:], start=1):
        if part.features == first and part.data.schema == parts[0].data.schema:
            out.append(part)
            continue
        try:
            out.append(part.cast(first))
        except Exception as error:  # arrow and datasets raise several types for "cannot cast"
            raise MixtureError(
                f"{source_key(index)} ({labels[index]}): its columns do not have the types of "
                f"{source_key(0)} ({labels[0]}), and cannot be cast to them ({error}): "
                f"{dict(part.features)} vs {dict(first)}"
            ) from error
    return out


def rows_by_source(mixed: Any, count: int) -> list[int]:
    """How many rows of the mixture came from each source (counted in Arrow)."""
    import pyarrow.compute as pc

    column = mixed.with_format("arrow")[SOURCE_COLUMN]
    counted = {item["values"].as_py(): item["counts"].as_py() for item in pc.value_counts(column)}
    return [counted.get(index, 0) for index in range(count)]


def mixture_line(data: DataSection, mixture: Mixture) -> str:
    """``data: mixture of 2 sources (interleave, seed 42, first_exhausted), 1,000 rows: a.jsonl
    [train] 700 (70.0%), ...``"""
    total = sum(mixture.rows)
    mode = mix_mode(data)
    how = (
        f"interleave, seed {data.shuffle_seed}, {data.mix_stopping}"
        if mode == "interleave"
        else mode
    )
    shares = ", ".join(
        f"{label} {rows:,} ({rows / total:.1%})" if total else f"{label} 0"
        for label, rows in zip(mixture.labels, mixture.rows, strict=True)
    )
    return f"data: mixture of {len(mixture.rows)} sources ({how}), {total:,} rows: {shares}"
