"""Prepared data, cached across runs: tokenized (SFT: and packed) once, loaded after that.

A prepared copy lives in ``CACHE/KEY/`` (``save_to_disk``), where KEY hashes everything that shapes
its rows: the task, the tokenizer's saved files, the data, the split, shuffle and sample settings,
the columns, template and labels, ``max_length``, packing (SFT) or grouping (MLM), the library
versions that tokenize and pack, and :data:`PREP_VERSION`. Two runs of one recipe share a copy;
a change to any of those prepares anew.

Local files are keyed by a hash of their content, not by path, size and modification time:
sha256 reads about 1 GB/s here (0.05 s for 50 MB), two orders of magnitude faster than
tokenizing the same bytes, so the key stays cheap and is never fooled by a file rewritten with the
same size within the clock's resolution, or copied with its times kept (``cp -p``, ``rsync -t``);
and the same data in another place (a new run directory's smoke files) still hits. Hub datasets
are keyed by id, configuration, split and the fingerprint ``datasets`` gives the loaded split.

Global rank 0 prepares first (the caller holds ``main_process_first``). It writes into
``KEY.partial-HOST-PID/`` and renames that folder to ``KEY/`` in one step, so a killed preparation
leaves only a partial folder, never read and removed by the next preparation on that host; the
other ranks then find ``KEY/`` and load it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.paths import cache_home
from launcher.recipe.schema import Recipe, file_paths, split_name

# Bump when the preparation code changes what it writes: older copies then stop matching.
PREP_VERSION = 1
LARGE_SOURCE = 1 << 30  # hashing more than this many bytes of files is worth a log line


@dataclass
class Prepared:
    """The prepared splits and how they were had (``hit``: loaded from the cache)."""

    splits: dict[str, Any]
    key: str
    path: Path | None
    hit: bool
    seconds: float
    summary: dict[str, dict[str, int]] = field(default_factory=dict)


def cache_root(data: Any) -> Path | None:
    """Where prepared data lives, or None when the recipe turns the cache off.

    ``data.cache`` / ``data.cache_dir`` are read when the schema has them; without them the
    cache is on, in ``$LAUNCHER_CACHE/data`` or else ``$XDG_CACHE_HOME/launcher/data``
    (``~/.cache/launcher/data``): per user, so two runs of a recipe share it.
    """
    if not getattr(data, "cache", True):
        return None
    configured = getattr(data, "cache_dir", None)
    if configured:
        return Path(configured).expanduser()
    return cache_home() / "data"


def prepare(
    recipe: Recipe,
    tokenizer: Any,
    tokenizer_dir: Path,
    raw: dict[str, Any] | None = None,
    *,
    log: Callable[[str], None] = print,
    is_main: bool = True,
    root: Path | None = None,
    warn: Callable[[str], None] = lambda message: print(f"[launcher] {message}", flush=True),
) -> Prepared:
    """The recipe's splits ready for the Trainer: from the cache, or prepared (and cached).

    ``raw`` are the raw splits when the caller already loaded them (to train the tokenizer);
    otherwise they are loaded only on a cache miss (or to fingerprint a hub dataset). ``root``
    overrides :func:`cache_root`.
    """
    from launcher.ranks.data import load_recipe_splits, tokenize_splits

    started = time.perf_counter()
    loaded: dict[str, Any] = dict(raw or {})

    def raw_splits() -> dict[str, Any]:
        if not loaded:
            loaded.update(load_recipe_splits(recipe))
        return loaded

    key, description = cache_key(recipe, tokenizer_dir, raw_splits, log)
    root = root if root is not None else cache_root(recipe.data)
    folder = root / key if root is not None else None
    cached = load_cached(folder, log) if folder is not None else None
    if cached is not None:
        seconds = time.perf_counter() - started
        log(f"data: cache hit {key} ({folder}) in {seconds:.1f} s: " + summary_line(cached[1]))
        return Prepared(cached[0], key, folder, True, seconds, cached[1])

    if folder is not None and not is_main:  # each rank of a node that lacks the copy says so
        warn(
            f"data: warning: {key} is not in {root} after rank 0 prepared it; is that folder "
            "shared by all nodes? (set LAUNCHER_CACHE to a shared one). Preparing here too."
        )
    splits = tokenize_splits(recipe, raw_splits(), tokenizer)
    summary = summarize(splits, recipe.data.max_length)
    if folder is not None:
        store(folder, splits, description, summary)
        stored = load_cached(folder, log)  # memory-mapped from the copy, as the other ranks
        splits = stored[0] if stored is not None else splits
    seconds = time.perf_counter() - started
    where = f"cached in {folder}" if folder is not None else "not cached (data.cache off)"
    log(f"data: prepared {key} in {seconds:.1f} s, {where}: " + summary_line(summary))
    return Prepared(splits, key, folder, False, seconds, summary)


# --- the key ----------------------------------------------------------------------------------


def cache_key(
    recipe: Recipe,
    tokenizer_dir: Path,
    raw_splits: Callable[[], dict[str, Any]],
    log: Callable[[str], None] = print,
) -> tuple[str, dict[str, Any]]:
    """``TASK-HASH`` and the description it hashes (kept as ``key.json`` next to the data)."""
    data = recipe.data
    description: dict[str, Any] = {
        "version": PREP_VERSION,
        "task": recipe.task,
        "tokenizer": folder_digest(tokenizer_dir),
        "source": source_description(data, raw_splits, log),
        "train_split": data.train_split,
        "eval_split": data.eval_split,
        "eval_fraction": data.eval_fraction,
        "shuffle": data.shuffle,
        "shuffle_seed": data.shuffle_seed if seeded(data) else None,
        "text_column": data.text_column,
        "max_length": data.max_length,
        "libraries": library_versions(recipe.task),
    }
    if data.files:
        from launcher.ranks.data import csv_delimiter

        delimiter = csv_delimiter(data, file_paths(data.files))
        if delimiter != ",":  # a .tsv was once read with commas: not the same data
            description["delimiter"] = delimiter
    description.update(data_options(recipe))
    if recipe.task == "sft":
        from launcher.ranks.data import PACKING_STRATEGY

        description["packing"] = PACKING_STRATEGY if data.packing else False
    if recipe.task == "classification":
        description["label_column"] = data.label_column
        description["labels"] = data.labels
    if recipe.task == "token_classification":
        description["columns"] = [data.tokens_column, data.tags_column]
        description["labels"] = data.labels
        description["label_all_tokens"] = data.label_all_tokens
    text = json.dumps(description, sort_keys=True)
    return f"{recipe.task}-{hashlib.sha256(text.encode()).hexdigest()[:16]}", description


def seeded(data: Any) -> bool:
    """Whether ``data.shuffle_seed`` decides which rows are where (a shuffle, a hold-out, a
    random sample)."""
    return bool(data.shuffle or data.eval_fraction or data.train_samples or data.eval_samples)


def data_options(recipe: Recipe) -> dict[str, Any]:
    """The options that reshape rows (headerless columns, samples, template, MLM blocks, SFT's
    sample format, column mapping and loss masks), each only when set: a recipe without them
    keeps the key it had before they existed. The chat template is saved with the tokenizer, so
    the tokenizer's digest covers it."""
    data = recipe.data
    options: dict[str, Any] = {}
    if data.column_names:
        options["column_names"] = list(data.column_names)
    if data.train_samples:
        options["train_samples"] = data.train_samples
    if data.eval_samples:
        options["eval_samples"] = data.eval_samples
    if data.template and recipe.task != "token_classification":
        options["template"] = data.template
    if data.group_texts and recipe.task == "mlm":
        options["group_texts"] = True
    if recipe.task == "sft":  # conversations and prompt-completion pairs, and their masks
        if data.columns:
            options["columns"] = dict(sorted(data.columns.items()))
        if data.sample_format != "auto":
            options["sample_format"] = data.sample_format
        if data.loss_on != "auto":
            options["loss_on"] = data.loss_on
    return options


def folder_digest(folder: Path) -> str:
    """sha256 over the names and contents of a folder's files (a saved tokenizer)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(file_digest(path).encode() + b"\0")
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def source_description(
    data: Any, raw_splits: Callable[[], dict[str, Any]], log: Callable[[str], None]
) -> dict[str, Any]:
    """What the rows come from: local file contents, or a hub dataset's id and fingerprints."""
    if getattr(data, "sources", None):
        return mixture_description(data, raw_splits, log)
    if not data.files:
        fingerprints = {name: split._fingerprint for name, split in raw_splits().items()}
        return {
            "dataset": data.dataset,
            "config": data.dataset_config,
            "fingerprints": fingerprints,
        }
    from launcher.ranks.data import local_files

    used = [data.train_split] + ([data.eval_split] if data.eval_split else [])
    files: dict[str, list[str]] = {}
    fmt = ""
    for split in used:
        fmt, by_split = local_files(data, split_name(split))
        files.update(by_split)
    log_large_source(file_paths(files), log)
    return {
        "format": fmt,
        "files": {split: [file_digest(Path(p)) for p in ps] for split, ps in files.items()},
    }


def log_large_source(paths: list[str], log: Callable[[str], None]) -> None:
    size = sum(Path(p).stat().st_size for p in paths)
    if size > LARGE_SOURCE:
        log(f"data: hashing {len(paths)} file(s), {size / 2**30:.1f} GiB, for the cache key")


def file_digests(paths: list[str], log: Callable[[str], None]) -> list[str]:
    log_large_source(paths, log)
    return [file_digest(Path(p)) for p in paths]


def mixture_description(
    data: Any, raw_splits: Callable[[], dict[str, Any]], log: Callable[[str], None]
) -> dict[str, Any]:
    """``data.sources``: each source as its own rows are keyed (file contents, or hub id, config
    and split), with its columns, template, weight and sample count; how they are mixed; and, when
    a hub dataset is among them, the fingerprints of the mixed splits."""
    from launcher.ranks.data import csv_delimiter, local_files
    from launcher.recipe.data_sources import mix_mode, source_section

    sources = []
    for source in data.sources:
        section = source_section(data, source)
        described: dict[str, Any] = {
            "split": source.split,
            "text_column": section.text_column,
            "columns": section.columns,
            "template": section.template,
            "weight": source.weight,
            "samples": source.samples,
        }
        if section.files:
            fmt, files = local_files(section, split_name(source.split))
            described["format"] = fmt
            described["files"] = file_digests(file_paths(files), log)
            if fmt == "csv":
                described["delimiter"] = csv_delimiter(section, file_paths(files))
        else:
            described["dataset"], described["config"] = source.dataset, source.dataset_config
        sources.append(described)
    description: dict[str, Any] = {
        "sources": sources,
        "mix": mix_mode(data),
        "mix_stopping": data.mix_stopping,
        "mix_seed": data.shuffle_seed,  # interleaving, each source's shuffle and samples
    }
    if any(source.dataset for source in data.sources):
        description["fingerprints"] = {n: s._fingerprint for n, s in raw_splits().items()}
    return description


def library_versions(task: str) -> dict[str, str]:
    """Versions of the libraries whose code decides the prepared rows."""
    import datasets
    import tokenizers
    import transformers

    versions = {
        "datasets": datasets.__version__,
        "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
    }
    if task == "sft":
        import trl

        versions["trl"] = trl.__version__
    return versions


# --- the folder -------------------------------------------------------------------------------


def load_cached(
    folder: Path, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, dict[str, int]]] | None:
    """The cached splits and summary, or None when there is no complete copy."""
    import datasets

    if not (folder / "summary.json").is_file():
        return None
    try:
        loaded = datasets.load_from_disk(str(folder))
        summary = json.loads((folder / "summary.json").read_text())
    except Exception as error:  # damaged after it was written (a deleted file, a full disk)
        log(f"data: warning: cannot read the cached copy {folder} ({error}); preparing again")
        discard_cached_copy(folder)
        return None
    return dict(loaded), summary


def store(
    folder: Path,
    splits: dict[str, Any],
    description: dict[str, Any],
    summary: dict[str, dict[str, int]],
) -> None:
    """Write the prepared splits to ``folder`` through a partial folder and one rename."""
    import datasets

    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(folder)
    partial = folder.with_name(f"{folder.name}.partial-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    datasets.DatasetDict(splits).save_to_disk(str(partial))
    (partial / "key.json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    (partial / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    try:
        partial.rename(folder)
    except OSError:
        if (folder / "summary.json").is_file():  # another rank finished the same copy first
            shutil.rmtree(partial, ignore_errors=True)
            return
        discard_cached_copy(
            folder
        )  # a folder by that name that we did not write: not a copy of ours
        partial.rename(folder)


def remove_dead_partials(folder: Path) -> None:
    """Partial folders of ``folder`` left by processes of this host that no longer run."""
    host = socket.gethostname()
    for partial in folder.parent.glob(f"{folder.name}.partial-*"):
        owner_host, _, pid = partial.name.rsplit(".partial-", 1)[1].rpartition("-")
        if owner_host == host and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discard_cached_copy(folder: Path) -> None:
    """Delete a cached copy that is not (or no longer) ours to read: renamed first, so that no
    rank reads it half deleted."""
    broken = folder.with_name(f"{folder.name}.broken-{os.getpid()}")
    try:
        folder.rename(broken)
        shutil.rmtree(broken, ignore_errors=True)
    except OSError:
        pass  # another rank set it aside first


# --- the summary ------------------------------------------------------------------------------


def summarize(splits: dict[str, Any], max_length: int) -> dict[str, dict[str, int]]:
    """Rows and tokens of each split (counted in Arrow, without reading rows into Python)."""
    import pyarrow.compute as pc

    summary = {}
    for name, split in splits.items():
        lengths = pc.list_value_length(split.data.column("input_ids"))
        tokens = pc.sum(lengths).as_py() or 0
        summary[name] = {"rows": len(split), "tokens": int(tokens), "max_length": max_length}
    return summary


def summary_line(summary: dict[str, dict[str, int]]) -> str:
    """``train 42 rows, 2,655 tokens, padding 1.2% at 64``: the padding rows would need to
    reach ``max_length`` (packed rows are close to full; padding-free batches carry none)."""
    parts = []
    for name, numbers in summary.items():
        rows, tokens, max_length = numbers["rows"], numbers["tokens"], numbers["max_length"]
        padding = 1 - tokens / (rows * max_length) if rows else 0.0
        parts.append(
            f"{name} {rows:,} rows, {tokens:,} tokens, padding {padding:.1%} at {max_length}"
        )
    return "; ".join(parts)
