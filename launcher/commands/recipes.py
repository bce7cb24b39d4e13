"""``launcher recipes``."""

from __future__ import annotations

from pathlib import Path

from launcher.errors import LauncherError


class RecipesUsageError(LauncherError):
    """``--copy`` without a file to write, or a file without ``--copy``."""

    exit_code = 2


def recipes(destination: Path | None = None, *, copy: str | None = None) -> int:
    """List the shipped recipes, or copy one to edit (--copy NAME DEST.yaml).

    Args:
        destination: with --copy: the new recipe file (.yaml or .yml), in a folder that exists
        copy: a shipped recipe to copy; `launcher plan DEST.yaml` then shows what you changed
    """
    if copy is not None or destination is not None:
        return copy_recipe(copy, destination)
    import yaml

    from launcher.recipe.loader import SHIPPED_RECIPES

    for path in sorted(SHIPPED_RECIPES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        print(f"{path.stem:<28} {data.get('description', '')}")
    return 0


def copy_recipe(name: str | None, destination: Path | None) -> int:
    """Write a copy of shipped recipe ``name`` at ``destination``, a new file; nothing is written
    when either is wrong."""
    import shlex

    from launcher.outputs import new_file, write_new_file
    from launcher.recipe.shipped import copy_text

    if name is None:
        raise RecipesUsageError(
            f"{destination}: which recipe goes there? launcher recipes --copy NAME {destination}"
        )
    if destination is None:
        raise RecipesUsageError(
            f"--copy {name}: name the file to write: launcher recipes --copy {name} my-recipe.yaml"
        )
    destination = destination.expanduser()
    text = copy_text(name, destination)  # an unknown name first: it lists the shipped ones
    destination = new_file(destination, "the recipe")
    if destination.suffix not in (".yaml", ".yml"):
        raise RecipesUsageError(
            f"{destination}: a recipe file's name ends in .yaml or .yml (`launcher plan NAME` "
            f"without one means a shipped recipe); e.g. {destination.with_suffix('.yaml')}"
        )
    write_new_file(destination, text, "the recipe")
    shown = shlex.quote(str(destination))
    print(f"wrote {destination}, a copy of {name}: `launcher plan {shown}` shows what you change")
    return 0
