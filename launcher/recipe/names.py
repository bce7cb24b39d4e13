"""The names users bring from ``TrainingArguments``, TRL's ``SFTConfig``, DeepSpeed and axolotl,
and the recipe key each one means.

One table (``KNOWN_NAMES``) serves three readers: the loader accepts a synonym in the section
where it means exactly the recipe key (``training.num_train_epochs`` is ``training.num_epochs``),
an unknown key that is another tool's name for a recipe key elsewhere, or in other units, is
refused naming that key (``training.save_steps``: this is ``checkpointing.every_steps`` here), and
``training.extra`` refuses the Trainer fields the launcher sets itself. The README's table of names
is generated from it (``launcher.recipe.reference``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownName:
    """A recipe key and what other tools call it."""

    key: str
    trainer: tuple[str, ...] = ()  # TrainingArguments / SFTConfig field(s)
    axolotl: tuple[str, ...] = ()
    synonyms: tuple[str, ...] = ()  # names accepted in the key's own section, as the key itself
    note: str = ""  # how the meaning differs, where it does


KNOWN_NAMES: tuple[KnownName, ...] = (
    KnownName("model.pretrained", ("model_name_or_path",), ("base_model",)),
    KnownName("model.trust_remote_code", ("trust_remote_code",), ("trust_remote_code",)),
    KnownName("tokenizer.pretrained", ("tokenizer_name",), ("tokenizer_config",)),
    KnownName("data.dataset", ("dataset_name",), ("datasets",)),
    KnownName("data.text_column", ("dataset_text_field",)),
    KnownName(
        "data.max_length",
        ("max_length", "max_seq_length"),
        ("sequence_len",),
        note="tokens per sample",
    ),  # fmt: skip
    KnownName("data.packing", ("packing",), ("sample_packing",)),
    KnownName("data.num_proc", ("dataset_num_proc",), ("dataset_processes",)),
    KnownName("training.learning_rate", ("learning_rate",), ("learning_rate",)),
    KnownName("training.num_epochs", ("num_train_epochs",), ("num_epochs",), ("num_train_epochs",)),
    KnownName("training.max_steps", ("max_steps",), ("max_steps",)),
    KnownName(
        "training.per_device_batch_size",
        ("per_device_train_batch_size",),
        ("micro_batch_size",),
        ("per_device_train_batch_size", "micro_batch_size"),
    ),  # fmt: skip
    KnownName(
        "training.gradient_accumulation_steps",
        ("gradient_accumulation_steps",),
        ("gradient_accumulation_steps",),
    ),  # fmt: skip
    KnownName("training.warmup_steps", ("warmup_steps",), ("warmup_steps",)),
    KnownName("training.warmup_ratio", ("warmup_ratio",), ("warmup_ratio",)),
    KnownName("training.weight_decay", ("weight_decay",), ("weight_decay",)),
    KnownName(
        "training.lr_scheduler", ("lr_scheduler_type",), ("lr_scheduler",), ("lr_scheduler_type",)
    ),
    KnownName("training.optimizer", ("optim",), ("optimizer",), ("optim",)),
    KnownName("training.max_grad_norm", ("max_grad_norm",), ("max_grad_norm",)),
    KnownName(
        "training.precision",
        ("bf16", "fp16"),
        ("bf16", "fp16"),
        note="one key: `bf16`, `fp16` or `fp32`",
    ),  # fmt: skip
    KnownName("training.seed", ("seed",), ("seed",)),
    KnownName("training.logging_steps", ("logging_steps",), ("logging_steps",)),
    KnownName(
        "training.eval_strategy",
        ("eval_strategy",),
        (),
        ("evaluation_strategy",),
    ),  # fmt: skip
    KnownName("training.eval_steps", ("eval_steps",), ("eval_steps",)),
    KnownName(
        "training.per_device_eval_batch_size",
        ("per_device_eval_batch_size",),
        ("eval_batch_size",),
        ("eval_batch_size",),
    ),  # fmt: skip
    KnownName("training.load_best_model_at_end", ("load_best_model_at_end",)),
    KnownName("training.metric_for_best_model", ("metric_for_best_model",)),
    KnownName("training.greater_is_better", ("greater_is_better",)),
    KnownName(
        "training.gradient_checkpointing",
        ("gradient_checkpointing", "activation_checkpointing"),
        ("gradient_checkpointing",),
    ),
    KnownName(
        "training.dataloader_num_workers",
        ("dataloader_num_workers",),
        ("dataloader_num_workers",),
    ),  # fmt: skip
    KnownName("training.report_to", ("report_to",), ("use_wandb", "use_mlflow")),
    KnownName("tracking.run_name", ("run_name",), ("wandb_name",)),
    KnownName("tracking.project", (), ("wandb_project", "mlflow_experiment_name")),
    KnownName("tracking.entity", (), ("wandb_entity",)),
    KnownName("checkpointing.strategy", ("save_strategy",)),
    KnownName("checkpointing.every_steps", ("save_steps",), ("save_steps",)),
    KnownName(
        "checkpointing.keep",
        ("save_total_limit",),
        ("save_total_limit",),
        note="the launcher deletes old checkpoints only once a newer one is complete",
    ),  # fmt: skip
    KnownName("checkpointing.use_node_local_storage", ("save_on_each_node",)),
    KnownName(
        "distributed.strategy",
        ("deepspeed", "fsdp"),
        ("deepspeed", "fsdp"),
        note="`ddp` or `deepspeed`; DeepSpeed settings go in `distributed.deepspeed`",
    ),  # fmt: skip
    KnownName(
        "distributed.timeout_min",
        ("ddp_timeout",),
        ("ddp_timeout",),
        note="minutes here, seconds in the Trainer",
    ),  # fmt: skip
    KnownName("distributed.zero_stage", ("zero_optimization.stage",)),
    KnownName(
        "distributed.offload_optimizer",
        ("zero_optimization.offload_optimizer.device",),
    ),  # fmt: skip
    KnownName("distributed.offload_parameters", ("zero_optimization.offload_param.device",)),
)

# Trainer fields the launcher sets itself that have no recipe key: what to do instead.
OWNED_TRAINER_FIELDS: dict[str, str] = {
    "output_dir": "the run directory holds the checkpoints: `--run-dir`",
    "overwrite_output_dir": "`--from-scratch` starts over, keeping the old run aside",
    "resume_from_checkpoint": "a run resumes from its newest complete checkpoint by itself",
    "logging_dir": "TensorBoard logs go to RUN/tensorboard",
    "deepspeed": "`distributed.strategy: deepspeed`, settings in `distributed.deepspeed`",
    "accelerator_config": "the launcher configures Accelerate (RUN/plan/accelerate.yaml)",
    "use_cpu": "the ranks use the GPUs there are, the CPU without them",
    "local_rank": "set by the launch for each rank",
    "include_num_input_tokens_seen": "the launcher counts tokens for its throughput figures",
    "hub_token": "secrets come from the environment only (`HF_TOKEN`), never from a file",
    "dataset_kwargs": "the launcher prepares the data itself (RUN/plan, the data cache)",
    "ddp_find_unused_parameters": "set by the launcher for DDP",
    "label_names": "set by the launcher for the task",
}


def recipe_key_for(name: str) -> KnownName | None:
    """The recipe key another tool's ``name`` means (its last part: `save_steps`), or None."""
    for known in KNOWN_NAMES:
        if name in known.trainer or name in known.axolotl or name in known.synonyms:
            return known
    return None


def synonym_target(section: str, name: str) -> str | None:
    """``training.num_train_epochs`` -> ``num_epochs``: a name accepted in ``section`` as one of
    its own keys, or None."""
    for known in KNOWN_NAMES:
        own_section, _, own_name = known.key.partition(".")
        if own_section == section and name in known.synonyms:
            return own_name
    return None


def elsewhere_message(key: str, name: str) -> str | None:
    """Why ``key`` (ending in another tool's ``name``) is refused, naming the recipe key to use;
    None when ``name`` means nothing known."""
    known = recipe_key_for(name)
    if known is None or known.key == key:
        return None
    tools = []
    if name in known.trainer:
        tools.append("the Trainer's")
    if name in known.axolotl:
        tools.append("axolotl's")
    whose = f"{' and '.join(tools) or 'a'} `{name}`"
    note = f"; {known.note}" if known.note else ""
    return f"this is `{known.key}` here ({whose}{note})"


def trainer_field_owner(name: str) -> str | None:
    """Why a Trainer field may not be set in ``training.extra``: the recipe key or the launcher
    feature that sets it; None when it passes through."""
    known = recipe_key_for(name)
    if known is not None and name in known.trainer:
        note = f"; {known.note}" if known.note else ""
        return f"the recipe sets it: use `{known.key}`{note}"
    if name in OWNED_TRAINER_FIELDS:
        return f"the launcher sets it: {OWNED_TRAINER_FIELDS[name]}"
    return None
