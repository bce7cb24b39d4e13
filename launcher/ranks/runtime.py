"""The distributed state of a rank, and the check that it is the one the plan promised.

On a machine without CUDA, accelerate picks no backend for several processes and, under DeepSpeed,
counts one process while DeepSpeed sees two. Creating the state first with gloo fixes
both; the Trainer is then told to use that state (``use_configured_state``).
"""

from __future__ import annotations

from typing import Any

from launcher.contract import RunContract
from launcher.errors import LauncherError


class PlanMismatch(LauncherError):
    """A rank sees other numbers than the plan: training must not start."""


def init_distributed(timeout_min: float = 30) -> Any:
    """The rank's distributed state; on CPU, one whose barriers and DDP wrapping really happen.
    A collective that waits longer than ``timeout_min`` for a rank fails instead of hanging.

    Without ``cpu=True`` accelerate calls several CPU ranks ``DistributedType.NO``: its barriers
    do nothing and the model is not wrapped in DDP (seen with accelerate 1.15). Under DeepSpeed,
    ``cpu=True`` would turn DeepSpeed off, so there only the backend is set.
    """
    import os
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    timeout = timedelta(minutes=timeout_min)
    launched_ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if launched_ranks == 1:
        return PartialState()  # one process, whatever the plan says: check_numbers will tell
    if torch.cuda.is_available():
        return PartialState(timeout=timeout)
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return PartialState(backend="gloo", timeout=timeout)
    return PartialState(cpu=True, backend="gloo", timeout=timeout)


def close_distributed() -> None:
    """Destroy the process group before the interpreter exits, as torch asks.

    Left to interpreter shutdown, gloo's worker threads are torn down with it and a rank can die
    of SIGABRT ("terminate called without an active exception") after its work is done: seen on
    the development cluster, where the other node's torchrun then waited 300 s at its exit
    barrier for the agent that failed (pytorch/pytorch#179291 describes the same crash)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device_index() -> int:
    """This rank's GPU on its node (``LOCAL_RANK``, which torchrun sets)."""
    import os

    return int(os.environ.get("LOCAL_RANK", "0"))


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_numbers(contract: RunContract, seen: dict[str, int]) -> None:
    """Compare what this rank really got with the plan; raise showing both sets of numbers."""
    planned = {
        "world_size": contract.world_size,
        "per_device_batch_size": contract.per_device_batch_size,
        "gradient_accumulation_steps": contract.gradient_accumulation_steps,
        "global_batch_size": contract.global_batch_size,
    }
    wrong = {key: value for key, value in seen.items() if planned.get(key, value) != value}
    if wrong:
        rows = "; ".join(f"{key}: plan {planned[key]}, rank sees {seen[key]}" for key in wrong)
        raise PlanMismatch(
            f"this rank's numbers differ from the plan ({rows}). "
            f"Plan: {contract.per_device_batch_size} x {contract.gradient_accumulation_steps} x "
            f"{contract.world_size} = {contract.global_batch_size}. Was the run started with "
            "`launcher run` (a hand-made `accelerate launch --cpu` starts one process)?"
        )


def numbers_seen(state: Any, args: Any) -> dict[str, int]:
    """The batch numbers as this rank's distributed state and Trainer arguments have them."""
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    seen = {
        "world_size": world,
        "per_device_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "global_batch_size": args.per_device_train_batch_size
        * args.gradient_accumulation_steps
        * world,
    }
    if state.num_processes != world:
        seen["world_size"] = state.num_processes
    if world > 1 and str(state.distributed_type) == "DistributedType.NO":
        seen["world_size"] = 1  # accelerate would neither synchronise nor shard: not distributed
    return seen
