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
from launcher.contract import RunContract, RunLayout
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


class ProgressLines(TrainerCallback):
    """Progress where output is not a terminal (the launcher's log, SLURM's output file): one line
    every ``every_s`` seconds and when training ends, on rank 0, instead of a progress bar whose every
    redraw becomes a line in a file. Each says the step, the newest loss, steps/s and the time left.
    """

    def __init__(self, every_s: float = 30.0, clock=time.monotonic, out=print):  # type: ignore[no-untyped-def]
        self.every_s, self.clock, self.out = every_s, clock, out
        self.started: tuple[float, int] | None = None  # (time, step) at the start of training
        self.printed_at = 0.0
        self.loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = (self.clock(), state.global_step)
        self.printed_at = self.started[0]

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and isinstance(logs.get("loss"), int | float):
            self.loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock() - self.printed_at >= self.every_s and state.global_step < state.max_steps:
            self.say(state)

    def on_train_end(self, args, state, control, **kwargs):
        self.say(state)  # after the last log: its loss is the final one

    def say(self, state) -> None:  # type: ignore[no-untyped-def]
        if not state.is_world_process_zero or self.started is None:
            return
        self.printed_at = now = self.clock()
        self.out(progress_line(state.global_step, state.max_steps, self.loss, self.started, now))


def labelled_progress_bar() -> Any:
    """The Trainer's progress bar, labelled ``training`` (a terminal shows the launcher's other
    bars too: data preparation, saving)."""
    from transformers.trainer_callback import ProgressCallback

    class TrainingBar(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            super().on_train_begin(args, state, control, **kwargs)
            if self.training_bar is not None:
                self.training_bar.set_description("training")

    return TrainingBar()


def progress_line(
    step: int, max_steps: int, loss: float | None, started: tuple[float, int], now: float
) -> str:
    """``[launcher] step 120/300 (40%), loss 2.346, 3.21 steps/s, 56 s left``."""
    rate = (step - started[1]) / max(now - started[0], 1e-9)
    parts = [f"step {step}/{max_steps} ({100 * step // max(max_steps, 1)}%)"]
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    parts.append(f"{rate:.3g} steps/s")
    if rate > 0 and step < max_steps:
        parts.append(f"{round((max_steps - step) / rate)} s left")
    return f"[launcher] {', '.join(parts)}"


class MetricsLog(TrainerCallback):
    """Appends every log (loss, learning rate, eval metrics) to ``metrics.jsonl`` on rank 0, each
    training log with the throughput since the previous one; points TensorBoard into the run.

    Throughput is measured here rather than taken from the Trainer, whose ``train_*_per_second``
    average over the whole session: ``samples_per_second`` is optimizer steps x global batch and
    ``tokens_per_second`` the tokens of every rank (padding left out), each over the wall time on
    rank 0 since the previous training log. The clock restarts after an evaluation or a
    checkpoint save, so those pauses are not counted as training.
    """

    def __init__(self, path: Path, tensorboard_dir: Path | None = None):
        self.path = path
        # transformers 5 has no `logging_dir`: its TensorBoard callback reads this variable when
        # the Trainer is built, which is after this callback is made (ranks/entry.py).
        folder = tensorboard_dir or RunLayout(path.parent).tensorboard_dir
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(folder)
        self.global_batch = 0
        self.mark: tuple[float, int, int] | None = None  # (time, step, tokens) of the last log

    def on_train_begin(self, args, state, control, **kwargs):
        world = max(1, args.world_size)
        self.global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps
        self.global_batch *= world
        self.restart_clock(state)

    def on_evaluate(self, args, state, control, **kwargs):
        self.restart_clock(state)

    def on_save(self, args, state, control, **kwargs):
        self.restart_clock(state)

    def restart_clock(self, state) -> None:
        self.mark = (time.time(), state.global_step, state.num_input_tokens_seen or 0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.time()
        record = {"step": state.global_step, "epoch": state.epoch, "time": now, **logs}
        if "loss" in logs and self.mark is not None:
            record.update(self.throughput(now, state))
            record.update(peak_gpu_memory())
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")

    def throughput(self, now: float, state) -> dict[str, float]:
        """Samples and tokens per second since the last mark; the mark moves to now."""
        assert self.mark is not None
        then, step, tokens = self.mark
        seen = state.num_input_tokens_seen or 0
        self.mark = (now, state.global_step, seen)
        seconds, steps = now - then, state.global_step - step
        if seconds <= 0 or steps <= 0:
            return {}
        figures = {
            "interval_seconds": round(seconds, 6),
            "samples_per_second": round(steps * self.global_batch / seconds, 4),
        }
        if seen > tokens:
            figures["tokens_per_second"] = round((seen - tokens) / seconds, 2)
        return figures


def peak_gpu_memory() -> dict[str, int]:
    """Rank 0's peak CUDA memory so far (what ``benchmarks/gpu_sft.py`` reports); none on CPU."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"max_memory_allocated": torch.cuda.max_memory_allocated()}


class CheckpointCompletion(TrainerCallback):
    """Marks a checkpoint complete once every rank has finished writing it, then applies the
    retention (newest ``keep``, plus the best and the one this attempt resumed from).

    With node-local storage each node holds its own copy, so each node's first rank marks and
    prunes it; otherwise global rank 0 does, once for the shared folder."""

    def __init__(
        self,
        state: Any,
        keep: int | None,
        resumed_from: Path | None,
        on_each_node: bool = False,
        checksums: bool = True,
    ):
        self.state, self.keep, self.resumed_from = state, keep, resumed_from
        self.on_each_node, self.checksums = on_each_node, checksums

    def on_save(self, args, state, control, **kwargs):
        self.state.wait_for_everyone()
        writer = (
            self.state.is_local_main_process if self.on_each_node else state.is_world_process_zero
        )
        if writer:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if self.on_each_node:
                write_latest_tag(folder, state.global_step)
            write_manifest(folder, state.global_step, self.state.num_processes, self.checksums)
            protected = {Path(p) for p in (state.best_model_checkpoint, self.resumed_from) if p}
            rotate(Path(args.output_dir), self.keep, protected)
        self.state.wait_for_everyone()


def write_latest_tag(folder: Path, step: int) -> None:
    """DeepSpeed writes ``latest`` (the tag resume reads) on global rank 0 only, also with
    node-local storage: without it the other nodes could not resume from their own copy."""
    tag = f"global_step{step}"
    if (folder / tag).is_dir() and not (folder / "latest").exists():
        (folder / "latest").write_text(tag)


class KeepAdapterDtypes(TrainerCallback):
    """Trains a resumed run's adapters in the dtype the fresh run trained them in.

    TRL's SFTTrainer casts QLoRA adapters to bf16 (the QLoRA paper's choice) when it is built;
    resuming, the Trainer loads the checkpoint's adapter into freshly made fp32 adapters, so the
    rest of the run trained in another precision than it started in and did not end as the
    uninterrupted run did. Made once the trainer is built (the dtypes it chose), it puts them back
    when training begins, after the checkpoint is loaded."""

    def __init__(self, model: Any):
        self.dtypes = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        for name, parameter in model.named_parameters():
            wanted = self.dtypes.get(name)
            if wanted is not None and parameter.dtype != wanted:
                parameter.data = parameter.data.to(wanted)
