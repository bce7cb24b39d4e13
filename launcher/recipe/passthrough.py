"""Checks of what a recipe passes through to the libraries: ``training.extra`` (Trainer
arguments) and ``distributed.deepspeed`` (merged into the generated DeepSpeed JSON).

Each name is checked against the installed libraries' own field lists (``launcher.library_fields``,
read from their source, no torch), so that a misspelling is refused at plan time with its key
path instead of failing inside every rank, or, for DeepSpeed's top level, being ignored. Settings
the recipe or the launcher own (batch sizes, precision, the ZeRO stage, output and resume) are
refused with the key to use: the batch arithmetic and the plan stay the launcher's.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from typing import Any

from launcher.library_fields import admits, deepspeed_keys, trainer_field_types, trainer_fields
from launcher.recipe.names import trainer_field_owner
from launcher.recipe.schema import Recipe

Problem = tuple[str, str]

# DeepSpeed settings the plan writes from recipe keys: changing them in `distributed.deepspeed`
# would make the plan (batch arithmetic, memory, precision) lie.
DEEPSPEED_OWNED: dict[str, str] = {
    "train_batch_size": "`training.per_device_batch_size` x `gradient_accumulation_steps` x the "
    "world size",
    "train_micro_batch_size_per_gpu": "`training.per_device_batch_size`",
    "gradient_accumulation_steps": "`training.gradient_accumulation_steps`",
    "gradient_clipping": "`training.max_grad_norm`",
    "optimizer": "`training.optimizer` (the Trainer builds it; DeepSpeed wraps it)",
    "scheduler": "`training.lr_scheduler` (the Trainer builds it)",
    "bf16.enabled": "`training.precision`",
    "fp16.enabled": "`training.precision`",
    "zero_optimization.stage": "`distributed.zero_stage`",
    "zero_optimization.offload_optimizer.device": "`distributed.offload_optimizer`",
    "zero_optimization.offload_param.device": "`distributed.offload_parameters`",
    "checkpoint.use_node_local_storage": "`checkpointing.use_node_local_storage`",
}


def check_passthrough(recipe: Recipe) -> Iterator[Problem]:
    yield from check_trainer_extra(recipe)
    yield from check_deepspeed_settings(recipe)


def check_trainer_extra(recipe: Recipe) -> Iterator[Problem]:
    if not recipe.training.extra:
        return
    sft = recipe.task == "sft"
    known, types = trainer_fields(sft), trainer_field_types(sft)
    where = "TrainingArguments or SFTConfig" if sft else "TrainingArguments"
    for name, value in recipe.training.extra.items():
        key = f"training.extra.{name}"
        owner = trainer_field_owner(name)
        if owner:
            yield key, owner
        elif known is not None and name not in known:
            hint = did_you_mean(name, known)
            if not sft and name in (trainer_fields(True) or ()):
                hint = "; an SFTConfig field, for `task: sft` only"
            yield key, f"not a field of {where} (the installed version){hint}"
        elif not is_json(value):
            yield key, f"{value!r}: a value the Trainer arguments file can hold (JSON)"
        elif admits(types.get(name, ""), value) is False:
            yield key, f"{value!r}: the Trainer takes `{types[name]}` here"


def check_deepspeed_settings(recipe: Recipe) -> Iterator[Problem]:
    settings = recipe.distributed.deepspeed
    if not settings:
        return
    if recipe.distributed.strategy != "deepspeed":
        yield "distributed.deepspeed", "DeepSpeed settings need `distributed.strategy: deepspeed`"
        return
    for path in SECTIONS:
        value = value_at(settings, path)
        if value is not KeyError and not isinstance(value, dict):
            yield f"distributed.deepspeed.{path}", f"{value!r}: DeepSpeed reads a mapping here"
    for path, value in leaves(settings, "distributed.deepspeed"):
        if value == "auto":
            yield path, "`auto` is for the launcher to resolve: give a value"
    for path in owned_paths(settings):
        yield f"distributed.deepspeed.{path}", f"the recipe sets it: {DEEPSPEED_OWNED[path]}"
    keys = deepspeed_keys()
    if keys is None:
        return  # DeepSpeed is not installed here: its own parser checks the names in the ranks
    sections = [("", settings, keys.top)]
    zero = settings.get("zero_optimization")
    if isinstance(zero, dict):
        sections.append(("zero_optimization.", zero, keys.zero))
        for name in ("offload_optimizer", "offload_param"):
            if isinstance(zero.get(name), dict):
                sections.append((f"zero_optimization.{name}.", zero[name], keys.offload))
    for prefix, section, allowed in sections:
        for name in section:
            if name not in allowed:
                yield (
                    f"distributed.deepspeed.{prefix}{name}",
                    f"not a DeepSpeed setting (the installed version){did_you_mean(name, allowed)}",
                )


# DeepSpeed sections the generated JSON has (or DeepSpeed reads) as mappings.
SECTIONS = (
    "zero_optimization", "zero_optimization.offload_optimizer", "zero_optimization.offload_param",
    "bf16", "fp16", "checkpoint",
)  # fmt: skip


def did_you_mean(name: str, known: frozenset[str]) -> str:
    """``; did you mean `X`?`` for a close library field name, else nothing."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f"; did you mean `{close[0]}`?" if close else ""


def value_at(settings: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path``, or ``KeyError`` (the class) where there is none."""
    current: Any = settings
    for part in path.split("."):
        current = current.get(part, KeyError) if isinstance(current, dict) else KeyError
    return current


def owned_paths(settings: dict[str, Any]) -> list[str]:
    return [path for path in DEEPSPEED_OWNED if value_at(settings, path) is not KeyError]


def leaves(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from leaves(inner, f"{prefix}.{key}")
    else:
        yield prefix, value


def is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False
