"""The tokenizer stage: train (or load and adjust) the run's tokenizer once, save it, reuse it.

Global rank 0 builds it and saves it into the run directory; the other ranks, and every later
attempt of the same run, load that saved copy, so all ranks and all resumes use the same ids.
``launcher tokenizer`` runs the same stage alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from launcher.ranks.data import load_raw_splits, training_texts
from launcher.ranks.tokenizer import describe, prepare_tokenizer
from launcher.recipe.schema import Recipe


def build_tokenizer(recipe: Recipe, splits: dict[str, Any] | None) -> Any:
    """Train or load the recipe's tokenizer; ``splits`` supply the text when it is trained."""
    loaded: dict[str, Any] = {}

    def texts():
        if "splits" not in loaded:
            loaded["splits"] = splits if splits is not None else load_raw_splits(recipe.data)
        return training_texts(loaded["splits"], recipe.data.text_column)

    return prepare_tokenizer(
        recipe.tokenizer,
        model_pretrained=recipe.model.pretrained,
        texts=texts,
        model_max_length=recipe.data.max_length,
        trust_remote_code=recipe.model.trust_remote_code,
    )


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """Save through a temporary folder and a rename: a half-written tokenizer is never loaded."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer.save_pretrained(partial)
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)


def load_saved_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def build_and_save_tokenizer(plan: Any, output: Path) -> None:
    """``launcher tokenizer``: the stage alone, saved in Hugging Face format to ``output``."""
    if plan.smoke and plan.recipe.data.files:
        from launcher.smoke_data import write_smoke_data

        write_smoke_data(plan.recipe, plan.layout.smoke_data_dir)
    tokenizer = build_tokenizer(plan.recipe, None)
    tokenizer.save_pretrained(output)
    print(f"tokenizer saved to {output}: {describe(tokenizer)}")
