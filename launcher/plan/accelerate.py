"""The Accelerate config file that ``accelerate launch --config_file`` reads.

``distributed_type`` is MULTI_GPU for several DDP ranks even on a CPU machine: there accelerate
starts the ranks with gloo (MULTI_CPU), whereas ``use_cpu: true`` would silently start ONE process.
``use_cpu`` is decided inside the ranks, where the hardware is known.

DeepSpeed on several nodes: by default accelerate hands the job to the ``deepspeed`` launcher
(pdsh), which expects a hostfile, finds none on a SLURM node, starts a world of one node, and
appends the whole environment (tokens included) to ``.deepspeed_env`` in the working directory.
The ``standard`` multi-node launcher is torch's own, the one DDP uses: each node starts its ranks
with its node rank from SLURM and nothing is written down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.plan.batch import BatchNumbers
from launcher.recipe.schema import Recipe

MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
# accelerate's name for torch's launcher among its DeepSpeed multi-node launchers.
DEEPSPEED_NODE_LAUNCHER = "standard"


def accelerate_config(recipe: Recipe, batch: BatchNumbers, deepspeed_file: Path) -> dict[str, Any]:
    deepspeed = recipe.distributed.strategy == "deepspeed"
    if deepspeed:
        distributed_type = "DEEPSPEED"
    else:
        distributed_type = "MULTI_GPU" if batch.world_size > 1 else "NO"
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": distributed_type,
        "downcast_bf16": "no",
        "machine_rank": 0,
        "main_training_function": "main",
        "num_machines": batch.nodes,
        "num_processes": batch.world_size,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }
    if deepspeed:
        # Precision and batch numbers live in the DeepSpeed JSON alone: accelerate refuses a
        # config that states them twice.
        config["deepspeed_config"] = {
            "deepspeed_config_file": str(deepspeed_file),
            "zero3_init_flag": recipe.distributed.zero_stage == 3,
            "deepspeed_multinode_launcher": DEEPSPEED_NODE_LAUNCHER,
        }
    else:
        config["mixed_precision"] = MIXED_PRECISION[recipe.training.precision]
    return config
