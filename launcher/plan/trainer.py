"""Trainer arguments (``TrainingArguments`` or TRL's ``SFTConfig``) as plain JSON.

The rank passes this dict to the Trainer unchanged except for ``use_cpu`` on a machine without a
GPU (logged there), so ``plan/trainer_args.json`` is the truth about what trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.contract import RunLayout
from launcher.plan.batch import BatchNumbers
from launcher.recipe.schema import Recipe

LOWER_IS_BETTER = ("loss", "eval_loss", "perplexity", "eval_perplexity")


def trainer_arguments_json(
    recipe: Recipe, batch: BatchNumbers, layout: RunLayout, checkpoints: Path
) -> dict[str, Any]:
    """The Trainer's arguments; ``checkpoints`` is where it saves (``{node}`` is filled in by
    each rank, for node-local storage)."""
    training, saving = recipe.training, recipe.checkpointing
    metric = training.metric_for_best_model if training.load_best_model_at_end else None
    if training.load_best_model_at_end and metric is None:
        metric = "loss"
    greater = training.greater_is_better
    if metric is not None and greater is None:
        greater = metric not in LOWER_IS_BETTER
    args: dict[str, Any] = {
        "output_dir": str(checkpoints),
        "per_device_train_batch_size": batch.micro_batch,
        "per_device_eval_batch_size": training.per_device_eval_batch_size or batch.micro_batch,
        "gradient_accumulation_steps": batch.accumulation,
        "learning_rate": training.learning_rate,
        "num_train_epochs": training.num_epochs,
        "max_steps": training.max_steps or -1,
        # transformers 5 reads a warmup_steps below 1 as a fraction of all steps.
        "warmup_steps": training.warmup_ratio or training.warmup_steps,
        "weight_decay": training.weight_decay,
        "lr_scheduler_type": training.lr_scheduler,
        "optim": training.optimizer,
        "max_grad_norm": training.max_grad_norm,
        "bf16": training.precision == "bf16",
        "fp16": training.precision == "fp16",
        "seed": training.seed,
        "data_seed": training.seed,
        "logging_strategy": "steps",
        "logging_steps": training.logging_steps,
        "logging_first_step": True,
        "eval_strategy": training.eval_strategy,
        "eval_steps": training.eval_steps if training.eval_strategy == "steps" else None,
        "save_strategy": saving.strategy,
        "save_steps": saving.every_steps,
        # Retention is the launcher's (ranks/callbacks.py): the Trainer would delete old
        # checkpoints before the new one is complete, leaving none after a crash.
        "save_total_limit": None,
        # Node-local storage: every node saves what it needs to resume (trainer state, model).
        "save_on_each_node": saving.use_node_local_storage,
        "load_best_model_at_end": training.load_best_model_at_end,
        "metric_for_best_model": metric,
        "greater_is_better": greater,
        "activation_checkpointing": training.gradient_checkpointing,
        "dataloader_num_workers": training.dataloader_num_workers,
        # Event files go to RUN/tensorboard: transformers 5 has no `logging_dir` argument, so the
        # rank points TENSORBOARD_LOGGING_DIR there (ranks/callbacks.py, MetricsLog). W&B and
        # MLflow continue one tracker run across resumes (ranks/trackers.py).
        "report_to": recipe.training.report_to or "none",
        "run_name": recipe.tracking.run_name or layout.root.name,
        # Real tokens per step, gathered from every rank: the throughput that metrics.jsonl and
        # `launcher plot` show as tokens per second.
        "include_num_input_tokens_seen": token_count(recipe),
        "deepspeed": str(layout.deepspeed_file)
        if recipe.distributed.strategy == "deepspeed"
        else None,
        "ddp_find_unused_parameters": False if recipe.distributed.strategy == "ddp" else None,
        # The ranks' process group waits this long in a collective (ranks/runtime.py).
        "ddp_timeout": round(recipe.distributed.timeout_min * 60),
        # The rank creates the distributed state itself (gloo on CPU, see ranks/runtime.py).
        "accelerator_config": {"use_configured_state": True},
    }
    # Any other Trainer argument, as the recipe gives it (checked in recipe/passthrough.py).
    args.update(recipe.training.extra)
    if recipe.task == "sft":
        args.update(
            {
                "max_length": recipe.data.max_length,
                "packing": recipe.data.packing,
                "dataset_text_field": recipe.data.text_column,
                # The rank tokenizes and packs (cached, ranks/data_cache.py); TRL must not redo it.
                "dataset_kwargs": {"skip_prepare_dataset": True},
            }
        )
    return args


def token_count(recipe: Recipe) -> str:
    """How the Trainer counts real tokens: packed SFT rows have no padding, and there the
    ``non_padding`` count (ids equal to the pad id) would also drop the EOS tokens that share
    the pad id; padded batches carry an attention mask, which ``non_padding`` sums."""
    return "all" if recipe.task == "sft" and recipe.data.packing else "non_padding"
