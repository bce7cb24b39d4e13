"""``launcher tokenizer``."""

from __future__ import annotations

from pathlib import Path


def tokenizer(recipe: str, overrides: list[str], *, output: Path, smoke: bool = False) -> int:
    """Train or adjust the recipe's tokenizer.

    Args:
        output: folder to save it in
    """
    import shutil
    import tempfile

    from launcher.commands.resolve import resolve_plan
    from launcher.outputs import output_folder
    from launcher.ranks.tokenizer_stage import build_and_save_tokenizer

    output = output_folder(output, "the tokenizer")
    scratch = Path(tempfile.mkdtemp(prefix="launcher-tokenizer-"))
    try:
        resolved = resolve_plan(recipe, overrides, smoke=smoke, run_dir=scratch)
        build_and_save_tokenizer(resolved.plan, output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0
