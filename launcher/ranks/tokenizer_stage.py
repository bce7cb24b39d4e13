"""The tokenizer stage: train (or load and adjust) the run's tokenizer once, save it, reuse it.

Global rank 0 builds it and saves it into the run directory; the other ranks, and every later
attempt of the same run, load that saved copy, so all ranks and all resumes use the same ids.
``launcher tokenizer`` runs the same stage alone. Either way the stage ends with one line saying
what it produced and where, e.g. ``tokenizer: wordpiece, 512 tokens, trained on 150.93 KiB
(4012 texts) in 0.4 s -> runs/mlm-scratch-smoke/tokenizer``. The trainers' progress bars show on
a terminal only.
"""

from __future__ import annotations

import shutil
import weakref
from pathlib import Path
from typing import Any

from launcher.ranks.data import load_recipe_splits, training_texts
from launcher.ranks.tokenizer import TextStats, prepare_tokenizer
from launcher.recipe.schema import Recipe
from launcher.units import format_bytes

# How each tokenizer built here came to be, for the summary line printed when it is saved.
ORIGINS: weakref.WeakKeyDictionary[Any, tuple[str, str]] = weakref.WeakKeyDictionary()


def build_tokenizer(recipe: Recipe, splits: dict[str, Any] | None) -> Any:
    """Train or load the recipe's tokenizer; ``splits`` supply the text when it is trained."""
    loaded: dict[str, Any] = {}

    def texts():
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
    )
    ORIGINS[tokenizer] = origin(recipe, stats)
    return tokenizer


def origin(recipe: Recipe, stats: TextStats) -> tuple[str, str]:
    """What kind of tokenizer, and how it was made (trained on how much text in how long)."""
    section = recipe.tokenizer
    if section.train is None:
        return f"loaded from {section.pretrained or recipe.model.pretrained}", ""
    kind = section.train.algorithm
    if kind == "retrain":
        kind = f"{section.pretrained} retrained"
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
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer.save_pretrained(partial)
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    print(summary(tokenizer, folder), flush=True)


def load_saved_tokenizer(folder: Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    # A tokenizer with its own code keeps that code (and needs the trust) when saved.
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)


def build_and_save_tokenizer(plan: Any, output: Path) -> None:
    """``launcher tokenizer``: the stage alone, saved in Hugging Face format to ``output``."""
    if plan.smoke and plan.recipe.data.files:
        from launcher.smoke_data import write_smoke_data

        write_smoke_data(plan.recipe, plan.layout.smoke_data_dir)
    tokenizer = build_tokenizer(plan.recipe, None)
    tokenizer.save_pretrained(output)
    print(summary(tokenizer, output))
