"""The recipe's data: raw splits from the hub or local files, then tokenized for the task.

Hub ids and local files go through the same ``datasets.load_dataset`` call the user would write,
with split slices (``train[:1000]``) passed straight to it. Mistakes a user can make (a missing
file, a label that is not in ``data.labels``, a missing column) stop with the recipe key named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.errors import LauncherError
from launcher.recipe.checks import split_name
from launcher.recipe.schema import DataSection, Recipe

EXTENSION_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".text": "text",
}


class DataError(LauncherError):
    exit_code = 2


def load_raw_splits(data: DataSection) -> dict[str, Any]:
    """``{"train": Dataset, "eval": Dataset}`` (eval only when the recipe has evaluation data)."""
    splits = {"train": load_split(data, data.train_split, "data.train_split")}
    if data.eval_split:
        splits["eval"] = load_split(data, data.eval_split, "data.eval_split")
    elif data.eval_fraction:
        parts = splits["train"].train_test_split(
            test_size=data.eval_fraction, seed=data.shuffle_seed
        )
        splits = {"train": parts["train"], "eval": parts["test"]}
    if data.shuffle:
        splits["train"] = splits["train"].shuffle(seed=data.shuffle_seed)
    for name, split in splits.items():
        if data.text_column not in split.column_names:
            raise DataError(
                f"data.text_column: {data.text_column!r} is not a column of the {name} split "
                f"(columns: {', '.join(split.column_names)})"
            )
    return splits


def load_split(data: DataSection, split: str, key: str) -> Any:
    import datasets

    try:
        if data.files:
            builder, files = local_files(data, split_name(split))
            loaded = datasets.load_dataset(builder, data_files=files, split=split)
            if builder == "text" and data.text_column != "text":
                loaded = loaded.rename_column("text", data.text_column)
            return loaded.filter(lambda row: bool(row[data.text_column].strip()))
        return datasets.load_dataset(data.dataset, data.dataset_config, split=split)
    except LauncherError:
        raise
    except Exception as error:  # datasets raises many types for "cannot get it"
        source = "data.files" if data.files else f"data.dataset ({data.dataset!r})"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{key}: cannot load {split!r} from {source}: {first}") from error


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
                f"{', '.join(sorted(suffixes))}; set data.format to csv, json, parquet or text"
            )
        fmt = formats.pop() or "text"
    return fmt, {split: paths}


def encode_labels(split: Any, data: DataSection, name: str) -> Any:
    """Labels as ids in ``data.labels`` order; string labels are looked up by name."""
    if data.label_column not in split.column_names:
        raise DataError(
            f"data.label_column: {data.label_column!r} is not a column of the {name} split "
            f"(columns: {', '.join(split.column_names)})"
        )
    labels = data.labels or []
    index = {label: i for i, label in enumerate(labels)}
    lowered = {label.lower(): i for i, label in enumerate(labels)}

    def to_id(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise DataError(f"data.label_column: label {value!r} is neither a name nor an id")
        if isinstance(value, int):
            if not 0 <= value < len(labels):
                raise DataError(f"data.labels: label id {value} outside 0..{len(labels) - 1}")
            return value
        found = index.get(value, lowered.get(value.lower()))
        if found is None:
            raise DataError(f"data.labels: label {value!r} in the data is not one of {labels}")
        return found

    return split.map(
        lambda batch: {"labels": [to_id(v) for v in batch[data.label_column]]}, batched=True
    )


def tokenize_splits(recipe: Recipe, splits: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """Tokenized splits for the Trainer (SFT leaves tokenization and packing to TRL)."""
    data = recipe.data
    if recipe.task == "sft":
        return {name: split.select_columns([data.text_column]) for name, split in splits.items()}
    out = {}
    for name, split in splits.items():
        if recipe.task == "classification":
            split = encode_labels(split, data, name)
        keep = {"labels"} if recipe.task == "classification" else set()
        drop = [c for c in split.column_names if c not in keep]
        out[name] = split.map(
            lambda batch: tokenizer(
                batch[data.text_column],
                truncation=True,
                max_length=data.max_length,
                return_special_tokens_mask=recipe.task == "mlm",
            ),
            batched=True,
            remove_columns=drop,
            num_proc=data.num_proc,
            desc=f"tokenizing {name}",
        )
    return out


def training_texts(splits: dict[str, Any], column: str):
    """The training text, for tokenizer training (a fresh iterator each call)."""
    return (text for text in splits["train"][column] if text)
