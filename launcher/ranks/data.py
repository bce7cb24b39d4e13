"""The recipe's data: raw splits from the hub or local files, then tokenized for the task (SFT:
also packed, exactly as TRL would). ``launcher.ranks.data_cache`` caches the result.

Hub ids and local files go through the same ``datasets.load_dataset`` call the user would write,
with split slices (``train[:1000]``) passed straight to it. Mistakes a user can make (a missing
file, a label that is not in ``data.labels``, a missing column) stop with the recipe key named.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from launcher.errors import LauncherError, first_line
from launcher.ranks.columns import not_a_column
from launcher.ranks.data_options import (
    fill_template,
    headerless_options,
    map_columns,
    take_samples,
)
from launcher.ranks.label_ids import LabelIds
from launcher.ranks.sft_samples import sample_format, sft_rows
from launcher.ranks.text_blocks import group_texts
from launcher.ranks.token_tags import (
    conll_column_names,
    require_columns,
    tag_names,
    tokenize_tagged,
)
from launcher.recipe.schema import DataSection, Recipe, split_name

EXTENSION_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".text": "text",
    ".conll": "conll",
}
# Default tokenizing processes: one per core, at most this many, with this many rows each at least.
MAX_AUTO_PROCESSES = 16
ROWS_PER_PROCESS = 10_000
# Rows per batch of a datasets map: its default batch_size, which TRL's pack_dataset keeps.
MAP_BATCH = 1000
# TRL's default packing strategy (SFTConfig.packing_strategy), the one the collator expects.
PACKING_STRATEGY = "bfd"


class DataError(LauncherError):
    exit_code = 2


def load_raw_splits(data: DataSection, words: bool = False) -> dict[str, Any]:
    """``{"train": Dataset, "eval": Dataset}`` (eval only when the recipe has evaluation data).

    ``words``: the rows are sentences of tagged words (token classification), not a text column."""
    if data.sources:  # several sources mixed into one training split
        from launcher.ranks.data_mixture import load_mixture

        splits = {"train": load_mixture(data, words)}
    else:
        splits = {"train": load_split(data, data.train_split, "data.train_split", words)}
    if data.eval_split:
        splits["eval"] = load_split(data, data.eval_split, "data.eval_split", words)
    elif data.eval_fraction:
        parts = splits["train"].train_test_split(
            test_size=data.eval_fraction, seed=data.shuffle_seed
        )
        splits = {"train": parts["train"], "eval": parts["test"]}
    splits = take_samples(splits, data)  # data.train_samples / eval_samples, after the hold-out
    if data.shuffle:
        splits["train"] = splits["train"].shuffle(seed=data.shuffle_seed)
    for name, split in splits.items():
        if words:
            require_columns(split, data, name)
        elif sample_format(split.column_names, data) == "text":
            require_text_column(split, data.text_column, name)
    return splits


def load_recipe_splits(recipe: Recipe) -> dict[str, Any]:
    """The recipe's raw splits, read as its task reads rows (text, or sentences of words)."""
    return load_raw_splits(recipe.data, words=recipe.task == "token_classification")


def require_text_column(split: Any, column: str, name: str) -> None:
    if column not in split.column_names:
        raise DataError(not_a_column("data.text_column", column, name, split.column_names))


def load_split(data: DataSection, split: str, key: str, words: bool = False) -> Any:
    import datasets

    try:
        if data.files:
            builder, files = local_files(data, split_name(split))
            options: dict[str, Any] = {}
            if builder == "csv":
                options["delimiter"] = csv_delimiter(data, files[split_name(split)])
                paths = files[split_name(split)]
                options.update(headerless_options(data, paths, options["delimiter"]))
            if builder == "conll":
                options["column_names"] = conll_column_names(data, files[split_name(split)])
                options["delimiter"] = data.delimiter
            loaded = datasets.load_dataset(builder, data_files=files, split=split, **options)
            if words:
                return loaded
            if builder == "text" and data.text_column != "text":
                loaded = loaded.rename_column("text", data.text_column)
            loaded = map_columns(loaded, data, split_name(split))
            if data.template:
                loaded = fill_template(loaded, data, split_name(split))
            if sample_format(loaded.column_names, data) != "text":
                return loaded  # conversations and prompt-completion pairs: read as they are
            column = data.text_column
            require_text_column(loaded, column, split_name(split))
            return loaded.filter(
                lambda batch: [bool(text.strip()) for text in batch[column]],
                batched=True,  # one call per 1,000 rows, not one per row
                desc=f"dropping empty lines of {split_name(split)}",
            )
        loaded = datasets.load_dataset(data.dataset, data.dataset_config, split=split)
        if not words:
            loaded = map_columns(loaded, data, split_name(split))
        if data.template and not words:
            loaded = fill_template(loaded, data, split_name(split))
        return loaded
    except LauncherError:
        raise
    except Exception as error:  # datasets raises many types for "cannot get it"
        source = "data.files" if data.files else f"data.dataset ({data.dataset!r})"
        raise DataError(
            f"{key}: cannot load {split!r} from {source}: {first_line(error)}"
        ) from error


def local_files(data: DataSection, split: str) -> tuple[str, dict[str, list[str]]]:
    """The ``load_dataset`` builder and data_files for one split of the recipe's local files."""
    assert data.files is not None
    value = data.files[split]
    paths = [value] if isinstance(value, str) else list(value)
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"data.files.{split}: {path} does not exist (or is not a file)")
    fmt = data.format
    if fmt == "auto":
        suffixes = {Path(p).suffix.lower() for p in paths}
        formats = {EXTENSION_FORMATS.get(s) for s in suffixes}
        if len(formats) != 1 or None in formats:
            raise DataError(
                f"data.format: cannot tell the format of {', '.join(paths)} from "
                f"{', '.join(sorted(suffixes))}; set data.format to csv, json, parquet, text or "
                "conll"
            )
        fmt = formats.pop() or "text"
    return fmt, {split: paths}


def csv_delimiter(data: DataSection, paths: list[str]) -> str:
    """``data.delimiter``, else a tab for ``.tsv`` files (tab-separated, as their name says),
    else a comma."""
    if data.delimiter:
        return data.delimiter
    return "\t" if all(Path(p).suffix.lower() == ".tsv" for p in paths) else ","


def encode_labels(split: Any, data: DataSection, name: str) -> Any:
    """Labels as ids in ``data.labels`` order; string labels are looked up by name."""
    if data.label_column not in split.column_names:
        raise DataError(
            not_a_column("data.label_column", data.label_column, name, split.column_names)
        )
    ids = LabelIds(data.labels or [], "label", "data.label_column", DataError)
    return split.map(
        lambda batch: {"labels": [ids.id_of(v) for v in batch[data.label_column]]}, batched=True
    )


def tokenize_splits(recipe: Recipe, splits: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """The splits as the Trainer reads them: token ids (SFT: packed as TRL packs them)."""
    data = recipe.data
    out = {}
    # MLM data.group_texts: whole texts (no truncation, no warning about their length), cut into
    # blocks of max_length after tokenizing (launcher.ranks.text_blocks).
    grouped = recipe.task == "mlm" and data.group_texts
    for name, split in splits.items():
        if recipe.task == "sft":
            out[name] = sft_rows(split, data, tokenizer, name)
            continue
        if recipe.task == "token_classification":
            names = tag_names(data, split)
            workers = processes(data, len(split))
            out[name] = tokenize_tagged(split, data, tokenizer, names, name, workers)
            continue
        if recipe.task == "classification":
            split = encode_labels(split, data, name)
        keep = {"labels"} if recipe.task == "classification" else set()
        drop = [c for c in split.column_names if c not in keep]
        out[name] = split.map(
            lambda batch: tokenizer(
                batch[data.text_column],
                truncation=not grouped,
                max_length=None if grouped else data.max_length,
                return_special_tokens_mask=recipe.task == "mlm",
                verbose=not grouped,
            ),
            batched=True,
            remove_columns=drop,
            num_proc=processes(data, len(split)),
            desc=f"tokenizing {name}",
        )
        if grouped:
            out[name] = group_texts(out[name], data.max_length, name)
    return out


def processes(data: DataSection, rows: int) -> int | None:
    """Processes that tokenize a split: ``data.num_proc``, or by default one per core this rank
    may use (its CPU affinity, which SLURM sets) for splits big enough to repay starting them.

    The rows come out the same with any count, so it is not part of the data cache key. Rank 0
    prepares while the other ranks of its node wait, so their cores are free. On 2 shared cores,
    50 MB of text prepared in 0.81 of the one-process time with two (benchmarks/data_prep.py).
    """
    if data.num_proc is not None:
        return data.num_proc
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = min(cores or 1, MAX_AUTO_PROCESSES, rows // ROWS_PER_PROCESS)
    return count if count > 1 else None


def pack_rows(rows: Any, max_length: int, workers: int | None, name: str) -> Any:
    """TRL's ``pack_dataset`` (bfd), in several processes, giving the rows one process gives.

    ``pack_dataset`` bins the samples of each map batch (``MAP_BATCH`` rows) on their own.
    ``datasets`` splits a dataset into equal shards for ``num_proc``, which moves the batch
    boundaries and so changes the rows; here each process packs a run of whole batches instead,
    and the runs are put back together in order.
    """
    import datasets
    from trl import pack_dataset

    batches = math.ceil(len(rows) / MAP_BATCH)
    per_process = math.ceil(batches / (workers or 1)) * MAP_BATCH
    if batches < 2 or not workers or workers < 2:
        return pack_dataset(rows, max_length, PACKING_STRATEGY, {"desc": f"packing {name}"})
    import multiprocessing

    starts = range(0, len(rows), per_process)
    runs = [rows.select(range(start, min(start + per_process, len(rows)))) for start in starts]
    jobs = [
        (run, max_length, PACKING_STRATEGY, {"desc": f"packing {name} ({i + 1}/{len(runs)})"})
        for i, run in enumerate(runs)
    ]
    with multiprocessing.Pool(len(runs)) as pool:
        packed = pool.starmap(pack_dataset, jobs, chunksize=1)
    return datasets.concatenate_datasets(packed)


def training_texts(recipe: Recipe, splits: dict[str, Any]) -> Iterator[str]:
    """The training text, for tokenizer training (a fresh iterator each call): the text column,
    each sentence's words joined by spaces (token classification), or the contents of SFT's
    conversations and prompt-completion pairs."""
    train = splits["train"]
    if recipe.task == "token_classification":
        return (" ".join(words) for words in train[recipe.data.tokens_column] if words)
    if recipe.task == "sft" and sample_format(train.column_names, recipe.data) != "text":
        return sample_texts(train)
    return (text for text in train[recipe.data.text_column] if text)


def sample_texts(split: Any) -> Iterator[str]:
    """The words of conversations and prompt-completion pairs: each message's content, or the
    prompt and the completion, one text each (a tokenizer trained on them learns no template)."""
    for column in ("messages", "prompt", "completion"):
        if column not in split.column_names:
            continue
        for value in split[column]:
            if isinstance(value, str):
                yield value
                continue
            for message in value or []:
                content = message.get("content", message.get("value"))
                if isinstance(content, str) and content:
                    yield content
