"""A tokenizer-only recipe: ``name``, ``tokenizer`` and ``data``, for ``launcher tokenizer``.

Building a tokenizer needs no task, model or training settings, so a recipe that only builds one
need not invent them. A recipe with neither ``task`` nor ``model`` is read as this kind: its
sections are the full recipe's (same keys, same checks, same error messages), and everything
else is an unknown key. ``launcher run`` given one says what it is and which command builds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from launcher.errors import RecipeError, RecipeProblem
from launcher.recipe.schema import RUN_NAME, DataSection, Section, TokenizerSection, split_name

Problem = tuple[str, str]


class TokenizerRecipe(Section):
    name: str = Field(..., min_length=1, max_length=200, description="The tokenizer's name.")
    description: str = Field("", description="One line about it.")
    tokenizer: TokenizerSection = Field(
        default_factory=TokenizerSection, description="How text becomes ids."
    )
    data: DataSection = Field(
        default_factory=DataSection, description="The text a trained tokenizer learns from."
    )

    @field_validator("name")
    @classmethod
    def name_is_one_folder(cls, value: str) -> str:
        if not RUN_NAME.fullmatch(value) or value in {".", ".."}:
            raise ValueError(f"{value!r} is not a plain name: use letters, digits, '.', '_', '-'")
        return value


def is_tokenizer_only(data: Any) -> bool:
    """A recipe mapping without ``task`` and ``model``, with a ``tokenizer`` section."""
    return (
        isinstance(data, dict)
        and "task" not in data
        and "model" not in data
        and ("tokenizer" in data)
    )


def load_tokenizer_recipe(
    path: Path, overrides: list[str] | tuple[str, ...] = ()
) -> TokenizerRecipe:
    """Read, merge (``base:``, overrides) and check a tokenizer-only recipe, as ``load_recipe``
    does a full one; raise :class:`RecipeError` listing every problem."""
    from launcher.recipe.loader import describe_validation_errors, layer_sources

    layered, problems = layer_sources(path, list(overrides))
    if problems:
        raise RecipeError(problems)
    try:
        recipe = TokenizerRecipe.model_validate(layered.data)
    except ValidationError as error:
        raise RecipeError(
            describe_validation_errors(error.errors(), layered.data, layered, TokenizerRecipe)
        ) from None
    found = [
        RecipeProblem(layered.source_of(key), key, message)
        for key, message in tokenizer_recipe_problems(recipe)
    ]
    if found:
        raise RecipeError(found)
    return recipe


def tokenizer_recipe_problems(recipe: TokenizerRecipe) -> Iterator[Problem]:
    """The tokenizer rules of a full recipe, and the data a trained tokenizer reads."""
    from launcher.recipe.checks import data_source_problems, tokenizer_problems, unusable_path

    if recipe.tokenizer.train is None and not recipe.tokenizer.pretrained:
        yield "tokenizer", "set `pretrained` (hub id or folder) or `train` to train one on the data"
        return
    yield from tokenizer_problems(recipe.tokenizer, None)
    if recipe.tokenizer.train is None:
        return  # loaded, not trained: no text needed
    data = recipe.data
    yield from data_source_problems(data)
    if data.files:
        name = split_name(data.train_split)
        if name not in data.files:
            yield (
                "data.train_split",
                f"{data.train_split!r}: no such split in data.files (has: {', '.join(data.files)})",
            )
        for split, value in data.files.items():
            for index, path in enumerate([value] if isinstance(value, str) else value):
                key = f"data.files.{split}" + ("" if isinstance(value, str) else f".{index}")
                problem = unusable_path(path)
                if problem is None and not Path(path).is_file():
                    problem = f"{path}: no such file (relative paths are read from here)"
                if problem:
                    yield key, problem


def run_hint(problems: list[RecipeProblem], data: Any) -> list[RecipeProblem]:
    """For ``launcher run`` and ``plan``: a recipe without ``task`` and ``model`` is most likely
    a tokenizer-only one; its missing ``task`` says which command builds it."""
    if not is_tokenizer_only(data):
        return problems
    hint = (
        "required, but not set; this is a tokenizer-only recipe (no task, no model): "
        "`launcher tokenizer RECIPE -o FOLDER` builds its tokenizer"
    )
    return [RecipeProblem(p.source, p.key, hint) if p.key == "task" else p for p in problems]


def tokenizer_only_file(path: Path) -> bool:
    """Whether the recipe file at ``path`` (with its ``base:`` recipes) is tokenizer-only; a file
    that cannot be read is not, and the full loader then reports why."""
    from launcher.recipe.loader import read_base_chain

    chain, problems = read_base_chain(path)
    if problems or not chain:
        return False
    merged: dict[str, Any] = {}
    for _, mapping in chain:
        merged.update(mapping)
    return is_tokenizer_only(merged)
