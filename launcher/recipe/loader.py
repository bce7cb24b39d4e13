"""Recipe file + overrides -> a validated :class:`Recipe`.

One precedence rule, written once in :func:`layer_sources`: schema defaults < ``base:`` recipes
(outermost first) < the recipe file < ``key=value`` overrides. Each leaf value remembers which
source set it, so an error names the file (or "command line") the bad value came from.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from launcher.errors import WHOLE_FILE, RecipeError, RecipeProblem
from launcher.recipe.checks import check_recipe
from launcher.recipe.names import elsewhere_message, synonym_target
from launcher.recipe.schema import Recipe
from launcher.recipe.yaml_data import MAX_BYTES, YamlProblem, load_yaml

# The recipes that ship with the launcher: the command line and `base:` take their names.
SHIPPED_RECIPES = Path(__file__).resolve().parent.parent.parent / "recipes"

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
    parsed, override_problems = parse_overrides(overrides)
    problems += override_problems
    for source, mapping in [*chain, (COMMAND_LINE, parsed)]:
        problems += accept_synonyms(mapping, source)
        merge_into(layered, mapping, source)
    return layered, problems


def accept_synonyms(mapping: dict[str, Any], source: str) -> list[RecipeProblem]:
    """Rename the names other tools use for a key of the same section, meaning the same
    (``training.num_train_epochs`` -> ``training.num_epochs``; ``names.KNOWN_NAMES``), in place;
    a problem where one source sets both names."""
    problems = []
    for section, keys in mapping.items():
        if not isinstance(keys, dict):
            continue
        for name in list(keys):
            own = synonym_target(str(section), str(name))
            if own is None:
                continue
            if own in keys:
                message = f"set twice, also as `{section}.{own}` (the same key); keep one"
                problems.append(RecipeProblem(source, f"{section}.{name}", message))
                continue
            keys[own] = keys.pop(name)
    return problems


def read_base_chain(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[RecipeProblem]]:
    """The recipe and its ``base:`` ancestors, outermost ancestor first."""
    chain: list[tuple[str, dict[str, Any]]] = []
    seen: list[Path] = []
    current: Path | None = path
    while current is not None:
        source = display_path(current)
        if resolved(current) in seen:
            cycle = " -> ".join(display_path(p) for p in [*seen, resolved(current)])
            return chain, [RecipeProblem(source, "base", f"inheritance cycle: {cycle}")]
        if len(seen) >= MAX_BASE_DEPTH:
            return chain, [RecipeProblem(source, "base", f"more than {MAX_BASE_DEPTH} bases")]
        seen.append(resolved(current))
        mapping, problem = read_yaml_mapping(current)
        if problem:
            return chain, [problem]
        base = mapping.pop("base", None)
        chain.insert(0, (source, mapping))
        current = None
        if base is not None:
            if not isinstance(base, str) or not base.strip():
                message = f"{base!r}: must be a recipe file's path or a shipped recipe's name"
                return chain, [RecipeProblem(source, "base", message)]
            current = (seen[-1].parent / base) if not Path(base).is_absolute() else Path(base)
            shipped = SHIPPED_RECIPES / (
                base if base.endswith((".yaml", ".yml")) else f"{base}.yaml"
            )
            if why_not_there(current) == "no such file" and "/" not in base and shipped.is_file():
                current = shipped  # `base: sft-mistral`, as the command line takes it
            missing = why_not_there(current)
            if missing:
                # Blame the line that names it: the base file itself has nothing to point into.
                shown = display_path(current)
                looked = f" (looked for {brief(shown)})" if shown != base else ""
                message = f"{brief(base)}: {missing}{looked}"
                if missing == "no such file" and not Path(base).suffix and "/" not in base:
                    message += ", nor a shipped recipe (`launcher recipes` lists them)"
                return chain, [RecipeProblem(source, "base", message)]
    return chain, []


def why_not_there(path: Path) -> str | None:
    """Why ``path`` cannot be opened as a file (missing, a folder, an impossible name), or None."""
    try:
        if path.is_dir():
            return "is a folder, not a recipe file"
        if path.is_symlink() and not path.exists():
            return "a symbolic link to nothing (or a loop of links)"
        return None if path.exists() else "no such file"
    except (OSError, ValueError) as error:  # a name too long, a NUL byte
        return f"not a usable file name ({getattr(error, 'strerror', None) or error})"


def read_yaml_mapping(path: Path) -> tuple[dict[str, Any], RecipeProblem | None]:
    """Parse one YAML file as plain data (see ``yaml_data``: no tags, bounded size and depth)."""
    source = display_path(path)
    text, problem = read_recipe_text(path)
    if problem:
        where, message = problem
        return {}, RecipeProblem(source, where, message)
    try:
        data = load_yaml(text)
    except YamlProblem as error:
        return {}, RecipeProblem(source, error.where, error.message)
    if data is None:
        message = "empty recipe: expected a mapping with `name` and `task`"
        return {}, RecipeProblem(source, WHOLE_FILE, message)
    if not isinstance(data, dict):
        kind = type(data).__name__
        message = f"expected a mapping of recipe sections, got a {kind}"
        return {}, RecipeProblem(source, WHOLE_FILE, message)
    return data, None


def read_recipe_text(path: Path) -> tuple[str, tuple[str, str] | None]:
    """The file's text, or (where, why not): missing, a folder, over the size limit, not UTF-8.

    The size is checked before anything is parsed, and the read itself is bounded, so that
    `/dev/zero` or a 50 GB file is refused at once instead of filling memory."""
    limit = (
        f"the limit is {MAX_BYTES // (1 << 20)} MiB (recipes are a few KB; data belongs in data "
        "files)"
    )
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return "", (WHOLE_FILE, f"{size / (1 << 20):,.1f} MiB is too big for a recipe; {limit}")
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return "", ("", "file not found")
    except IsADirectoryError:
        return "", ("", "is a folder, not a recipe file")
    except (OSError, ValueError) as error:  # no permission, a name too long, a NUL byte
        return "", ("", f"cannot be read ({getattr(error, 'strerror', None) or error})")
    if len(data) > MAX_BYTES:
        return "", (WHOLE_FILE, f"more than {MAX_BYTES:,} bytes; {limit}")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as error:
        start = error.start
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        message = f"not UTF-8 text (byte 0x{data[start]:02x}); a recipe is a YAML text file"
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            message += " (this one looks like UTF-16: save it as UTF-8)"
        return "", (f"line {line}, column {column}", message)


def parse_overrides(overrides: list[str]) -> tuple[dict[str, Any], list[RecipeProblem]]:
    """``a.b=value`` strings -> a nested mapping; values are YAML scalars typed by the schema."""
    nested: dict[str, Any] = {}
    problems: list[RecipeProblem] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(
                RecipeProblem(
                    COMMAND_LINE, key or item, f"{brief(item)}: overrides look like a.b=value"
                )
            )
            continue
        parts = key.split(".")
        if parts[0] == "base":
            message = "`base` is read from recipe files only; put it in a recipe that you run"
            problems.append(RecipeProblem(COMMAND_LINE, key, message))
            continue
        try:
            value = parse_value(raw)
        except YamlProblem as error:  # a tag, an alias bomb: refused here as in a file
            if not is_text_field(parts):
                message = f"{brief(raw)}: {error.message}"
                problems.append(RecipeProblem(COMMAND_LINE, key, message))
                continue
            value = raw
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
    """A YAML scalar or flow collection (``3e-4``, ``true``, ``[a, b]``); text that is not YAML
    stays text (``[PAD``); YAML that is refused (tags, limits) raises :class:`YamlProblem`."""
    try:
        return load_yaml(raw) if raw.strip() else None
    except YamlProblem as error:
        if error.refused:
            raise
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


FREE_FORM_PATHS = (
    "model.config", "smoke.tiny_config", "data.files", "training.extra", "distributed.deepspeed",
)  # fmt: skip


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
        from launcher.recipe.tokenizer_recipe import run_hint

        return None, run_hint(describe_validation_errors(error.errors(), data, layered), data)
    problems = [
        RecipeProblem(layered.source_of(key), key, message) for key, message in check_recipe(recipe)
    ]
    return recipe, problems


def describe_validation_errors(
    errors: list[Any], data: Any, layered: LayeredRecipe, root: type[BaseModel] = Recipe
) -> list[RecipeProblem]:
    """One problem per pydantic error, except that a value fitting none of a union's types (which
    pydantic reports once per type, under made-up keys like `train.list[str]`) is one problem."""
    order: list[RecipeProblem | str] = []  # a problem, or the key path of a union problem
    unions: dict[str, tuple[Any, list[str]]] = {}
    for item in errors:
        parts, member, value = locate(item["loc"], data)
        if member is None:
            order.append(describe_validation_error(item, layered, root, data))
            continue
        key = ".".join(parts)
        if key not in unions:
            unions[key] = (value, [])
            order.append(key)
        if member not in unions[key][1]:
            unions[key][1].append(member)

    def union_problem(key: str) -> RecipeProblem:
        value, members = unions[key]
        message = f"{brief(value)}: input should be {' or '.join(members)}"
        return RecipeProblem(layered.source_of(key), key, message)

    return [entry if isinstance(entry, RecipeProblem) else union_problem(entry) for entry in order]


def describe_validation_error(
    item: Any, layered: LayeredRecipe, root: type[BaseModel] = Recipe, data: Any = None
) -> RecipeProblem:
    """Turn one pydantic error into a sentence with the key path, the value and what is allowed."""
    location, _, _ = locate(item["loc"], layered.data if data is None else data)
    key = ".".join(location)
    kind = item["type"]
    if kind == "extra_forbidden":
        parent = schema_at(location[:-1], root)
        allowed = sorted(parent.model_fields) if parent else []
        message = f"unknown key; {unknown_key_hint(location, allowed, data)}" + ", ".join(allowed)
    elif kind == "missing":
        message = "required, but not set"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"{brief(item['input'])}: expected a mapping of settings"
    elif item["loc"] and item["loc"][-1] == "[key]" and kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", item["ctx"]["expected"])
        close = difflib.get_close_matches(str(item["input"]), allowed, n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        message = f"{brief(item['input'])}: not a key here; {hint}allowed: {', '.join(allowed)}"
    elif item["loc"] and item["loc"][-1] == "[key]":
        message = f"{brief(item['input'])}: keys here must be text (put it in quotes)"
    elif kind in ("value_error", "assertion_error"):
        # The schema's own validators name the value in their message.
        message = VALIDATOR_PREFIX.sub("", item["msg"])
    else:
        message = f"{brief(item['input'])}: {lower_first(item['msg'])}"
    return RecipeProblem(layered.source_of(key), key, message)


VALIDATOR_PREFIX = re.compile(r"^(Value error|Assertion failed), ")
MISSING = object()
# How pydantic names the member types of a union in an error location (no recipe key looks so).
UNION_MEMBER = re.compile(r"^(str|int|float|bool|list|dict|none)(\[.*\])?$")


def locate(loc: tuple[Any, ...], data: Any) -> tuple[list[str], str | None, Any]:
    """Follow a pydantic error location through the data that was validated: the key path (as
    the user wrote it), the union member pydantic named if any (`str`, `list[str]`: a type, not
    a key), and the value at the key path."""
    parts: list[str] = []
    current = data
    for part in loc:
        if part == "[key]":
            break
        if isinstance(current, dict) and part not in current and UNION_MEMBER.match(str(part)):
            return parts, str(part), current  # a mapping where a union wants `str` or a list
        if isinstance(current, dict) or current is MISSING:
            current = current.get(part, MISSING) if isinstance(current, dict) else MISSING
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            current = current[part]
        else:
            return parts, str(part), current
        parts.append(str(part) if str(part) else '""')
    return parts, None, current


def brief(value: Any, limit: int = 80) -> str:
    """``repr(value)``, shortened: an error line quotes the value, not a megabyte of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text):,} chars)"


def unknown_key_hint(location: list[str], allowed: list[str], data: Any) -> str:
    """What an unknown key most likely means, ending in "allowed here: ": another tool's name
    for a recipe key (``names``), a Trainer or DeepSpeed setting with no recipe key (which goes
    in ``training.extra`` or ``distributed.deepspeed``), or a typo of an allowed key."""
    from launcher.library_fields import deepspeed_keys, trainer_fields

    key, name = ".".join(location), location[-1]
    elsewhere = elsewhere_message(key, name)
    if elsewhere:
        return f"{elsewhere}; allowed here: "
    sft = isinstance(data, dict) and data.get("task") == "sft"
    if location[:-1] == ["training"] and name in (trainer_fields(sft) or ()):
        return (
            f"a Trainer argument without a recipe key: pass it as `training.extra.{name}`; "
            "allowed here: "
        )
    deepspeed = deepspeed_keys()
    if location[:-1] == ["distributed"] and deepspeed and name in deepspeed.top:
        return "a DeepSpeed setting: put it under `distributed.deepspeed`; allowed here: "
    close = closest_key(name, allowed)
    return f"did you mean `{close}`? allowed here: " if close else "allowed here: "


def closest_key(key: str, allowed: list[str]) -> str | None:
    """The allowed key a typo most likely meant: by spelling, or by initials (`lr`)."""
    for name in allowed:
        if "_" in name and key == "".join(word[0] for word in name.split("_")):
            return name
    close = difflib.get_close_matches(key, allowed, n=len(allowed), cutoff=0.6)
    # Similar-looking names tie (`mokel`: `model` and `smoke`); the fewest edits wins.
    return min(close, key=lambda name: edit_distance(key, name)) if close else None


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, with a swap of two neighbours counting as one edit."""
    rows = [list(range(len(b) + 1))]
    for i, x in enumerate(a, 1):
        row = [i]
        for j, y in enumerate(b, 1):
            row.append(min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (x != y)))
            if i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def is_required_section(key: str) -> bool:
    """Top-level sections (not optional ones like `tokenizer.train`): an empty one means defaults."""
    annotation = Recipe.model_fields[key].annotation if key in Recipe.model_fields else None
    return is_model(annotation)


def schema_at(location: list[str], root: type[BaseModel] = Recipe) -> type[BaseModel] | None:
    """The schema class of the section at ``location`` (for listing its allowed keys)."""
    model: type[BaseModel] = root
    for part in location:
        if part.isdigit():  # an item of a list of sections (`data.sources.0`)
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        shapes = getattr(annotation, "__args__", (annotation,))
        items = [inner for shape in shapes for inner in getattr(shape, "__args__", ())]
        nested = next((a for a in [*shapes, *items] if is_model(a)), None)
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
    accept_synonyms(parsed, COMMAND_LINE)
    layered = LayeredRecipe(data=recipe.model_dump(mode="json"))
    merge_into(layered, parsed, COMMAND_LINE)
    return Recipe.model_validate(layered.data)


def find_yaml(name: str, shipped: Path) -> Path:
    """A YAML path as given, or the file of that name in ``shipped`` (recipes, cluster profiles)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or why_not_there(path) != "no such file":
        return path  # reading it reports what is wrong with it, if anything
    candidate = shipped / f"{name}.yaml"
    return candidate if candidate.exists() else path


def display_path(path: Path) -> str:
    """A path as the user wrote it when relative to the working directory, else absolute."""
    try:
        return str(resolved(path).relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved(path))


def resolved(path: Path) -> Path:
    """``path.resolve()``, or the absolute path when it cannot be resolved (a loop of links, a
    NUL byte): reading it then says what is wrong, instead of a traceback here."""
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError):
        return path.absolute()
