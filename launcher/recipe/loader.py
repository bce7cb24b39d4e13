"""Recipe file + overrides -> a validated :class:`Recipe`.

One precedence rule, written once in :func:`layer_sources`: schema defaults < ``base:`` recipes
(outermost first) < the recipe file < ``key=value`` overrides. Each leaf value remembers which
source set it, so an error names the file (or "command line") the bad value came from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from launcher.errors import RecipeError, RecipeProblem
from launcher.recipe.checks import check_recipe
from launcher.recipe.schema import Recipe
from launcher.recipe.yaml_data import DuplicateKeyError, load_yaml

COMMAND_LINE = "command line"
MAX_BASE_DEPTH = 16


@dataclass
class LayeredRecipe:
    """The merged raw mapping, and for each dotted key path the source that set it."""

    data: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    main_source: str = COMMAND_LINE

    def source_of(self, key: str) -> str:
        """The source that set ``key``, or its nearest set parent, or else the recipe that ran."""
        parts = key.split(".")
        for end in range(len(parts), 0, -1):
            found = self.origin.get(".".join(parts[:end]))
            if found:
                return found
        return self.main_source


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, merge and validate a recipe; raise :class:`RecipeError` listing every problem."""
    layered, problems = layer_sources(Path(path), list(overrides))
    if problems:
        raise RecipeError(problems)
    recipe, problems = validate(layered)
    if problems:
        raise RecipeError(problems)
    return recipe


def layer_sources(path: Path, overrides: list[str]) -> tuple[LayeredRecipe, list[RecipeProblem]]:
    """Apply the precedence rule: bases, then the recipe, then the command-line overrides."""
    layered = LayeredRecipe(main_source=display_path(path))
    problems: list[RecipeProblem] = []
    chain, chain_problems = read_base_chain(path)
    problems += chain_problems
    for source, mapping in chain:
        merge_into(layered, mapping, source)
    parsed, override_problems = parse_overrides(overrides)
    problems += override_problems
    merge_into(layered, parsed, COMMAND_LINE)
    return layered, problems


def read_base_chain(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[RecipeProblem]]:
    """The recipe and its ``base:`` ancestors, outermost ancestor first."""
    chain: list[tuple[str, dict[str, Any]]] = []
    seen: list[Path] = []
    current: Path | None = path
    while current is not None:
        source = display_path(current)
        if current.resolve() in seen:
            cycle = " -> ".join(display_path(p) for p in [*seen, current.resolve()])
            return chain, [RecipeProblem(source, "base", f"inheritance cycle: {cycle}")]
        if len(seen) >= MAX_BASE_DEPTH:
            return chain, [RecipeProblem(source, "base", f"more than {MAX_BASE_DEPTH} bases")]
        seen.append(current.resolve())
        mapping, problem = read_yaml_mapping(current)
        if problem:
            return chain, [problem]
        base = mapping.pop("base", None)
        chain.insert(0, (source, mapping))
        current = None
        if base is not None:
            if not isinstance(base, str) or not base:
                return chain, [RecipeProblem(source, "base", f"{base!r}: must be a file path")]
            current = (seen[-1].parent / base) if not Path(base).is_absolute() else Path(base)
    return chain, []


def read_yaml_mapping(path: Path) -> tuple[dict[str, Any], RecipeProblem | None]:
    """Parse one YAML file as plain data (``safe_load``: no Python tags, nothing executed)."""
    source = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, RecipeProblem(source, "", "file not found")
    except (OSError, UnicodeDecodeError) as error:
        return {}, RecipeProblem(source, "", f"cannot be read as UTF-8 text ({error})")
    try:
        data = load_yaml(text)
    except DuplicateKeyError as error:
        message = f"given twice (again at line {error.line}); a later one would silently win"
        return {}, RecipeProblem(source, str(error.key), message)
    except yaml.YAMLError as error:
        return {}, RecipeProblem(source, "", f"invalid YAML: {yaml_error_summary(error)}")
    if data is None:
        return {}, RecipeProblem(
            source, "", "empty recipe: expected a mapping with `name` and `task`"
        )
    if not isinstance(data, dict):
        kind = type(data).__name__
        return {}, RecipeProblem(source, "", f"expected a mapping of recipe sections, got a {kind}")
    return data, None


def yaml_error_summary(error: yaml.YAMLError) -> str:
    """A one-line YAML error with the line and column, without PyYAML's multi-line dump."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)


def parse_overrides(overrides: list[str]) -> tuple[dict[str, Any], list[RecipeProblem]]:
    """``a.b=value`` strings -> a nested mapping; values are YAML scalars typed by the schema."""
    nested: dict[str, Any] = {}
    problems: list[RecipeProblem] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(
                RecipeProblem(COMMAND_LINE, key or item, f"{item!r}: overrides look like a.b=value")
            )
            continue
        parts = key.split(".")
        value = parse_value(raw)
        if is_text_field(parts) and value is not None:
            value = raw  # text fields take the text as written: `pad_token=[PAD]` is no list
        target = nested
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = value
    return nested, problems


def parse_value(raw: str) -> Any:
    """A YAML scalar or flow collection (``3e-4``, ``true``, ``[a, b]``); bad YAML stays text."""
    try:
        return load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def is_text_field(parts: list[str]) -> bool:
    """Whether the schema field at ``parts`` holds text: its value is then taken literally, so
    ``tokenizer.pad_token=[PAD]`` or ``data.dataset_config=2024`` mean what they say."""
    parent = schema_at(parts[:-1])
    field = parent.model_fields.get(parts[-1]) if parent else None
    if field is None:
        return False
    annotation = field.annotation
    return annotation is str or set(getattr(annotation, "__args__", ())) == {str, type(None)}


def merge_into(
    layered: LayeredRecipe, mapping: dict[str, Any], source: str, prefix: str = ""
) -> None:
    """Deep-merge ``mapping`` into ``layered``; mappings merge, everything else replaces."""
    target = layered.data
    for part in prefix.split(".") if prefix else []:
        target = target[part]
    for key, value in mapping.items():
        key = str(key)
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and isinstance(target.get(key), dict) and not is_free_form(path):
            merge_into(layered, value, source, path)
            continue
        if (
            value
            and isinstance(value, dict)
            and is_free_form(path)
            and isinstance(target.get(key), dict)
        ):
            # Free-form mappings merge one level deep; an explicit `{}` clears what a base set.
            target[key] = {**target[key], **value}
        else:
            target[key] = value
        layered.origin[path] = source


FREE_FORM_PATHS = ("model.config", "smoke.tiny_config", "data.files")


def is_free_form(path: str) -> bool:
    """Mappings whose keys the schema does not fix: merged one level deep, keys kept as given."""
    return path in FREE_FORM_PATHS


def validate(layered: LayeredRecipe) -> tuple[Recipe | None, list[RecipeProblem]]:
    """Type the merged mapping with the schema, then run the cross-field checks."""
    data = {
        key: {} if value is None and is_required_section(key) else value
        for key, value in layered.data.items()
    }
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        return None, [describe_validation_error(item, layered) for item in error.errors()]
    problems = [
        RecipeProblem(layered.source_of(key), key, message) for key, message in check_recipe(recipe)
    ]
    return recipe, problems


def describe_validation_error(
    item: Any, layered: LayeredRecipe, root: type[BaseModel] = Recipe
) -> RecipeProblem:
    """Turn one pydantic error into a sentence with the key path, the value and what is allowed."""
    location = [str(part) for part in item["loc"]]
    key = ".".join(location)
    kind = item["type"]
    if kind == "extra_forbidden":
        parent = schema_at(location[:-1], root)
        allowed = sorted(parent.model_fields) if parent else []
        close = closest_key(location[-1], allowed)
        hint = f"did you mean `{close}`? " if close else ""
        message = f"unknown key; {hint}allowed here: {', '.join(allowed)}"
    elif kind == "missing":
        message = "required, but not set"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"{item['input']!r}: expected a mapping of settings"
    else:
        message = f"{item['input']!r}: {lower_first(item['msg'])}"
    return RecipeProblem(layered.source_of(key), key, message)


def closest_key(key: str, allowed: list[str]) -> str | None:
    """The allowed key a typo most likely meant: by spelling, or by initials (`lr`)."""
    for name in allowed:
        if "_" in name and key == "".join(word[0] for word in name.split("_")):
            return name
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return close[0] if close else None


def is_required_section(key: str) -> bool:
    """Top-level sections (not optional ones like `tokenizer.train`): an empty one means defaults."""
    annotation = Recipe.model_fields[key].annotation if key in Recipe.model_fields else None
    return is_model(annotation)


def schema_at(location: list[str], root: type[BaseModel] = Recipe) -> type[BaseModel] | None:
    """The schema class of the section at ``location`` (for listing its allowed keys)."""
    model: type[BaseModel] = root
    for part in location:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        nested = next(
            (a for a in getattr(annotation, "__args__", (annotation,)) if is_model(a)), None
        )
        if nested is None:
            return None
        model = nested
    return model


def is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Key paths whose values differ between two nested mappings, as (key, old, new)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(old) + [k for k in new if k not in old]
        return [
            change
            for key in keys
            for change in differences(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def with_overrides(recipe: Recipe, overrides: list[str] | tuple[str, ...]) -> Recipe:
    """``recipe`` with already-validated command-line overrides applied once more on top."""
    parsed, _ = parse_overrides(list(overrides))
    layered = LayeredRecipe(data=recipe.model_dump(mode="json"))
    merge_into(layered, parsed, COMMAND_LINE)
    return Recipe.model_validate(layered.data)


def find_yaml(name: str, shipped: Path) -> Path:
    """A YAML path as given, or the file of that name in ``shipped`` (recipes, cluster profiles)."""
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    candidate = shipped / f"{name}.yaml"
    return candidate if candidate.exists() else path


def display_path(path: Path) -> str:
    """A path as the user wrote it when relative to the working directory, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())
