"""Recipe -> :class:`Plan`: every file and number a run needs, computed without touching anything.

``build_plan`` is a pure function of the recipe and the run directory's path (plan, then
execute). The backends only write ``plan.files()`` and run ``plan.command``; the ranks read the
files back. ``launcher plan`` prints :meth:`Plan.summary` and can write the same files.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from launcher.architectures import ARCHITECTURES, LEARNED_POSITIONS, full_config
from launcher.contract import RunContract, RunLayout, rank_launch_command
from launcher.errors import RecipeError, RecipeProblem
from launcher.plan.accelerate import accelerate_config
from launcher.plan.adapters import AdapterCount, adapter_memory, count_adapters
from launcher.plan.batch import BatchNumbers, batch_numbers
from launcher.plan.data_rows import data_rows
from launcher.plan.deepspeed import deepspeed_config
from launcher.plan.memory import MemoryEstimate, estimate_memory
from launcher.plan.model_config import ModelConfig, read_model_config
from launcher.plan.parameters import ParameterCount, count_parameters
from launcher.plan.smoke import apply_smoke
from launcher.plan.trainer import trainer_arguments_json
from launcher.recipe.changes import BaseChanges
from launcher.recipe.chat_template import names_a_file
from launcher.recipe.schema import Recipe
from launcher.units import format_bytes

OPTIMIZER_NAMES = {
    "adamw_torch": "AdamW (torch)",
    "adamw_torch_fused": "AdamW (torch, fused)",
    "adafactor": "Adafactor",
    "sgd": "SGD",
    "paged_adamw_32bit": "paged AdamW, 32-bit states (bitsandbytes)",
    "paged_adamw_8bit": "paged AdamW, 8-bit states (bitsandbytes)",
    "adamw_8bit": "AdamW, 8-bit states (bitsandbytes)",
}


@dataclass(frozen=True)
class Plan:
    """A fully resolved run: the recipe as it will run and everything derived from it."""

    recipe: Recipe
    source: str
    overrides: tuple[str, ...]
    layout: RunLayout
    smoke: bool
    smoke_notes: tuple[str, ...]
    batch: BatchNumbers
    accelerate: dict[str, Any]
    deepspeed: dict[str, Any] | None
    trainer_args: dict[str, Any]
    command: tuple[str, ...]
    parameters: ParameterCount | None
    memory: MemoryEstimate | None
    # What the recipe file changes from its `base:` (None without one); overrides not included.
    base_changes: BaseChanges | None = None
    adapters: AdapterCount | None = None  # model.lora: what trains and what stays frozen
    size_unknown: str = ""  # why the parameter count is unknown, when it is

    @property
    def contract(self) -> RunContract:
        return RunContract(
            run_dir=str(self.layout.root),
            task=self.recipe.task,
            world_size=self.batch.world_size,
            nodes=self.batch.nodes,
            processes_per_node=self.batch.processes_per_node,
            per_device_batch_size=self.batch.micro_batch,
            gradient_accumulation_steps=self.batch.accumulation,
            global_batch_size=self.batch.global_batch,
            max_length=self.batch.max_length,
            smoke=self.smoke,
            checkpoints_dir=str(checkpoints_location(self.recipe, self.layout)),
            checkpoints_on_each_node=self.recipe.checkpointing.use_node_local_storage,
        )

    @property
    def optimizer_description(self) -> str:
        """The optimizer that really runs, which ZeRO offload changes behind the Trainer's back."""
        name = self.recipe.training.optimizer
        dist = self.recipe.distributed
        if dist.strategy == "deepspeed" and dist.offload_optimizer != "none":
            return f"DeepSpeedCPUAdam (ZeRO optimizer offload runs it in place of {name})"
        wrapped = " wrapped by DeepSpeed" if dist.strategy == "deepspeed" else ""
        return f"{name}: {OPTIMIZER_NAMES[name]}{wrapped}"

    def files(self) -> dict[Path, str]:
        """Every file of the plan directory, by path, with its exact content."""
        layout = self.layout
        files = {
            layout.recipe_file: dump_yaml(self.recipe.model_dump(mode="json")),
            layout.contract_file: self.contract.to_json(),
            layout.accelerate_file: dump_yaml(self.accelerate),
            layout.trainer_args_file: json.dumps(self.trainer_args, indent=2) + "\n",
            layout.command_file: "#!/usr/bin/env bash\nset -euo pipefail\nexec "
            + shlex.join(self.command)
            + "\n",
            layout.summary_file: self.summary() + "\n",
        }
        if self.deepspeed is not None:
            files[layout.deepspeed_file] = json.dumps(self.deepspeed, indent=2) + "\n"
        return files

    def summary(self) -> str:
        """The short table ``launcher plan`` prints: the numbers a user checks before a run."""
        recipe, batch = self.recipe, self.batch
        overrides = f" + overrides: {' '.join(self.overrides)}" if self.overrides else ""
        rows = [
            ("recipe", f"{self.source}{overrides}"),
            *([("", self.base_changes.describe())] if self.base_changes else []),
            (
                "task",
                f"{recipe.task}: {describe_model(recipe, self.parameters, self.size_unknown)}",
            ),
            ("run dir", str(self.layout.root)),
            (
                "world size",
                f"{batch.world_size} = {batch.nodes} node(s) x {batch.processes_per_node} process(es)",
            ),
            ("global batch", f"{batch.arithmetic()} sequences"),
            (
                "tokens/step",
                f"{batch.tokens_per_step:,} ({batch.global_batch} x {batch.max_length} max length)",
            ),
            *data_rows(recipe, self.layout.data_summary_file),
            ("steps", describe_steps(recipe)),
            ("optimizer", self.optimizer_description),
            ("distributed", describe_distribution(recipe)),
            ("launch", describe_launch(recipe, batch)),
            ("checkpoints", describe_checkpoints(recipe, self.layout)),
            ("precision", recipe.training.precision),
            *passed_through(recipe),
            *(
                adapter_rows(recipe, self.adapters, batch.world_size)
                if self.adapters is not None
                else memory_rows(self.memory, offloading(recipe))
            ),
            (
                "remote code",
                "trusted (model.trust_remote_code)" if recipe.model.trust_remote_code else "off",
            ),
        ]
        rows += [("smoke" if i == 0 else "", note) for i, note in enumerate(self.smoke_notes)]
        rows.append(("command", shlex.join(self.command)))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def build_plan(
    recipe: Recipe,
    run_dir: Path,
    *,
    source: str = "<recipe>",
    overrides: tuple[str, ...] = (),
    smoke: bool = False,
    python: str = sys.executable,
    exists: Callable[[Path], bool] = Path.exists,
    base_changes: BaseChanges | None = None,
) -> Plan:
    """Resolve ``recipe`` for a run in ``run_dir``; ``python`` is the interpreter ranks run with.
    ``base_changes`` (what the recipe file changes from its ``base:``) is shown in the summary."""
    layout = RunLayout(run_dir.absolute())
    notes: list[str] = []
    if smoke:
        recipe, notes = apply_smoke(recipe, layout, exists, tuple(overrides))
    recipe = with_absolute_files(recipe)
    read = known_model_config(recipe, exists)
    known = read.config
    check_positions(recipe, source, known)
    batch = batch_numbers(recipe)
    model_config = resolved_model_config(recipe, known)
    hidden = hidden_size(model_config) if model_config else None
    deepspeed = (
        deepspeed_config(recipe, batch, hidden)
        if recipe.distributed.strategy == "deepspeed"
        else None
    )
    parameters, size_unknown = count_model(recipe, known, model_config, read.source)
    memory = None
    if parameters is not None:
        memory = estimate_memory(
            parameters,
            zero_stage=recipe.distributed.zero_stage,
            offload_optimizer=recipe.distributed.offload_optimizer != "none",
            offload_parameters=recipe.distributed.offload_parameters != "none",
            processes_per_node=batch.processes_per_node,
            nodes=batch.nodes,
            precision=recipe.training.precision,
            optimizer=recipe.training.optimizer,
            deepspeed=recipe.distributed.strategy == "deepspeed",
        )
    adapters = None
    lora = recipe.model.lora
    if parameters is not None and lora is not None:
        labels = len(recipe.data.labels or []) or 2
        adapters = count_adapters(
            str(model_family(recipe, known)), model_config or {}, recipe.task, labels, lora.r,
            lora.target_modules, parameters.total,
        )  # fmt: skip
    command = tuple(rank_launch_command(python, layout.accelerate_file, str(layout.root)))
    return Plan(
        adapters=adapters,
        recipe=recipe,
        source=source,
        overrides=tuple(overrides),
        layout=layout,
        smoke=smoke,
        smoke_notes=tuple(notes),
        batch=batch,
        accelerate=accelerate_config(recipe, batch, layout.deepspeed_file),
        deepspeed=deepspeed,
        trainer_args=trainer_arguments_json(
            recipe, batch, layout, checkpoints_location(recipe, layout)
        ),
        command=command,
        parameters=parameters,
        memory=memory,
        base_changes=base_changes,
        size_unknown=size_unknown,
    )


def check_positions(recipe: Recipe, source: str, known: dict[str, Any] | None) -> None:
    """``data.max_length`` must fit a model whose positions are learned embeddings (BERT,
    DistilBERT...): a longer sample has no position to use and the first batch crashes.
    ``known``: the model's config as far as it is known here (``known_model_config``)."""
    config = known if known is not None else dict(recipe.model.config)  # a hub model's own
    family = recipe.model.architecture or config.get("model_type")
    if recipe.model.architecture:
        config = full_config(recipe.model.architecture, config)
    positions = config.get("max_position_embeddings", config.get("n_positions"))  # GPT-2's name
    if family not in LEARNED_POSITIONS or not isinstance(positions, int):
        return
    usable = positions - 2 if family in ("roberta", "xlm-roberta") else positions  # padding offset
    if recipe.data.max_length > usable:
        where = (
            "model.config.max_position_embeddings"
            if recipe.model.architecture
            else (f"{recipe.model.pretrained}/config.json")
        )
        message = (
            f"{recipe.data.max_length}: longer than the {usable} positions the model has "
            f"({where}); at most {usable}"
        )
        raise RecipeError([RecipeProblem(source, "data.max_length", message)])


def with_absolute_files(recipe: Recipe) -> Recipe:
    """Local data files (and a chat template's file) relative to the working directory become
    absolute: ranks run elsewhere."""
    template = recipe.tokenizer.chat_template
    template_file = template is not None and names_a_file(template)
    if not recipe.data.files and not recipe.data.sources and not template_file:
        return recipe
    recipe = recipe.model_copy(deep=True)
    if template_file:
        recipe.tokenizer.chat_template = absolute_paths((template or "").strip())
    for source in recipe.data.sources or []:
        if source.files is not None:
            source.files = absolute_paths(source.files)
    if recipe.data.files:
        recipe.data.files = {
            split: absolute_paths(value) for split, value in recipe.data.files.items()
        }
    return recipe


def absolute_paths(value: str | list[str]) -> str | list[str]:
    """A path, or a list of them, absolute (``~`` expanded), in the shape given."""
    if isinstance(value, list):
        return [str(Path(path).expanduser().absolute()) for path in value]
    return str(Path(value).expanduser().absolute())


def known_model_config(recipe: Recipe, exists: Callable[[Path], bool]) -> ModelConfig:
    """The recipe's ``model.config`` over a pretrained model's ``config.json`` (its local folder's
    or the hub cache's, ``launcher.plan.model_config``); no config, and why, when none is here."""
    model = recipe.model
    if not model.pretrained:
        return ModelConfig(dict(model.config), "model.config")
    read = read_model_config(model.pretrained, exists)
    if read.config is None:
        return read
    return ModelConfig({**read.config, **model.config}, read.source)


def model_family(recipe: Recipe, known: dict[str, Any] | None) -> str | None:
    """The ``model_type`` the ranks build: a pretrained model's own (its config.json), else
    ``model.architecture``."""
    if recipe.model.pretrained and known and isinstance(known.get("model_type"), str):
        return known["model_type"]
    return recipe.model.architecture


def resolved_model_config(recipe: Recipe, known: dict[str, Any] | None) -> dict[str, Any] | None:
    """The model's config fields as far as they can be known offline (every field, for counting
    parameters), or None."""
    model = recipe.model
    family = model_family(recipe, known)
    if known is None or not family:
        return None
    config = dict(known)
    if recipe.tokenizer.train and "vocab_size" not in model.config:
        # Models built from config take their vocabulary size from the tokenizer.
        config["vocab_size"] = recipe.tokenizer.train.vocab_size
    return full_config(family, config) if family in ARCHITECTURES else config


def count_model(
    recipe: Recipe, known: dict[str, Any] | None, config: dict[str, Any] | None, source: str
) -> tuple[ParameterCount | None, str]:
    """The model's parameters, or None and why they are unknown. ``source``: where the config
    was read, or why it could not be."""
    family = model_family(recipe, known)
    if config is None or not family:
        return None, source if config is None else f"{source} names no model_type"
    if family not in ARCHITECTURES:
        return None, f"{family} ({source}) is not a model the launcher counts"
    labels = len(recipe.data.labels or []) or 2
    try:
        return count_parameters(family, config, recipe.task, labels), ""
    except ValueError as error:  # UnknownCount too: no formula for the family, a nested config
        return None, str(error)


def hidden_size(config: dict[str, Any]) -> int | None:
    value = config.get("hidden_size") or config.get("dim") or config.get("n_embd")
    return int(value) if isinstance(value, int) and value else None


def describe_model(recipe: Recipe, parameters: ParameterCount | None, unknown: str = "") -> str:
    model = recipe.model
    what = model.pretrained or f"{model.architecture} built from config"
    if parameters is None:
        return f"{what} (parameters unknown: {unknown or 'no config'})"
    if not model.pretrained and not recipe.tokenizer.train and "vocab_size" not in model.config:
        # The ranks size the embeddings to the tokenizer, which the plan does not load.
        return (
            f"{what}, {parameters.total:,} parameters (with the config's default vocab_size; "
            "the run's is the tokenizer's length)"
        )
    return f"{what}, {parameters.total:,} parameters"


def describe_steps(recipe: Recipe) -> str:
    training = recipe.training
    if training.max_steps:
        return f"{training.max_steps} (max_steps)"
    return f"{training.num_epochs:g} epoch(s); steps follow from the dataset size"


def describe_distribution(recipe: Recipe) -> str:
    dist = recipe.distributed
    if dist.strategy == "ddp":
        return "DDP"
    return (
        f"DeepSpeed ZeRO-{dist.zero_stage}, optimizer offload: {dist.offload_optimizer}, "
        f"parameter offload: {dist.offload_parameters}"
    )


def checkpoints_location(recipe: Recipe, layout: RunLayout) -> Path:
    """Where the Trainer saves: the run directory, or with node-local storage one folder per run
    under ``node_local_dir`` (named after the run directory, whose path it hashes, so that two
    runs of one name never share it; ``{node}`` stays for each node to fill in)."""
    saving = recipe.checkpointing
    if not saving.use_node_local_storage or saving.node_local_dir is None:
        return layout.checkpoints_dir
    digest = hashlib.sha256(str(layout.root).encode()).hexdigest()[:8]
    return Path(saving.node_local_dir) / f"{layout.root.name}-{digest}"


def describe_checkpoints(recipe: Recipe, layout: RunLayout) -> str:
    saving = recipe.checkpointing
    if saving.strategy == "no":
        return "none (checkpointing.strategy: no)"
    cadence = f"every {saving.every_steps} steps" if saving.strategy == "steps" else "every epoch"
    kept = f"keep {saving.keep}" if saving.keep else "keep all"
    where = checkpoints_location(recipe, layout)
    if saving.use_node_local_storage:
        return (
            f"{cadence}, {kept}, on each node's own disk in {where} (DeepSpeed "
            "use_node_local_storage; each node resumes from its own shards)"
        )
    shared = " (shared by every node)" if recipe.distributed.nodes > 1 else ""
    return f"{cadence}, {kept}, in {where}{shared}"


def describe_launch(recipe: Recipe, batch: BatchNumbers) -> str:
    """What starts the ranks on each node: always torch's launcher under ``accelerate launch``
    (for DeepSpeed too: its pdsh launcher would need a hostfile and write the environment down)."""
    ranks = f"{batch.processes_per_node} rank(s)"
    if batch.nodes == 1:
        return f"accelerate launch -> torch.distributed.run, {ranks} on one node"
    via = (
        " (deepspeed_multinode_launcher: standard)"
        if recipe.distributed.strategy == "deepspeed"
        else ""
    )
    return (
        f"on each of {batch.nodes} nodes: accelerate launch --machine_rank NODE -> "
        f"torch.distributed.run{via}, {ranks}; rendezvous at the first node"
    )


def passed_through(recipe: Recipe) -> list[tuple[str, str]]:
    """The settings the recipe hands to the Trainer and DeepSpeed as they are, shown so that
    the plan says everything that will run."""
    shown = []
    if recipe.training.extra:
        shown.append(f"Trainer: {flat_settings(recipe.training.extra)}")
    if recipe.distributed.deepspeed:
        shown.append(f"DeepSpeed: {flat_settings(recipe.distributed.deepspeed)}")
    return [("pass-through" if i == 0 else "", text) for i, text in enumerate(shown)]


def flat_settings(settings: dict[str, Any], prefix: str = "") -> str:
    """``{"a": {"b": 1}, "c": true}`` -> ``a.b=1, c=true``."""
    parts = []
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            parts.append(flat_settings(value, f"{prefix}{key}."))
        else:
            parts.append(f"{prefix}{key}={json.dumps(value)}")
    return ", ".join(parts)


def offloading(recipe: Recipe) -> bool:
    dist = recipe.distributed
    return dist.strategy == "deepspeed" and (
        dist.offload_optimizer != "none" or dist.offload_parameters != "none"
    )


def adapter_rows(recipe: Recipe, count: AdapterCount, gpus: int) -> list[tuple[str, str]]:
    """What a LoRA run trains, and its model-state memory per device."""
    lora, model = recipe.model.lora, recipe.model
    assert lora is not None
    targets = (
        lora.target_modules
        if isinstance(lora.target_modules, str)
        else ", ".join(lora.target_modules)
    )
    parts = f" (adapters {count.adapters:,} + head {count.head:,})" if count.head else ""
    frozen = {"4bit": " (linear layers in 4-bit NF4)", "8bit": " (linear layers in 8-bit)"}
    dist = recipe.distributed
    stage = dist.zero_stage if dist.strategy == "deepspeed" else 0
    # TRL trains QLoRA adapters in bf16 (the QLoRA paper's choice); elsewhere they are fp32.
    adapter_bytes = 2 if recipe.task == "sft" and model.quantization != "none" else 4
    memory = adapter_memory(
        count, model.quantization, recipe.training.precision, stage, gpus, adapter_bytes
    )
    return [
        (
            "adapters",
            f"LoRA r={lora.r} alpha={lora.alpha:g} on {targets}: trainable "
            f"{count.trainable:,}{parts} ({100 * count.trainable / count.total:.2f}%), frozen "
            f"{count.frozen:,}{frozen.get(model.quantization, '')}",
        ),
        (
            "memory/device",
            f"{format_bytes(round(memory.total))} = frozen weights "
            f"{format_bytes(round(memory.frozen))} + trainable weights "
            f"{format_bytes(round(memory.trainable_weights))} + gradients "
            f"{format_bytes(round(memory.gradients))} + optimizer states "
            f"{format_bytes(round(memory.optimizer_states))} (model states only, not "
            "activations)",
        ),
    ]


def memory_rows(memory: MemoryEstimate | None, offload: bool) -> list[tuple[str, str]]:
    """The memory row, and under it how a bitsandbytes optimizer's states were counted."""
    rows = [("memory/device", describe_memory(memory))]
    if memory is not None and offload:
        rows.append(
            ("memory/node", f"{format_bytes(memory.cpu_total)} of CPU memory (ZeRO offload)")
        )
    if memory is not None and memory.states_note:
        rows.append(("", memory.states_note))
    return rows


def describe_memory(memory: MemoryEstimate | None) -> str:
    if memory is None:
        return "unknown (needs the parameter count; the task row says why it is unknown)"
    return (
        f"{format_bytes(memory.total)} = parameters {format_bytes(memory.parameters)} + "
        f"gradients {format_bytes(memory.gradients)} + optimizer states "
        f"{format_bytes(memory.optimizer_states)} (model states only, not activations)"
    )


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
