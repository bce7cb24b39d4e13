"""``launcher tokenizer``."""

from __future__ import annotations

from pathlib import Path


def tokenizer(
    recipe: str,
    overrides: list[str],
    *,
    output: Path,
    smoke: bool = False,
    sample: str | None = None,
) -> int:
    """Train or adjust the recipe's tokenizer (a full recipe, or one with only name, tokenizer
    and data).

    Args:
        output: folder to save it in
        sample: text to show as tokens and ids with the new tokenizer
    """
    import shutil
    import tempfile

    from launcher.commands.resolve import resolve_plan
    from launcher.errors import LauncherError
    from launcher.outputs import output_folder
    from launcher.ranks.tokenizer_stage import (
        build_and_save_tokenizer,
        build_and_save_tokenizer_only,
    )
    from launcher.recipe.loader import SHIPPED_RECIPES, find_yaml
    from launcher.recipe.tokenizer_recipe import load_tokenizer_recipe, tokenizer_only_file

    path = find_yaml(recipe, SHIPPED_RECIPES)
    if tokenizer_only_file(path):
        if smoke:
            raise LauncherError(
                "--smoke shrinks a run (model, data, steps); a tokenizer-only recipe has none of "
                "them: leave --smoke out (tokenizer.train.vocab_size=N makes it smaller)",
            )
        loaded = load_tokenizer_recipe(path, overrides)
        build_and_save_tokenizer_only(loaded, output_folder(output, "the tokenizer"), sample)
        return 0
    output = output_folder(output, "the tokenizer")
    scratch = Path(tempfile.mkdtemp(prefix="launcher-tokenizer-"))
    try:
        resolved = resolve_plan(recipe, overrides, smoke=smoke, run_dir=scratch)
        build_and_save_tokenizer(resolved.plan, output, sample)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0
