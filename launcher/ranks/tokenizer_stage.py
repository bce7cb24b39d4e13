"""The tokenizer stage: train (or load and adjust) the run's tokenizer once, save it, reuse it.

Global rank 0 builds it and saves it into the run directory; the other ranks, and every later
attempt of the same run, load that saved copy, so all ranks and all resumes use the same ids.
A trained tokenizer also goes into the tokenizer cache (``tokenizer_cache``), so that the next
run of the same recipe on the same text gets the same one. ``launcher tokenizer`` runs the same
stage alone, for a full recipe or a tokenizer-only one (``recipe/tokenizer_recipe.py``).

Either way the stage ends with one line saying what it produced and where, e.g. ``tokenizer:
wordpiece, 512 tokens, trained on 150.93 KiB (4012 texts) in 0.4 s -> runs/mlm-scratch-smoke/
tokenizer``. The saved folder holds ``tokenizer.json`` and the model's own files (``vocab.json``
and ``merges.txt`` for BPE, ``vocab.txt`` for WordPiece), which the ``tokenizers`` library's
classes (``ByteLevelBPETokenizer(vocab, merges)``) read. The trainers' progress bars show on a
terminal only.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from launcher.files import write_folder_atomic
from launcher.ranks import tokenizer_cache
from launcher.ranks.data import load_raw_splits, load_recipe_splits, local_files, training_texts
from launcher.ranks.tokenizer import TextStats, prepare_tokenizer
from launcher.recipe.schema import DataSection, Recipe, TokenizerSection, split_name
from launcher.recipe.tokenizer_recipe import TokenizerRecipe
from launcher.units import format_bytes

# How each tokenizer built here came to be, for the summary line printed when it is saved.
ORIGINS: weakref.WeakKeyDictionary[Any, tuple[str, str]] = weakref.WeakKeyDictionary()


def build_tokenizer(recipe: Recipe, splits: dict[str, Any] | None) -> Any:
    """Train or load the recipe's tokenizer; ``splits`` supply the text when it is trained."""
    loaded: dict[str, Any] = {}

    def texts() -> Iterator[str]:
        if "splits" not in loaded:
            loaded["splits"] = splits if splits is not None else load_recipe_splits(recipe)
        return training_texts(recipe, loaded["splits"])

    stats = TextStats()
    tokenizer = prepare_tokenizer(
        recipe.tokenizer,
        model_pretrained=recipe.model.pretrained,
        texts=texts,
        model_max_length=recipe.data.max_length,
        trust_remote_code=recipe.model.trust_remote_code,
        stats=stats,
        files=training_files(recipe.tokenizer, recipe.data, recipe.task),
        cache=tokenizer_cache.cache_root(),
    )
    ORIGINS[tokenizer] = origin(recipe.tokenizer, recipe.model.pretrained, stats)
    return tokenizer


def build_tokenizer_only(recipe: TokenizerRecipe) -> Any:
    """The tokenizer of a tokenizer-only recipe: its text is the training split's text column."""
    loaded: dict[str, Any] = {}

    def texts() -> Iterator[str]:
        if "splits" not in loaded:
            loaded["splits"] = load_raw_splits(recipe.data)
        return (text for text in loaded["splits"]["train"][recipe.data.text_column] if text)

    stats = TextStats()
    # No model to fit: a length cut-off only when the recipe sets one.
    max_length = recipe.data.max_length if "max_length" in recipe.data.model_fields_set else None
    tokenizer = prepare_tokenizer(
        recipe.tokenizer,
        model_pretrained=None,
        texts=texts,
        model_max_length=max_length,
        stats=stats,
        files=training_files(recipe.tokenizer, recipe.data, None),
        cache=tokenizer_cache.cache_root(),
    )
    ORIGINS[tokenizer] = origin(recipe.tokenizer, None, stats)
    return tokenizer


def training_files(section: TokenizerSection, data: DataSection, task: str | None) -> list[str]:
    """The local text files whose lines are all of a pipeline's training text, or none.

    A pipeline trains on them as the library's ``Tokenizer.train(files)`` does, line ends and
    empty lines included: fed as rows (line ends dropped), the byte-level vocabulary differs.
    Any selection of rows (a slice, a hold-out, a sample, a template) keeps the rows instead."""
    if section.train is None or section.train.algorithm != "pipeline":
        return []
    if not data.files or task == "token_classification":
        return []
    split = data.train_split
    if split_name(split) != split.strip() or data.eval_fraction or data.train_samples:
        return []
    if data.template or data.column_names:
        return []
    builder, files = local_files(data, split_name(split))
    return list(files[split_name(split)]) if builder == "text" else []


def origin(
    section: TokenizerSection, model_pretrained: str | None, stats: TextStats
) -> tuple[str, str]:
    """What kind of tokenizer, and how it was made (trained on how much text in how long)."""
    if section.train is None:
        return f"loaded from {section.pretrained or model_pretrained}", ""
    kind = section.train.algorithm
    if kind == "retrain":
        kind = f"{section.pretrained} retrained"
    if kind == "pipeline" and section.train.pipeline is not None:
        kind = f"pipeline ({(section.train.pipeline.model or {}).get('type')})"
    if stats.cached is not None:
        return kind, f"from the tokenizer cache ({stats.cached})"
    size = format_bytes(stats.bytes)
    took = f"{stats.seconds:.1f} s" if stats.seconds >= 0.1 else f"{stats.seconds * 1000:.0f} ms"
    return kind, f"trained on {size} ({stats.texts} texts) in {took}"


def summary(tokenizer: Any, folder: Path) -> str:
    """The stage's one line: what it produced, how, and where it is."""
    kind, how = ORIGINS.get(tokenizer, (type(tokenizer).__name__, ""))
    made = f", {how}" if how else ""
    return f"tokenizer: {kind}, {len(tokenizer)} tokens{made} -> {folder}"


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """Save through a temporary folder and a rename: a half-written tokenizer is never loaded."""
    write_folder_atomic(folder, lambda partial: save_with_model_files(tokenizer, partial))
    print(summary(tokenizer, folder), flush=True)


def save_with_model_files(tokenizer: Any, folder: Path) -> None:
    """``save_pretrained``, plus the model's own files (``model.save``: ``vocab.json`` and
    ``merges.txt`` for BPE, ``vocab.txt`` for WordPiece) where that left none of that name."""
    tokenizer.save_pretrained(folder)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return
    with tempfile.TemporaryDirectory(dir=folder, prefix=".model-files-") as scratch:
        for written in backend.model.save(scratch):
            target = folder / Path(written).name
            if not target.exists():
                shutil.move(written, target)


def load_saved_tokenizer(folder: Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    # A tokenizer with its own code keeps that code (and needs the trust) when saved.
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)


def build_and_save_tokenizer(plan: Any, output: Path, sample: str | None = None) -> None:
    """``launcher tokenizer`` with a full recipe: the stage alone, saved to ``output``."""
    if plan.smoke and (plan.recipe.data.files or plan.recipe.data.sources):
        from launcher.smoke_data import write_smoke_data

        write_smoke_data(plan.recipe, plan.layout.smoke_data_dir)
    finish(build_tokenizer(plan.recipe, None), output, sample)


def build_and_save_tokenizer_only(
    recipe: TokenizerRecipe, output: Path, sample: str | None = None
) -> None:
    """``launcher tokenizer`` with a tokenizer-only recipe."""
    finish(build_tokenizer_only(recipe), output, sample)


def finish(tokenizer: Any, output: Path, sample: str | None) -> None:
    """Save to ``output``, then say what was made, its vocabulary size and the sample's ids."""
    save_with_model_files(tokenizer, output)
    print(summary(tokenizer, output))
    print(f"vocabulary size: {len(tokenizer)}")
    if sample is not None:
        print(describe_sample(tokenizer, sample))


def describe_sample(tokenizer: Any, text: str) -> str:
    """The tokens and ids of ``text``, as the model receives them (special tokens included)."""
    ids = tokenizer(text).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    return f"sample: {text!r}\n  tokens: {tokens}\n  ids: {ids}"
