"""Token classification data: sentences of words with one tag per word, as the Trainer reads them.

Words come from CoNLL column files (one token per line, its tag in the last column, a blank line
between sentences; read by the ``datasets`` library's own ``conll`` builder) or from JSON lines /
hub datasets with a list of words and a list of tags (the ``tokens`` + ``ner_tags`` convention).
Tags are names mapped through ``data.labels`` or ids, named by ``data.labels`` or by the dataset's
``ClassLabel`` feature. The fast tokenizer splits words into sub-tokens; its word ids carry each
word's tag to its first sub-token, and the others get -100 (ignored by the loss and the metrics) or,
with ``data.label_all_tokens``, the word's tag with ``B-`` turned into ``I-`` (as the Hugging Face
``run_ner`` example does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.errors import LauncherError
from launcher.ranks.columns import not_a_column
from launcher.ranks.label_ids import LabelIds
from launcher.recipe.schema import DataSection

IGNORED = -100  # the label id the loss and the metrics skip


class TagError(LauncherError):
    exit_code = 2


def conll_column_names(data: DataSection, paths: list[str]) -> list[str]:
    """Names for the columns of a CoNLL file: the words first, the tags last, others between.

    The count comes from the file's first token line: CoNLL-2003 has four columns (word, POS,
    chunk, NER tag), a plain NER file two."""
    counts = {column_count(Path(path), data.delimiter) for path in paths}
    counts.discard(0)
    if len(counts) > 1:
        raise TagError(
            f"data.files: {', '.join(paths)} have different column counts ({sorted(counts)})"
        )
    count = counts.pop() if counts else 2
    if count < 2:
        raise TagError(
            f"data.files: {paths[0]} has one column; a CoNLL file has the token first and its "
            "tag in the last column"
        )
    middle = [f"column_{i}" for i in range(1, count - 1)]
    return [data.tokens_column, *middle, data.tags_column]


def column_count(path: Path, delimiter: str | None) -> int:
    """Columns of the first token line (not blank, not a ``-DOCSTART-`` marker); 0 if none."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            line = line.rstrip("\r\n")
            if line.strip() and not line.startswith("-DOCSTART-"):
                return len(line.split(delimiter) if delimiter else line.split())
    return 0


def require_columns(split: Any, data: DataSection, name: str) -> None:
    for key, column in (
        ("data.tokens_column", data.tokens_column),
        ("data.tags_column", data.tags_column),
    ):
        if column not in split.column_names:
            raise TagError(not_a_column(key, column, name, split.column_names))


def tag_names(data: DataSection, split: Any) -> list[str]:
    """The tag names in id order: ``data.labels``, else the dataset's ``ClassLabel`` names."""
    if data.labels:
        return list(data.labels)
    feature = split.features.get(data.tags_column)
    names = getattr(getattr(feature, "feature", None), "names", None)
    if not names:
        raise TagError(
            f"data.labels: not set, and the {data.tags_column!r} column does not name its tags "
            "(no ClassLabel feature); list the tag names in id order, e.g. [O, B-PER, I-PER]"
        )
    return list(names)


def inside_ids(names: list[str]) -> list[int]:
    """For each tag id, the id a later sub-token of the same word gets: ``B-X`` -> ``I-X`` when
    the tag set has it, else the tag itself."""
    index = {name: i for i, name in enumerate(names)}
    return [
        index.get("I-" + name[2:], i) if name.startswith("B-") else i
        for i, name in enumerate(names)
    ]


def align(word_ids: list[int | None], word_tags: list[int], inside: list[int] | None) -> list[int]:
    """Labels per sub-token: the word's tag on its first sub-token, then -100 (``inside`` is
    None) or the word's inside tag; special tokens get -100."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORED)
        elif word != previous:
            labels.append(word_tags[word])
        else:
            labels.append(IGNORED if inside is None else inside[word_tags[word]])
        previous = word
    return labels


def tokenize_tagged(
    split: Any, data: DataSection, tokenizer: Any, names: list[str], name: str, workers: int | None
) -> Any:
    """The split as ``input_ids``, ``attention_mask`` and aligned ``labels``."""
    require_columns(split, data, name)
    if not getattr(tokenizer, "is_fast", False):
        raise TagError(
            "tokenizer: token classification needs a fast tokenizer (its word ids align tags "
            "with sub-tokens)"
        )
    ids = LabelIds(names, "tag", "data.tags_column", TagError)
    inside = inside_ids(names) if data.label_all_tokens else None

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        for words, tags in zip(batch[data.tokens_column], batch[data.tags_column], strict=True):
            if len(words) != len(tags):
                raise TagError(
                    f"data.tags_column: a sentence of {len(words)} words has {len(tags)} tags "
                    f"({' '.join(map(str, words))[:80]})"
                )
        encoded = tokenizer(
            batch[data.tokens_column],
            is_split_into_words=True,
            truncation=True,
            max_length=data.max_length,
        )
        encoded["labels"] = [
            align(encoded.word_ids(i), [ids.id_of(tag) for tag in tags], inside)
            for i, tags in enumerate(batch[data.tags_column])
        ]
        return encoded

    try:
        return split.map(
            encode,
            batched=True,
            remove_columns=split.column_names,
            num_proc=workers,
            desc=f"tokenizing {name}",
        )
    except ValueError as error:
        if "add_prefix_space" in str(error):
            raise TagError(
                "tokenizer: a byte-level BPE tokenizer takes words only with "
                "add_prefix_space=True (tokenizer.train.add_prefix_space, or a tokenizer saved "
                "with it)"
            ) from error
        raise
