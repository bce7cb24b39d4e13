"""The DeepSpeed JSON: concrete numbers only, no ``auto``.

Values that the HF integration would fill in from ``auto`` are computed here the same way
(bucket sizes from the hidden size), so the file in the run directory is exactly what runs.
The optimizer and scheduler sections are left out on purpose: the Trainer builds them (paged AdamW
included) and DeepSpeed wraps them as client objects.
"""

from __future__ import annotations

from typing import Any

from launcher.plan.batch import BatchNumbers
from launcher.recipe.schema import Recipe

# DeepSpeed's own defaults, used when the hidden size is unknown at plan time (a hub model).
DEFAULT_REDUCE_BUCKET = 500_000_000
DEFAULT_PREFETCH_BUCKET = 50_000_000
DEFAULT_PERSISTENCE_THRESHOLD = 100_000


def deepspeed_config(
    recipe: Recipe, batch: BatchNumbers, hidden_size: int | None
) -> dict[str, Any]:
    precision = recipe.training.precision
    config: dict[str, Any] = {
        "train_batch_size": batch.global_batch,
        "train_micro_batch_size_per_gpu": batch.micro_batch,
        "gradient_accumulation_steps": batch.accumulation,
        "gradient_clipping": recipe.training.max_grad_norm,
        "zero_optimization": zero_section(recipe, hidden_size),
        "bf16": {"enabled": precision == "bf16"},
        "fp16": fp16_section(precision == "fp16"),
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }
    if recipe.checkpointing.use_node_local_storage:
        # Each node's local rank 0 (not only global rank 0) writes the non-sharded states.
        config["checkpoint"] = {"use_node_local_storage": True}
    # The recipe's own DeepSpeed settings (checked in recipe/passthrough.py: no batch sizes,
    # stage or precision, no `auto`, only names DeepSpeed knows) win over the generated ones.
    return merged(config, recipe.distributed.deepspeed)


def merged(base: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``settings`` merged in, mappings merged key by key at every depth."""
    result = dict(base)
    for key, value in settings.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def zero_section(recipe: Recipe, hidden_size: int | None) -> dict[str, Any]:
    dist = recipe.distributed
    stage = dist.zero_stage
    section: dict[str, Any] = {"stage": stage}
    if stage == 0:
        return section
    reduce_bucket = hidden_size * hidden_size if hidden_size else DEFAULT_REDUCE_BUCKET
    section.update(
        {
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": reduce_bucket,
        }
    )
    if stage in (1, 2):
        section.update({"allgather_bucket_size": reduce_bucket, "reduce_scatter": True})
    if stage == 3:
        section.update(
            {
                "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size)
                if hidden_size
                else DEFAULT_PREFETCH_BUCKET,
                "stage3_param_persistence_threshold": 10 * hidden_size
                if hidden_size
                else DEFAULT_PERSISTENCE_THRESHOLD,
                "sub_group_size": 1_000_000_000,
                "stage3_max_live_parameters": 1_000_000_000,
                "stage3_max_reuse_distance": 1_000_000_000,
                # Without this a ZeRO-3 save writes shards only and no loadable model file.
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
    for key, device in (
        ("offload_optimizer", dist.offload_optimizer),
        ("offload_param", dist.offload_parameters),
    ):
        if device != "none":
            section[key] = {"device": device, "pin_memory": True}
            if device == "nvme":
                section[key]["nvme_path"] = dist.nvme_path
    return section


def fp16_section(enabled: bool) -> dict[str, Any]:
    if not enabled:
        return {"enabled": False}
    return {
        "enabled": True,
        "loss_scale": 0,
        "initial_scale_power": 16,
        "loss_scale_window": 1000,
        "hysteresis": 2,
        "min_loss_scale": 1,
    }
