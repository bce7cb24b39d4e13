"""The field names of ``TrainingArguments``, TRL's ``SFTConfig`` and DeepSpeed's config, read from
the installed packages' source without importing them.

``training.extra`` and ``distributed.deepspeed`` pass settings through to those libraries; a
misspelt name must be refused at plan time, naming the key path, and planning must stay free of
torch (importing ``transformers.TrainingArguments`` takes seconds). So the fields are read from
the source files with ``ast`` and cached per file version in the launcher's cache
(``paths.cache_home()/fields``: about 50 ms the first time, a small JSON read afterwards). A
package that is not installed gives no list (None): the ranks' own libraries then check what
they are given.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from launcher.files import write_text_atomic
from launcher.paths import cache_home

# Where each list is read: (package, source file inside it, classes whose fields count).
TRAINING_ARGUMENTS = ("transformers", "training_args.py", ("TrainingArguments",))
SFT_CONFIG = (
    ("trl", "trainer/base_config.py", ("_BaseConfig",)),
    (
        "trl",
        "trainer/sft_config.py",
        ("SFTConfig",),
    ),
)
DEEPSPEED_ZERO = ("deepspeed", "runtime/zero/config.py", ("DeepSpeedZeroConfig",))
DEEPSPEED_OFFLOAD = (
    "deepspeed",
    "runtime/zero/offload_config.py",
    ("DeepSpeedZeroOffloadParamConfig", "DeepSpeedZeroOffloadOptimizerConfig"),
)


@dataclass(frozen=True)
class DeepSpeedKeys:
    """The keys DeepSpeed reads: at the top of its JSON (every string constant of its
    ``*constants.py`` modules and config models: a superset, enough to catch a misspelling),
    under ``zero_optimization`` (its pydantic model's fields and aliases) and in the offload
    sections."""

    top: frozenset[str]
    zero: frozenset[str]
    offload: frozenset[str]


@cache
def trainer_fields(sft: bool) -> frozenset[str] | None:
    """``TrainingArguments``' fields, with ``SFTConfig``'s for SFT; None when not installed."""
    fields = class_fields(*TRAINING_ARGUMENTS)
    if fields is None:
        return None
    if sft:
        for source in SFT_CONFIG:
            fields |= class_fields(*source) or frozenset()
    return fields


@cache
def trainer_field_types(sft: bool) -> dict[str, str]:
    """Each Trainer argument's annotation as written in the source (``float | None``)."""
    types: dict[str, str] = {}
    for package, source, classes in (TRAINING_ARGUMENTS, *(SFT_CONFIG if sft else ())):
        path = source_file(package, source)
        if path is not None:
            key = (*classes, "types")
            types.update(cached(path, key, lambda p=path, c=classes: parse_types(parsed(p), c)))
    return types


# What a plain annotation admits, for the values a recipe can hold (YAML scalars).
SIMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,), "int": (int,), "float": (int, float), "str": (str,),
    "None": (type(None),), "list[str]": (list,), "dict": (dict,),
}  # fmt: skip


def admits(annotation: str, value: object) -> bool | None:
    """Whether a value fits an annotation made of plain types (``float | None``, ``bool``);
    None where the annotation says more than that (enums, unions with classes): not checked."""
    if annotation.startswith("Optional[") and annotation.endswith("]"):
        annotation = f"None | {annotation[len('Optional[') : -1]}"
    parts = [part.strip() for part in annotation.split("|")]
    if not all(part in SIMPLE_TYPES for part in parts):
        return None
    for part in parts:
        kinds = SIMPLE_TYPES[part]
        if isinstance(value, bool) and bool not in kinds:
            continue  # YAML's true is no number
        if isinstance(value, kinds):
            return True
    return False


@cache
def deepspeed_keys() -> DeepSpeedKeys | None:
    zero = class_fields(*DEEPSPEED_ZERO)
    offload = class_fields(*DEEPSPEED_OFFLOAD)
    top = deepspeed_constants()
    if zero is None or offload is None or top is None:
        return None
    return DeepSpeedKeys(top=top | zero, zero=zero, offload=offload)


def package_folder(package: str) -> Path | None:
    """The installed package's folder, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def source_file(package: str, source: str) -> Path | None:
    """``package/source`` in the installed package, or None."""
    folder = package_folder(package)
    path = folder / source if folder else None
    return path if path is not None and path.is_file() else None


def class_fields(package: str, source: str, classes: tuple[str, ...]) -> frozenset[str] | None:
    """The annotated fields of ``classes`` in ``package/source`` (and their ``alias=`` names)."""
    path = source_file(package, source)
    if path is None:
        return None
    return frozenset(cached(path, classes, lambda: parse_fields(parsed(path), classes)))


def deepspeed_constants() -> frozenset[str] | None:
    """Cached as one list under DeepSpeed's ``__init__.py`` (rewritten by every install)."""
    folder = package_folder("deepspeed")
    if folder is None or not (folder / "__init__.py").is_file():
        return None

    def parse_all() -> list[str]:
        names: set[str] = set()
        for path in sorted(folder.rglob("*constants*.py")) + sorted(folder.rglob("*config*.py")):
            if "ops" not in path.relative_to(folder).parts[:1]:  # kernels, not config
                names.update(parse_constants(path))
        return sorted(names)

    return frozenset(cached(folder / "__init__.py", ("constants",), parse_all))


def annotated_fields(tree: ast.Module, classes: tuple[str, ...]) -> Iterator[ast.AnnAssign]:
    """The ``name: annotation = ...`` statements of ``classes`` (dataclass and pydantic fields)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in classes:
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                    yield statement


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def parse_types(tree: ast.Module, classes: tuple[str, ...]) -> dict[str, str]:
    return {
        statement.target.id: ast.unparse(statement.annotation)  # type: ignore[union-attr]
        for statement in annotated_fields(tree, classes)
    }


def parse_fields(tree: ast.Module, classes: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for statement in annotated_fields(tree, classes):
        name = statement.target.id  # type: ignore[union-attr]
        if not name.startswith("_") and name != "model_config":
            names.append(name)
        names += field_aliases(statement.value)
    return names


def field_aliases(value: ast.expr | None) -> list[str]:
    """``Field(..., alias="stage3_prefetch_bucket_size")``: the name DeepSpeed's JSON uses."""
    if not isinstance(value, ast.Call):
        return []
    return [
        keyword.value.value
        for keyword in value.keywords
        if keyword.arg == "alias"
        and isinstance(keyword.value, ast.Constant)
        and isinstance(keyword.value.value, str)
    ]


def parse_constants(path: Path) -> list[str]:
    """String values of UPPER_CASE module constants, and the fields of pydantic config models
    (``class XConfig(DeepSpeedConfigModel)``): the names of DeepSpeed's JSON keys."""
    try:
        tree = parsed(path)
    except (SyntaxError, UnicodeDecodeError, OSError):
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            value = node.value.value
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if isinstance(value, str) and any(t.isupper() for t in targets):
                names.append(value)
        elif isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
            names += parse_fields(tree, (node.name,))
    for node in ast.walk(tree):  # param_dict.get("compile", {}), param_dict["fp16"]
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "get" and node.args:
            key = node.args[0]
        elif isinstance(node, ast.Subscript):
            key = node.slice
        else:
            continue
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.append(key.value)
    removed = removed_keys(tree)
    return [name for name in names if name.isidentifier() and name not in removed]


def removed_keys(tree: ast.Module) -> set[str]:
    """``_REMOVED_TOP_LEVEL_CONFIG_KEYS``: blocks DeepSpeed refuses since it dropped them."""
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(getattr(t, "id", "").startswith("_REMOVED") for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return set()


def cached(path: Path, classes: tuple[str, ...], parse):  # type: ignore[no-untyped-def]
    """``parse()`` (a JSON value), cached under the file's path, size and modification time."""
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{','.join(classes)}"
    folder = cache_home() / "fields"
    entry = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    try:
        stored = json.loads(entry.read_text())
        if stored.get("key") == key:
            return stored["value"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    value = parse()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(entry, json.dumps({"key": key, "value": value}))
    except OSError:
        pass  # a read-only home: parsed again next time
    return value
