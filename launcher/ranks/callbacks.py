"""Trainer callbacks: the plan check before step 1, metrics as JSON lines, checkpoint completion.

A checkpoint is complete once ``launcher-complete.json`` is in it (see ``launcher.checkpoints``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from launcher.checkpoints import rotate, write_manifest
from launcher.contract import RunContract
from launcher.ranks.runtime import check_numbers, numbers_seen


class PlanGuard(TrainerCallback):
    """Stops the run before step 1 when this rank's batch numbers are not the plan's."""

    def __init__(self, contract: RunContract, state: Any):
        self.contract, self.state = contract, state

    def on_train_begin(self, args, state, control, **kwargs):
        seen = numbers_seen(self.state, args)
        engine = kwargs.get("model")
        ds_config = getattr(getattr(engine, "config", None), "ds_config", None)
        if isinstance(ds_config, dict) and "train_batch_size" in ds_config:
            seen["global_batch_size"] = ds_config["train_batch_size"]
        check_numbers(self.contract, seen)
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        print(
            f"[launcher] rank {self.state.process_index} on {node}: world {seen['world_size']}, "
            f"global batch {seen['global_batch_size']} as planned; "
            f"optimizer {describe_optimizer(kwargs.get('optimizer'))}",
            flush=True,
        )


def describe_optimizer(optimizer: Any) -> str:
    """The optimizer that really steps, through DeepSpeed's and accelerate's wrappers.

    ZeRO offload, for one, swaps the Trainer's optimizer for DeepSpeedCPUAdam without a word; the
    innermost class (with bitsandbytes' paging and state bits) is what users need to see.
    """
    chain = []
    while optimizer is not None and len(chain) < 6:
        chain.append(type(optimizer).__name__)
        inner = getattr(optimizer, "optimizer", None)
        if inner is None:
            kind = type(optimizer)
            chain[-1] = f"{kind.__module__}.{kind.__name__}{bitsandbytes_details(optimizer)}"
        optimizer = inner
    return " -> ".join(chain) if chain else "none"


def bitsandbytes_details(optimizer: Any) -> str:
    bits = getattr(getattr(optimizer, "args", None), "optim_bits", None)
    if bits is None:
        return ""
    paged = "paged, " if getattr(optimizer, "is_paged", False) else ""
    return f" ({paged}{bits}-bit states)"


class MetricsLog(TrainerCallback):
    """Appends every log (loss, learning rate, eval metrics) to ``metrics.jsonl`` on rank 0."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")


class CheckpointCompletion(TrainerCallback):
    """Marks a checkpoint complete once every rank has finished writing it, then applies the
    retention (newest ``keep``, plus the best and the one this attempt resumed from)."""

    def __init__(self, state: Any, keep: int | None, resumed_from: Path | None):
        self.state, self.keep, self.resumed_from = state, keep, resumed_from

    def on_save(self, args, state, control, **kwargs):
        self.state.wait_for_everyone()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_manifest(folder, state.global_step, self.state.num_processes)
            protected = {Path(p) for p in (state.best_model_checkpoint, self.resumed_from) if p}
            rotate(Path(args.output_dir), self.keep, protected)
        self.state.wait_for_everyone()
