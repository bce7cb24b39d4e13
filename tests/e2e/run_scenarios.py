"""The runs that several e2e tests share (the fixtures: shared_runs.py), and reading their logs."""

from __future__ import annotations

import re
from pathlib import Path

HANG = ("ddp-2-ranks", 4)  # this scenario's attempt 4 hangs one rank instead of being killed
STEPS = 60
COMMON = ["sft-mistral", "--smoke", f"smoke.max_steps={STEPS}", "smoke.checkpoint_every=2"]
# name: (overrides, largest difference allowed between the killed run's weights and whole's)
# The ZeRO ones run on two ranks (each saves its own shards) and accumulate gradients over 2
# micro-batches (the recipe's optimizer: paged AdamW).
ZERO = [
    "distributed.strategy=deepspeed",
    "distributed.processes_per_node=2",
    "training.gradient_accumulation_steps=2",
]
SCENARIOS = {
    "ddp-1-rank": ([], 0.0),
    # One of its interruptions is a rank that hangs (SIGSTOP): the others give up after 30 s.
    # Chat SFT: conversations (generated), packed, with the loss on the assistant turns only.
    "ddp-2-ranks": (
        [
            "distributed.processes_per_node=2",
            "distributed.timeout_min=0.5",
            "data.loss_on=assistant",
        ],
        1e-6,
    ),
    "zero2-2-ranks": ([*ZERO, "distributed.zero_stage=2"], 0.0),
    "zero3-2-ranks": ([*ZERO, "distributed.zero_stage=3"], 0.0),
}


# Kills per scenario: ten on DDP; four (two of them mid-save) for ZeRO on two ranks, whose every
# launch starts two DeepSpeed ranks, to keep the suite's time in check.
KILLS = {"ddp-1-rank": 10, "ddp-2-ranks": 10, "zero2-2-ranks": 4, "zero3-2-ranks": 4}


def scenario_args(name: str) -> list[str]:
    return [*COMMON, *SCENARIOS[name][0]]


def rank_log_since(run_dir: Path, rank: int, offset: int) -> str:
    """What rank ``rank`` logged after ``offset`` bytes (each attempt appends to its log)."""
    with open(run_dir / "logs" / f"rank-{rank}.log", "rb") as stream:
        stream.seek(offset)
        return stream.read().decode("utf-8", errors="replace")


def data_preparation(log: str) -> tuple[str, str]:
    """How rank 0 last had its data (``prepared`` or ``cache hit``) and the cache key, from the
    one-line summary that also names rows and tokens."""
    found = re.findall(
        r"data: (prepared|cache hit) ((?:sft|mlm|classification|token_classification)-[0-9a-f]{16}) .*: "
        r"train [\d,]+ rows, [\d,]+ tokens, padding [\d.]+% at \d+",
        log,
    )
    assert found, log[-3000:]
    return found[-1]
